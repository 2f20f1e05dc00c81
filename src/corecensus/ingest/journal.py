"""systemd-coredump entries from a ``journalctl -o json`` export, matched to core files.

The export has one JSON object per line. Values follow the Journal JSON Format (systemd
``docs/JOURNAL_EXPORT_FORMATS.md``): a string; a number array for a value that is binary or not
UTF-8 (one number 0..255 per byte); ``null`` for a value journalctl left out as too large; and
an array of those for a field that appears more than once in the entry. We also accept JSON
integers, which other tools write for numeric fields.

A malformed line or value is a :class:`MetadataError` naming ``file:line``, collected in
:attr:`JournalIndex.errors`; every other line is still read.

Entries are matched to a core file by ``COREDUMP_FILENAME``'s basename (the usual case for cores
systemd-coredump stored on disk), else by ``COREDUMP_PID`` and ``COREDUMP_TIMESTAMP`` (within
:data:`TIMESTAMP_TOLERANCE_US`) and, when both sides know it, the boot id.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corecensus.errors import MetadataError
from corecensus.ingest.fields import (
    BOOT_ID,
    FILENAME,
    HOSTNAME,
    PID,
    TIMESTAMP,
    check_fields,
    metadata_error,
)
from corecensus.outside import json_int, open_regular

__all__ = [
    "MAX_ERRORS_LISTED",
    "MAX_LINE_BYTES",
    "TIMESTAMP_TOLERANCE_US",
    "JournalEntry",
    "JournalIndex",
    "decode_journal_value",
    "load_journal",
    "strip_compression_suffix",
]

# journalctl replaces values over 4 KiB by null unless --all; a line this long is a core stored
# in the journal and exported with --all, which we do not want in memory.
MAX_LINE_BYTES = 16 * 1024 * 1024
# systemd-coredump's COREDUMP_TIMESTAMP is the kernel's %t (whole seconds) times 10^6, while
# other sources may carry real microseconds: match within one second.
TIMESTAMP_TOLERANCE_US = 1_000_000
COMPRESSION_SUFFIXES = (".zst", ".lz4", ".xz", ".gz", ".bz2")


class _BadValue(ValueError):
    pass


def _decode_bytes(values: list[Any]) -> str:
    if not all(type(b) is int and 0 <= b <= 255 for b in values):
        raise _BadValue("number array with an element that is not a byte (0..255)")
    # Binary values keep their bytes visible (\xNN) rather than failing or guessing.
    return bytes(values).decode("utf-8", "backslashreplace")


def _decode_single(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if type(value) is int:
        return str(value)
    if isinstance(value, list):
        return _decode_bytes(value)
    raise _BadValue(f"unexpected JSON {type(value).__name__}")


def decode_journal_value(value: Any) -> tuple[str | None, int]:
    """Decode one field's JSON value: (the text or None, number of values in the entry).

    A field with several values keeps the first that is not null; the count is returned so the
    caller can say that others were dropped.
    """
    if isinstance(value, list) and value and all(type(v) is int for v in value):
        return _decode_bytes(value), 1
    if isinstance(value, list):
        if not value:
            return "", 1  # an empty number array: an empty binary value
        decoded = [_decode_single(v) for v in value]
        present = [d for d in decoded if d is not None]
        return (present[0] if present else None), len(value)
    return _decode_single(value), 1


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One systemd-coredump entry: its fields and where it was read (``file:line``)."""

    origin: str
    fields: Mapping[str, str]
    notes: tuple[str, ...] = ()
    # Values of this entry that were dropped as malformed: they are the record's problems as
    # well as the batch's journal errors (a sidecar's are; a journal's once were not).
    errors: tuple[MetadataError, ...] = ()

    def int_field(self, name: str) -> int | None:
        value = self.fields.get(name)
        return int(value) if value is not None and value.isdigit() else None


def strip_compression_suffix(name: str) -> str:
    for suffix in COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


