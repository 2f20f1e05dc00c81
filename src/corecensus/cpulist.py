"""Linux CPU lists (``0-3,8,10-11``), as ``Cpus_allowed_list`` in ``/proc/<pid>/status`` and
the ``cpulist`` files under ``/sys/devices/system/cpu`` write them (the kernel's
``bitmap_print_to_pagebuf`` with ``list=true``, lib/bitmap-str.c).

A crash's allowed CPUs are the set the null law of "which CPU" is over: a process pinned to one
CPU says nothing about that CPU, and one confined to a 4-CPU cpuset is uniform over 4 CPUs, not
over the host's 64 (issue 9).
"""

from __future__ import annotations

from corecensus.errors import MetadataError

__all__ = ["canonical_cpu_list", "cpu_list_size", "parse_cpu_list"]

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


def canonical_cpu_list(text: str) -> str:
    """The kernel's own spelling of a CPU list (ranges merged, ascending)."""
    cpus = parse_cpu_list(text)
    parts: list[str] = []
    start = prev = cpus[0]
    for c in (*cpus[1:], -2):
        if c == prev + 1:
            prev = c
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = c
    return ",".join(parts)


def cpu_list_size(text: str) -> int:
    """How many CPUs a list names."""
    return len(parse_cpu_list(text))
