"""systemd-coredump entries from a ``journalctl -o json`` export, matched to core files.

The export has one JSON object per line. Values follow the Journal JSON Format (systemd
``docs/JOURNAL_EXPORT_FORMATS.md``): a string; a number array for a value that is binary or not
UTF-8 (one number 0..255 per byte); ``null`` for a value journalctl left out as too large; and
an array of those for a field that appears more than once in the entry. We also accept JSON
integers, which other tools write for numeric fields.

A malformed line, or a malformed value of a coredump entry, is a :class:`MetadataError` naming
``file:line``, collected in :attr:`JournalIndex.errors`; every other line is still read.

Entries are matched to a core file by ``COREDUMP_FILENAME``'s basename (the usual case for cores
systemd-coredump stored on disk), else by ``COREDUMP_PID`` and ``COREDUMP_TIMESTAMP`` (within
:data:`TIMESTAMP_TOLERANCE_US`) and, when both sides know it, the boot id.
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Mapping
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


# Bad lines listed one by one in ``JournalIndex.errors``; past this many they are counted.
MAX_ERRORS_LISTED = 1000
# Column values for "the entry does not say": pids and times are never negative (check_fields),
# and a key of 0 is never made (_key).
_NONE = -1
_NO_KEY = 0


def _key(text: str) -> int:
    """A stable 64-bit key for a file name or boot id. Stable across processes (the index is
    pickled to the parser workers; ``hash(str)`` is salted per process), and never
    :data:`_NO_KEY`. Equal keys are candidates only: a name's match is confirmed on its line."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True) or 1


def _stem(filename: str) -> str:
    return strip_compression_suffix(os.path.basename(filename))


@dataclass
class JournalIndex:
    """Coredump entries of one or more exports, indexed for matching to core files.

    Per entry the index keeps seven 64-bit numbers (56 bytes): a key of its file name, its pid,
    its time, a key of its boot id, and where its line is (export, line number, byte offset).
    A match reads the entry's line again, whole. An export of 200,000 entries once held every
    field of every entry (600 MB), then an object per entry (about 600 bytes each: 235 MB at
    200,000, over the 500 MB target of issue 10 at a million); lines that are not coredump
    entries cost nothing but their reading."""

    errors: list[MetadataError] = field(default_factory=list)
    lines: int = 0
    skipped_non_coredump: int = 0
    errors_not_listed: int = 0
    _exports: list[str] = field(default_factory=list)
    _name: array[int] = field(default_factory=lambda: array("q"))
    _pid: array[int] = field(default_factory=lambda: array("q"))
    _stamp: array[int] = field(default_factory=lambda: array("q"))
    _boot: array[int] = field(default_factory=lambda: array("q"))
    _export: array[int] = field(default_factory=lambda: array("q"))
    _lineno: array[int] = field(default_factory=lambda: array("q"))
    _offset: array[int] = field(default_factory=lambda: array("q"))
    # Row numbers sorted by name key (rows without a name left out), and by pid; equal keys
    # keep the order the entries were read in (a stable sort). Built by _sort.
    _by_name: array[int] = field(default_factory=lambda: array("q"))
    _by_pid: array[int] = field(default_factory=lambda: array("q"))

    @property
    def entries(self) -> list[JournalEntry]:
        """Every entry, whole (read again from the exports)."""
        return [e for e in map(self._whole, range(self.count)) if e is not None]

    @property
    def count(self) -> int:
        return len(self._name)

    def error(self, problem: MetadataError) -> None:
        if len(self.errors) < MAX_ERRORS_LISTED:
            self.errors.append(problem)
        else:
            self.errors_not_listed += 1

    def _add(self, entry: JournalEntry, export: int, lineno: int, offset: int) -> None:
        filename = entry.fields.get(FILENAME)
        boot = entry.fields.get(BOOT_ID)
        self._name.append(_key(_stem(filename)) if filename else _NO_KEY)
        self._pid.append(_or_none(entry.int_field(PID)))
        self._stamp.append(_or_none(entry.int_field(TIMESTAMP)))
        self._boot.append(_key(boot) if boot is not None else _NO_KEY)
        self._export.append(export)
        self._lineno.append(lineno)
        self._offset.append(offset)

    def _sort(self) -> None:
        rows = range(self.count)
        name, pid = self._name, self._pid
        self._by_name = array(
            "q", sorted((r for r in rows if name[r] != _NO_KEY), key=name.__getitem__)
        )
        self._by_pid = array("q", sorted((r for r in rows if pid[r] != _NONE), key=pid.__getitem__))

    def _rows(self, order: array[int], column: array[int], value: int) -> array[int]:
        """The rows whose ``column`` is ``value``, in the order they were read."""
        lo = bisect_left(order, value, key=column.__getitem__)
        hi = bisect_right(order, value, lo=lo, key=column.__getitem__)
        return order[lo:hi]

    def match(
        self, core_path: str | os.PathLike[str], hints: Mapping[str, str]
    ) -> JournalEntry | None:
        """The entry for ``core_path``; ``hints`` are fields already known from other sources
        (pid, timestamp, boot id) for matching when the file name does not."""
        stem = _stem(os.fspath(core_path))
        # The last entry read for the name wins; a key shared by another name is passed over.
        for row in reversed(self._rows(self._by_name, self._name, _key(stem))):
            entry = self._whole(row)
            filename = entry.fields.get(FILENAME) if entry is not None else None
            if filename and _stem(filename) == stem:
                return entry
        timed = self._by_times(hints)
        return self._whole(timed) if timed is not None else None

    def _by_times(self, hints: Mapping[str, str]) -> int | None:
        pid = hints.get(PID, "")
        if not pid.isdigit():
            return None
        candidates = list(self._rows(self._by_pid, self._pid, int(pid)))
        boot = hints.get(BOOT_ID)
        wanted = _key(boot) if boot else _NO_KEY
        if boot:
            candidates = [r for r in candidates if self._boot[r] in (_NO_KEY, wanted)]
        stamp = hints.get(TIMESTAMP, "")
        if stamp.isdigit():
            t = int(stamp)
            timed = [
                (abs(ts - t), i, r)
                for i, r in enumerate(candidates)
                if (ts := self._stamp[r]) != _NONE and abs(ts - t) <= TIMESTAMP_TOLERANCE_US
            ]
            return min(timed)[2] if timed else None
        # Without a time, pid and boot id identify a crash only if exactly one entry is known
        # to have both.
        exact = [r for r in candidates if boot and self._boot[r] == wanted]
        return exact[0] if len(exact) == 1 else None

    def _whole(self, row: int) -> JournalEntry | None:
        """The entry of ``row`` with all its fields, its line read and checked again (None if
        the export changed under it since)."""
        path = self._exports[self._export[row]]
        try:
            with open_regular(path) as fh:
                fh.seek(self._offset[row])
                line = fh.readline(MAX_LINE_BYTES + 1)
            obj = _json(line)
        except (OSError, ValueError, RecursionError):
            return None
        if not isinstance(obj, dict):
            return None
        whole, _errors = _entry_from_object(obj, f"{path}:{self._lineno[row]}")
        return whole


