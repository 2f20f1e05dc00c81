"""Crash metadata field names and the checks every source applies to their values.

Names are systemd-coredump's journal fields (``COREDUMP_*``, see systemd.journal-fields(7) and
``src/coredump/coredump.c``) plus corecensus's own ``CORECENSUS_*`` (DESIGN.md, "Data
contracts"). Values are strings. Unknown fields are kept; a known field with a malformed value is
dropped and reported, so one bad value never costs the others.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from corecensus.cpulist import canonical_cpu_list
from corecensus.errors import MetadataError
from corecensus.outside import is_valid_text, valid_text

__all__ = [
    "BOOT_ID",
    "CMDLINE",
    "COMM",
    "CPU",
    "CPUS_ALLOWED",
    "CPU_CORE",
    "CPU_MODEL",
    "DROPPED_FIELDS",
    "EXE",
    "FILENAME",
    "GID",
    "HOSTNAME",
    "HOST_CPUS",
    "KERNEL",
    "MAX_VALUE_CHARS",
    "MICROCODE",
    "PID",
    "PROC_STATUS",
    "RLIMIT",
    "SERVICE",
    "SIGNAL",
    "TIMESTAMP",
    "UID",
    "VERSION",
    "CheckedFields",
    "check_fields",
    "cpus_allowed_of",
    "fields_ok",
    "metadata_error",
]

HOSTNAME = "COREDUMP_HOSTNAME"
TIMESTAMP = "COREDUMP_TIMESTAMP"  # microseconds since the Unix epoch
EXE = "COREDUMP_EXE"
COMM = "COREDUMP_COMM"
PID = "COREDUMP_PID"
UID = "COREDUMP_UID"
GID = "COREDUMP_GID"
SIGNAL = "COREDUMP_SIGNAL"
RLIMIT = "COREDUMP_RLIMIT"
BOOT_ID = "COREDUMP_BOOT_ID"
CMDLINE = "COREDUMP_CMDLINE"
FILENAME = "COREDUMP_FILENAME"
CPU = "CORECENSUS_CPU"
CPU_MODEL = "CORECENSUS_CPU_MODEL"
MICROCODE = "CORECENSUS_MICROCODE"
KERNEL = "CORECENSUS_KERNEL"
SERVICE = "CORECENSUS_SERVICE"
VERSION = "CORECENSUS_VERSION"
# The facts the per-CPU test needs (DESIGN.md, "Data contracts"; issue 9): online logical CPUs,
# the physical core of CORECENSUS_CPU, and the crashing process's Cpus_allowed_list.
HOST_CPUS = "CORECENSUS_HOST_CPUS"
CPU_CORE = "CORECENSUS_CPU_CORE"
CPUS_ALLOWED = "CORECENSUS_CPUS_ALLOWED"
# systemd-coredump keeps /proc/<pid>/status of the crashed process here (coredump.c,
# "COREDUMP_PROC_STATUS="); its "Cpus_allowed_list:" line is the allowed set.
PROC_STATUS = "COREDUMP_PROC_STATUS"

# Never kept, whatever the source: COREDUMP is the core itself when systemd-coredump stores it
# in the journal (Storage=journal), and COREDUMP_ENVIRON is the crashed process's environment,
# which routinely holds secrets (DESIGN.md, "Privacy").
DROPPED_FIELDS = frozenset({"COREDUMP", "COREDUMP_ENVIRON"})
# Longer values (COREDUMP_PROC_MAPS of a huge process, ...) are dropped with a note: the store
# keeps metadata of every crash and must not grow with one process's size.
MAX_VALUE_CHARS = 64 * 1024

_UNSIGNED = re.compile(r"[0-9]{1,20}")
_SIGNED = re.compile(r"-?[0-9]{1,20}")
_BOOT_ID = re.compile(r"[0-9a-fA-F]{32}")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_UNSIGNED_FIELDS = frozenset({PID, UID, GID, SIGNAL, TIMESTAMP, CPU, HOST_CPUS, CPU_CORE})
# Largest value each numeric field can truly have, so that an absurd one is an error with a note
# instead of a silent null in the store, or a CPU 2147483647 that makes a host look like it has
# two billion CPUs (issue 10). CPUs: no architecture's NR_CPUS goes past 8192 (x86 MAXSMP,
# arch/x86/Kconfig NR_CPUS_RANGE_END). Time: microseconds up to the year 2200.
_MAX_VALUE: dict[str, int] = {
    CPU: 8191,
    CPU_CORE: 8191,
    HOST_CPUS: 8192,
    TIMESTAMP: 7_258_118_400 * 1_000_000,
    PID: 2**22,  # PID_MAX_LIMIT on 64-bit (include/linux/threads.h)
    SIGNAL: 64,  # _NSIG
}


def metadata_error(origin: str, line: int | None, message: str) -> MetadataError:
    """A :class:`MetadataError` whose text starts with ``file:line:`` (or ``file:``)."""
    where = f"{origin}:{line}" if line is not None else origin
    return MetadataError(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class CheckedFields:
    fields: dict[str, str]
    errors: list[MetadataError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# The fields _check_value has a rule for; any other value is kept as it is.
_RULED_FIELDS = _UNSIGNED_FIELDS | {RLIMIT, CPUS_ALLOWED, BOOT_ID}


def _check_value(name: str, value: str) -> str | None:
    """The value to keep (normalized), or None if it is malformed."""
    if name in _UNSIGNED_FIELDS:
        value = value.strip()
        if not _UNSIGNED.fullmatch(value):
            return None
        top = _MAX_VALUE.get(name)
        return value if top is None or int(value) <= top else None
    if name == RLIMIT:
        value = value.strip()
        return value if _SIGNED.fullmatch(value) else None
    if name == CPUS_ALLOWED:
        try:
            return canonical_cpu_list(value)
        except MetadataError:
            return None
    if name == BOOT_ID:
        compact = value.strip().replace("-", "")
        return compact.lower() if _BOOT_ID.fullmatch(compact) else None
    return value


@lru_cache(maxsize=4096)
def _good_name(name: str) -> bool:
    # Cached: a journal export repeats a few dozen names over millions of lines.
    return _FIELD_NAME.fullmatch(name) is not None


def check_fields(
    raw: Mapping[str, str],
    origin: str,
    line_of: Mapping[str, int] | None = None,
) -> CheckedFields:
    """Validate ``raw`` (already strings): drop malformed known fields (each an error), dropped
    and oversized fields (each a note); keep the rest, unknown fields included."""
    out = CheckedFields(fields={})
    for name, given in raw.items():
        line = line_of.get(name) if line_of else None
        value = given
        if not _good_name(name):
            out.errors.append(metadata_error(origin, line, f"bad field name {name!r}"))
            continue
        if name in DROPPED_FIELDS:
            out.notes.append(f"{origin}: {name} not kept (privacy/size)")
            continue
        if len(value) > MAX_VALUE_CHARS:
            out.notes.append(f"{origin}: {name} not kept ({len(value)} chars)")
            continue
        if not value.isascii() and not is_valid_text(value):
            # A lone surrogate ("x\ud800y" in JSON) cannot be stored as UTF-8 and once cost
            # a whole ingest batch (issue 10); keep the value, with the code point escaped.
            value = valid_text(value)
            out.notes.append(f"{origin}: {name} was not valid text; kept as {value!r}")
        checked = _check_value(name, value) if name in _RULED_FIELDS else value
        if checked is None:
            top = _MAX_VALUE.get(name)
            why = f"{name}: malformed value {value!r}"
            if top is not None and _UNSIGNED.fullmatch(value.strip()):
                why += f" (out of range: 0 to {top})"
            out.errors.append(metadata_error(origin, line, why))
            continue
        out.fields[name] = checked
    return out


def fields_ok(raw: Mapping[str, str]) -> bool:
    """Whether :func:`check_fields` finds no error in ``raw``, without making its result: the
    collector's typed pass asks this of every record (the notes and the kept values it does
    not need took two thirds of the time)."""
    for name, given in raw.items():
        if not _good_name(name):
            return False
        if name not in _RULED_FIELDS or name in DROPPED_FIELDS or len(given) > MAX_VALUE_CHARS:
            continue
        value = given if given.isascii() or is_valid_text(given) else valid_text(given)
        if _check_value(name, value) is None:
            return False
    return True


def cpus_allowed_of(fields: Mapping[str, str]) -> str | None:
    """The crashing process's allowed CPUs (a canonical CPU list): ``CORECENSUS_CPUS_ALLOWED``,
    else the ``Cpus_allowed_list:`` line of systemd-coredump's ``COREDUMP_PROC_STATUS``
    (proc(5)); ``None`` when neither says or the list is malformed."""
    given = fields.get(CPUS_ALLOWED)
    if given:
        return given
    for line in fields.get(PROC_STATUS, "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Cpus_allowed_list":
            try:
                return canonical_cpu_list(value)
            except MetadataError:
                return None
    return None