class _LightEntry:
    """What an index keeps of an entry read from an export: what it is matched by (pid, time,
    boot id; its file name is the index's key) and where its line is, read again on a match."""

    __slots__ = ("boot", "lineno", "offset", "path", "pid", "stamp")

    def __init__(self, entry: JournalEntry, path: str, lineno: int, offset: int) -> None:
        self.path = path  # one string object per export, shared
        self.lineno = lineno
        self.offset = offset
        self.pid = entry.int_field(PID)
        self.stamp = entry.int_field(TIMESTAMP)
        self.boot = entry.fields.get(BOOT_ID)

    @property
    def fields(self) -> Mapping[str, str]:
        return {BOOT_ID: self.boot} if self.boot is not None else {}

    def int_field(self, name: str) -> int | None:
        return self.pid if name == PID else self.stamp if name == TIMESTAMP else None


Kept = JournalEntry | _LightEntry
# Bad lines listed one by one in ``JournalIndex.errors``; past this many they are counted.
MAX_ERRORS_LISTED = 1000


@dataclass
class JournalIndex:
    """Coredump entries of one or more exports, indexed for matching to core files.

    An entry read from an export is kept in a light form, the four fields it is matched by and
    where its line is, and read whole again when it matches a core: a 144 MB export of 200,000
    entries once held every field of every entry (600 MB), where a batch needs a few."""

    errors: list[MetadataError] = field(default_factory=list)
    lines: int = 0
    skipped_non_coredump: int = 0
    errors_not_listed: int = 0
    _kept: list[Kept] = field(default_factory=list)
    _by_name: dict[str, list[Kept]] = field(default_factory=lambda: defaultdict(list))
    _by_pid: dict[int, list[Kept]] = field(default_factory=lambda: defaultdict(list))

    @property
    def entries(self) -> list[JournalEntry]:
        """Every entry, whole (read again from the exports)."""
        return [e for e in map(_whole, self._kept) if e is not None]

    @property
    def count(self) -> int:
        return len(self._kept)

    def error(self, problem: MetadataError) -> None:
        if len(self.errors) < MAX_ERRORS_LISTED:
            self.errors.append(problem)
        else:
            self.errors_not_listed += 1

    def add(self, entry: JournalEntry) -> None:
        self._add(entry, entry)

    def _add(self, entry: JournalEntry, kept: Kept) -> None:
        self._kept.append(kept)
        filename = entry.fields.get(FILENAME)
        if filename:
            self._by_name[strip_compression_suffix(os.path.basename(filename))].append(kept)
        pid = entry.int_field(PID)
        if pid is not None:
            self._by_pid[pid].append(kept)

    def match(
        self, core_path: str | os.PathLike[str], hints: Mapping[str, str]
    ) -> JournalEntry | None:
        """The entry for ``core_path``; ``hints`` are fields already known from other sources
        (pid, timestamp, boot id) for matching when the file name does not."""
        stem = strip_compression_suffix(os.path.basename(os.fspath(core_path)))
        return _whole(self._find(stem, hints))

    def _find(self, stem: str, hints: Mapping[str, str]) -> Kept | None:
        by_name = self._by_name.get(stem)
        if by_name:
            return by_name[-1]
        pid = hints.get(PID, "")
        if not pid.isdigit():
            return None
        candidates = self._by_pid.get(int(pid), [])
        boot = hints.get(BOOT_ID)
        if boot:
            candidates = [e for e in candidates if e.fields.get(BOOT_ID) in (None, boot)]
        stamp = hints.get(TIMESTAMP, "")
        if stamp.isdigit():
            t = int(stamp)
            timed = [
                (abs(ts - t), i, e)
                for i, e in enumerate(candidates)
                if (ts := e.int_field(TIMESTAMP)) is not None
                and abs(ts - t) <= TIMESTAMP_TOLERANCE_US
            ]
            return min(timed)[2] if timed else None
        # Without a time, pid and boot id identify a crash only if exactly one entry is known
        # to have both.
        exact = [e for e in candidates if boot and e.fields.get(BOOT_ID) == boot]
        return exact[0] if len(exact) == 1 else None


