"""Linux CPU lists (``0-3,8,10-11``), as ``Cpus_allowed_list`` in ``/proc/<pid>/status`` and
the ``cpulist`` files under ``/sys/devices/system/cpu`` write them (the kernel's
``bitmap_print_to_pagebuf`` with ``list=true``, lib/bitmap-str.c).

A crash's allowed CPUs are the set the null law of "which CPU" is over: a process pinned to one
CPU says nothing about that CPU, and one confined to a 4-CPU cpuset is uniform over 4 CPUs, not
over the host's 64 (issue 9).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from corecensus.errors import MetadataError

__all__ = [
    "MAX_CPU",
    "CpuListError",
    "canonical_cpu_list",
    "cpu_list_size",
    "format_cpu_list",
    "parse_cpu_list",
]

# A host with more logical CPUs than this does not exist (the kernel's NR_CPUS tops out at 8192).
MAX_CPU = 1 << 16
# One region: N, N-M, or either with the kernel's stride suffix :USED/GROUP ("0-15:2/4" is
# 0,1,4,5,8,9,12,13). ASCII digits only (str.isdigit and \d also take "٣" and "³").
_REGION = re.compile(r"([0-9]+)(?:-([0-9]+))?(?::([0-9]+)/([0-9]+))?", re.ASCII)
# A list whose regions name more CPUs than this in total is refused before it is expanded: a
# kernel list names each CPU once (at most MAX_CPU), and "0-65535" repeated a hundred thousand
# times must not cost minutes.
_MAX_NAMED = 16 * MAX_CPU


class CpuListError(MetadataError):
    """A CPU list is malformed (from a sidecar, a crash-facts file, sysfs or ``--cpus``)."""


def parse_cpu_list(text: str, *, empty_ok: bool = False) -> tuple[int, ...]:
    """The sorted CPUs of a list such as ``0-3,8`` (:class:`CpuListError` when malformed).

    The syntax is the kernel's (``bitmap_parselist`` in lib/bitmap-str.c): comma-separated
    regions ``N``, ``N-M`` (M >= N), each optionally ``:USED/GROUP`` (of every GROUP CPUs of the
    range, the first USED). Stricter than the kernel where it is lenient by accident: regions
    are separated by one comma with optional blanks around it (not by blanks alone, not by
    ",,"); every CPU is below :data:`MAX_CPU`; ``N`` for "the last CPU" is refused (a list read
    here is not tied to one host's CPU count). Blanks and a newline at either end are ignored.
    An empty list is an error unless ``empty_ok`` (sysfs writes an empty ``offline``).
    """
    body = text.strip()
    if not body:
        if empty_ok:
            return ()
        raise CpuListError("empty CPU list")
    regions: list[tuple[int, int, int, int]] = []
    named = 0
    for part in body.split(","):
        piece = part.strip()
        m = _REGION.fullmatch(piece)
        if m is None:
            raise CpuListError(
                f"bad CPU list {_shown(text)}: {_shown(piece)} is not N, N-M or N-M:USED/GROUP"
            )
        if any(len(g) > 6 for g in m.groups() if g is not None):
            # Before int(): a 5,000-digit number is slow to convert (and an error past 4,300).
            raise CpuListError(f"bad CPU list {_shown(text)}: {_shown(piece)} is out of range")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        used = int(m.group(3)) if m.group(3) is not None else 1
        group = int(m.group(4)) if m.group(4) is not None else 1
        if hi < lo:
            raise CpuListError(f"bad CPU list {_shown(text)}: range {piece!r} runs backwards")
        if hi >= MAX_CPU:
            raise CpuListError(
                f"bad CPU list {_shown(text)}: CPU {hi} is out of range (at most {MAX_CPU - 1})"
            )
        if not 1 <= used <= group:
            raise CpuListError(
                f"bad CPU list {_shown(text)}: stride {used}/{group} needs 1 <= USED <= GROUP"
            )
        named += hi - lo + 1
        if named > _MAX_NAMED:
            raise CpuListError(f"bad CPU list: its ranges name over {_MAX_NAMED} CPUs")
        regions.append((lo, hi, used, group))
    cpus: set[int] = set()
    for lo, hi, used, group in regions:
        if group == 1:
            cpus.update(range(lo, hi + 1))
        else:
            for start in range(lo, hi + 1, group):
                cpus.update(range(start, min(start + used, hi + 1)))
    return tuple(sorted(cpus))


def _shown(text: str) -> str:
    """``text`` quoted for a message, cut to a readable length."""
    return repr(text) if len(text) <= 80 else repr(text[:77]) + "..."


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