def _or_none(value: int | None) -> int:
    return _NONE if value is None else value


def _entry_from_object(
    obj: dict[str, Any], origin: str
) -> tuple[JournalEntry | None, list[MetadataError]]:
    raw: dict[str, str] = {}
    errors: list[MetadataError] = []
    notes: list[str] = []
    for name, value in obj.items():
        if type(value) is str:  # nearly every value: one string
            raw[name] = value
            continue
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


# One decoder for every line (json.loads with a keyword builds a new one per call).
_DECODER = json.JSONDecoder(parse_int=json_int)


def _json(line: bytes) -> Any:
    """``json.loads(line, parse_int=json_int)``, with the stdlib's messages and its handling of
    bytes (UTF-8, -16 or -32, a UTF-8 BOM)."""
    return _DECODER.decode(line.decode(json.detect_encoding(line), "surrogatepass"))


def _lines(path: Path, limit: int) -> Iterator[tuple[int, int, bytes | None]]:
    """(line number, byte offset, line) triples; None for a line longer than ``limit`` bytes,
    whose rest is skipped without holding it in memory."""
    with open_regular(path) as fh:  # a FIFO would block forever
        lineno = 0
        offset = 0
        while True:
            line = fh.readline(limit + 1)
            if not line:
                return
            lineno += 1
            at = offset
            offset += len(line)
            if len(line) > limit and not line.endswith(b"\n"):
                while (rest := fh.readline(limit)) and not rest.endswith(b"\n"):
                    offset += len(rest)
                offset += len(rest)
                yield lineno, at, None
                continue
            yield lineno, at, line


def _object_skimmer() -> Callable[[bytes], bool]:
    """A check that a line is one JSON object, made without building it: msgspec's decoder
    into a Struct with no fields skips every member in C (about a tenth of the stdlib's time
    on a journal line). False means "not sure": the stdlib then reads the line and says why."""
    import msgspec

    class _AnyObject(msgspec.Struct):
        pass

    decode = msgspec.json.Decoder(_AnyObject).decode

    def skims(line: bytes) -> bool:
        try:
            decode(line)
        except (msgspec.DecodeError, RecursionError):
            return False
        return True

    return skims


def load_journal(
    path: str | os.PathLike[str],
    index: JournalIndex | None = None,
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> JournalIndex:
    """Read a ``journalctl -o json`` export into ``index`` (a new one by default). Lines
    longer than ``max_line_bytes`` are reported and skipped.

    A line that names no ``COREDUMP_`` field (most of a busy host's journal) is only checked to
    be one JSON object, its values not looked at; a field name spelled with escapes
    (``\\u0043OREDUMP_PID``), which journalctl never writes, is not seen as one.

    Raises :class:`MetadataError` only if the file cannot be read at all; bad lines are
    collected in ``index.errors`` and the rest of the file is still read.
    """
    index = index if index is not None else JournalIndex()
    p = Path(path)
    where = str(p)
    skims = _object_skimmer()
    export = len(index._exports)
    index._exports.append(where)
    try:
        for lineno, offset, line in _lines(p, max_line_bytes):
            index.lines += 1
            if line is None:
                index.error(
                    metadata_error(where, lineno, f"line longer than {max_line_bytes} bytes")
                )
                continue
            if b'"COREDUMP_' not in line and skims(line):
                index.skipped_non_coredump += 1
                continue
            if not line.strip():
                continue
            try:
                obj = _json(line)
            except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, json_int's
                index.error(metadata_error(where, lineno, f"not JSON: {exc}"))
                continue
            except RecursionError:
                index.error(metadata_error(where, lineno, "JSON nested too deeply"))
                continue
            if not isinstance(obj, dict):
                index.error(
                    metadata_error(
                        where, lineno, f"expected a JSON object, got {type(obj).__name__}"
                    )
                )
                continue
            entry, errors = _entry_from_object(obj, f"{where}:{lineno}")
            for problem in errors:
                index.error(problem)
            if entry is None:
                index.skipped_non_coredump += 1
            else:
                index._add(entry, export, lineno, offset)
    except OSError as exc:
        raise metadata_error(
            where, None, f"cannot read journal export: {exc.strerror or exc}"
        ) from exc
    finally:
        index._sort()
    return index