def _entry_from_object(
    obj: dict[str, Any], origin: str
) -> tuple[JournalEntry | None, list[MetadataError]]:
    raw: dict[str, str] = {}
    errors: list[MetadataError] = []
    notes: list[str] = []
    for name, value in obj.items():
        try:
            text, count = decode_journal_value(value)
        except _BadValue as exc:
            errors.append(metadata_error(origin, None, f"{name}: {exc}"))
            continue
        if count > 1:
            notes.append(f"{origin}: {name} has {count} values; kept the first")
        if text is not None:
            raw[name] = text
    if not any(k.startswith("COREDUMP_") for k in raw):
        return None, errors
    # The coredump entry is logged by systemd-coredump itself, so the journal's trusted
    # _BOOT_ID/_HOSTNAME are those of the crash; use them when the COREDUMP_ field is absent.
    if BOOT_ID not in raw and "_BOOT_ID" in raw:
        raw[BOOT_ID] = raw["_BOOT_ID"]
    if HOSTNAME not in raw and "_HOSTNAME" in raw:
        raw[HOSTNAME] = raw["_HOSTNAME"]
    checked = check_fields(raw, origin)
    errors.extend(checked.errors)
    entry = JournalEntry(
        origin=origin,
        fields=checked.fields,
        notes=(*notes, *checked.notes),
        errors=tuple(errors),
    )
    return entry, errors


def _whole(entry: Kept | None) -> JournalEntry | None:
    """The entry with all its fields: a light one's line read and checked again (None if the
    export changed under it since)."""
    if entry is None or isinstance(entry, JournalEntry):
        return entry
    try:
        with open_regular(entry.path) as fh:
            fh.seek(entry.offset)
            line = fh.readline(MAX_LINE_BYTES + 1)
        obj = json.loads(line, parse_int=json_int)
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    whole, _errors = _entry_from_object(obj, f"{entry.path}:{entry.lineno}")
    return whole


def _lines(path: Path, limit: int) -> Iterator[tuple[int, int, bytes | None]]:
    """(line number, byte offset, line) triples; None for a line longer than ``limit`` bytes,
    whose rest is skipped without holding it in memory."""
    with open_regular(path) as fh:  # a FIFO would block forever
        lineno = 0
        while True:
            offset = fh.tell()
            line = fh.readline(limit + 1)
            if not line:
                return
            lineno += 1
            if len(line) > limit and not line.endswith(b"\n"):
                while (rest := fh.readline(limit)) and not rest.endswith(b"\n"):
                    pass
                yield lineno, offset, None
                continue
            yield lineno, offset, line


def load_journal(
    path: str | os.PathLike[str],
    index: JournalIndex | None = None,
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> JournalIndex:
    """Read a ``journalctl -o json`` export into ``index`` (a new one by default). Lines
    longer than ``max_line_bytes`` are reported and skipped.

    Raises :class:`MetadataError` only if the file cannot be read at all; bad lines are
    collected in ``index.errors`` and the rest of the file is still read.
    """
    index = index if index is not None else JournalIndex()
    p = Path(path)
    try:
        where = str(p)
        for lineno, offset, line in _lines(p, max_line_bytes):
            index.lines += 1
            origin = f"{p}:{lineno}"
            if line is None:
                index.error(
                    metadata_error(str(p), lineno, f"line longer than {max_line_bytes} bytes")
                )
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line, parse_int=json_int)
            except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, json_int's
                index.error(metadata_error(str(p), lineno, f"not JSON: {exc}"))
                continue
            except RecursionError:
                index.error(metadata_error(str(p), lineno, "JSON nested too deeply"))
                continue
            if not isinstance(obj, dict):
                index.error(
                    metadata_error(
                        str(p), lineno, f"expected a JSON object, got {type(obj).__name__}"
                    )
                )
                continue
            entry, errors = _entry_from_object(obj, origin)
            for problem in errors:
                index.error(problem)
            if entry is None:
                index.skipped_non_coredump += 1
            else:
                index._add(entry, _LightEntry(entry, where, lineno, offset))
    except OSError as exc:
        raise metadata_error(
            str(p), None, f"cannot read journal export: {exc.strerror or exc}"
        ) from exc
    return index
