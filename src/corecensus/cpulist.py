"""Linux CPU lists (``0-3,8,10-11``), as ``Cpus_allowed_list`` in ``/proc/<pid>/status`` and
the ``cpulist`` files under ``/sys/devices/system/cpu`` write them (the kernel's
``bitmap_print_to_pagebuf`` with ``list=true``, lib/bitmap-str.c).

A crash's allowed CPUs are the set the null law of "which CPU" is over: a process pinned to one
CPU says nothing about that CPU, and one confined to a 4-CPU cpuset is uniform over 4 CPUs, not
over the host's 64 (issue 9).
"""

from __future__ import annotations

from collections.abc import Iterable

from corecensus.errors import MetadataError

__all__ = ["canonical_cpu_list", "cpu_list_size", "format_cpu_list", "parse_cpu_list"]

# A host with more logical CPUs than this does not exist (the kernel's NR_CPUS tops out at 8192).
MAX_CPU = 1 << 16


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """The sorted CPUs of a list such as ``0-3,8`` (``MetadataError`` when malformed)."""
    cpus: set[int] = set()
    body = text.strip()
    if not body:
        raise MetadataError("empty CPU list")
    for part in body.split(","):
        piece = part.strip()
        lo_text, sep, hi_text = piece.partition("-")
        try:
            lo = int(lo_text)
            hi = int(hi_text) if sep else lo
        except ValueError:
            raise MetadataError(f"bad CPU list {text!r}") from None
        if lo < 0 or hi < lo or hi >= MAX_CPU:
            raise MetadataError(f"bad CPU range {piece!r} in CPU list {text!r}")
        cpus.update(range(lo, hi + 1))
    return tuple(sorted(cpus))


def format_cpu_list(cpus: Iterable[int]) -> str:
    """Inverse of :func:`parse_cpu_list`: ``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def canonical_cpu_list(text: str) -> str:
    """The kernel's own spelling of a CPU list (ranges merged, ascending)."""
    return format_cpu_list(parse_cpu_list(text))


def cpu_list_size(text: str) -> int:
    """How many CPUs a list names."""
    return len(parse_cpu_list(text))
