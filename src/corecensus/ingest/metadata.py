"""Crash metadata for a core file, from every place systemd-coredump or corecensus leaves it.

Sources, in order of precedence (a field is taken from the first source that has it):

1. **sidecar** ``<core file>.json``: one JSON object of string values, written by corecensus
   (or an operator) with full knowledge, so it wins.
2. **xattrs** on the core file, which systemd-coredump attaches when it writes a core
   (``user.coredump.*``, see :data:`XATTR_FIELDS`). They travel with the very file, so they
   cannot be matched to the wrong crash.
3. **journal**: the systemd-coredump entry from a ``journalctl -o json`` export
   (:mod:`corecensus.ingest.journal`), matched by file name or by pid and time. It has the most
   fields (``COREDUMP_CMDLINE``, ``COREDUMP_UNIT``, ...) but the match is inferred.
4. **filename**: systemd-coredump's naming convention
   ``core.<comm>.<uid>.<boot id>.<pid>.<timestamp>[.zst|.lz4|.xz]``, a last resort.

Unknown fields are kept; a missing field is unknown. A malformed source or value is a
:class:`MetadataError` naming ``file:line``; :func:`collect_metadata` records it and goes on
with the other sources, so one bad sidecar never stops an ingest.
"""

from __future__ import annotations

import enum
import errno
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corecensus.errors import MetadataError
from corecensus.ingest.fields import (
    BOOT_ID,
    COMM,
    EXE,
    HOSTNAME,
    PID,
    SIGNAL,
    TIMESTAMP,
    UID,
    check_fields,
    metadata_error,
)
from corecensus.ingest.journal import JournalIndex
from corecensus.outside import json_int, open_regular, strip_bom

__all__ = [
    "MAX_SIDECAR_BYTES",
    "PRECEDENCE",
    "XATTR_FIELDS",
    "CrashMetadata",
    "Source",
    "SourceFields",
    "collect_metadata",
    "merge_sources",
    "parse_core_filename",
    "read_sidecar",
    "read_xattrs",
    "sidecar_path",
]

MAX_SIDECAR_BYTES = 1024 * 1024


class Source(enum.StrEnum):
    SIDECAR = "sidecar"
    XATTR = "xattr"
    JOURNAL = "journal"
    FILENAME = "filename"


PRECEDENCE: tuple[Source, ...] = (Source.SIDECAR, Source.XATTR, Source.JOURNAL, Source.FILENAME)

# systemd src/coredump/coredump.c, fix_xattr(): the xattrs systemd-coredump sets on a core file
# (fsetxattr with XATTR_CREATE, value without a trailing NUL), and the journal field each mirrors
# (meta_field_names[] in the same file).
XATTR_FIELDS: Mapping[str, str] = {
    "user.coredump.pid": "COREDUMP_PID",
    "user.coredump.uid": "COREDUMP_UID",
    "user.coredump.gid": "COREDUMP_GID",
    "user.coredump.signal": "COREDUMP_SIGNAL",
    "user.coredump.timestamp": "COREDUMP_TIMESTAMP",
    "user.coredump.rlimit": "COREDUMP_RLIMIT",
    "user.coredump.hostname": "COREDUMP_HOSTNAME",
    "user.coredump.comm": "COREDUMP_COMM",
    "user.coredump.exe": "COREDUMP_EXE",
}
_XATTR_PREFIX = "user.coredump."

# make_filename() in coredump.c: "core.%s.%s." SD_ID128_FORMAT_STR ".%s.%s" of comm, uid, boot
# id, pid and timestamp (microseconds), each passed through xescape(s, "./ "), plus the
# compressor's suffix. Greedy comm: only it may contain (escaped) odd characters.
_CORE_NAME = re.compile(
    r"core\.(?P<comm>.+)\.(?P<uid>[0-9]+)\.(?P<boot>[0-9a-f]{32})\.(?P<pid>[0-9]+)"
    r"\.(?P<ts>[0-9]+)(?:\.(?:zst|lz4|xz))?"
)
_XESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")

# Fields compared across sources; a disagreement is a note (it can mean a mismatched sidecar).
_COMPARED = (PID, TIMESTAMP, SIGNAL, HOSTNAME, EXE, BOOT_ID, UID)
_TIMESTAMP_TOLERANCE_US = 1_000_000


@dataclass(frozen=True, slots=True)
class SourceFields:
    """The fields one source gave, where they came from, and what was wrong with them."""

    source: Source
    origin: str
    fields: Mapping[str, str]
    errors: tuple[MetadataError, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CrashMetadata:
    """Merged metadata of one core file.

    ``fields`` is what goes into :attr:`corecensus.model.CrashRecord.metadata`;
    ``provenance`` says which source each field came from.
    """

    fields: Mapping[str, str]
    provenance: Mapping[str, Source]
    errors: tuple[MetadataError, ...] = ()
    notes: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()

    def int_field(self, name: str) -> int | None:
        value = self.fields.get(name)
        return int(value) if value is not None and value.isdigit() else None


def sidecar_path(core_path: str | os.PathLike[str]) -> Path:
    """``<core file>.json`` (``core.x.zst`` -> ``core.x.zst.json``)."""
    return Path(f"{os.fspath(core_path)}.json")


def _line_of_keys(text: str, keys: Sequence[str]) -> dict[str, int]:
    """Best-effort line of each key in a JSON text (for error messages)."""
    wanted = {json.dumps(k): k for k in keys}
    found: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        for quoted, key in wanted.items():
            if key not in found and quoted in line:
                found[key] = lineno
    return found


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def read_sidecar(core_path: str | os.PathLike[str]) -> SourceFields | None:
    """Fields of ``<core file>.json``; None if there is no sidecar.

    Raises :class:`MetadataError` (``file:line: ...``) if it is unreadable, not a JSON object,
    or has a duplicate key. A value that is not a string (integers are accepted and converted;
    ``null`` means unknown) is dropped and reported in ``errors``.
    """
    path = sidecar_path(core_path)
    origin = str(path)
    try:
        with open_regular(path) as fh:  # a FIFO sidecar must not block the ingest
            data = fh.read(MAX_SIDECAR_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise metadata_error(origin, None, f"cannot read sidecar: {exc.strerror or exc}") from exc
    if len(data) > MAX_SIDECAR_BYTES:
        raise metadata_error(origin, None, f"sidecar larger than {MAX_SIDECAR_BYTES} bytes")
    try:
        text = strip_bom(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise metadata_error(origin, line, "not UTF-8 text") from exc
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_int=json_int)
    except _DuplicateKey as exc:
        quoted = json.dumps(exc.key)
        hits = [n for n, ln in enumerate(text.splitlines(), start=1) if quoted in ln]
        dup_line = hits[1] if len(hits) > 1 else (hits[0] if hits else None)
        raise metadata_error(origin, dup_line, f"duplicate key {exc.key!r}") from exc
    except json.JSONDecodeError as exc:
        raise metadata_error(origin, exc.lineno, f"not JSON: {exc.msg}") from exc
    except ValueError as exc:  # json_int's refusal
        raise metadata_error(origin, None, f"not JSON we read: {exc}") from exc
    except RecursionError as exc:
        raise metadata_error(origin, None, "JSON nested too deeply") from exc
    if not isinstance(obj, dict):
        raise metadata_error(origin, 1, f"expected a JSON object, got {type(obj).__name__}")
    lines = _line_of_keys(text, list(obj))
    raw: dict[str, str] = {}
    errors: list[MetadataError] = []
    for key, value in obj.items():
        if value is None:
            continue
        if isinstance(value, str):
            raw[key] = value
        elif type(value) is int:
            raw[key] = str(value)
        else:
            errors.append(
                metadata_error(
                    origin, lines.get(key), f"{key}: expected a string, got {type(value).__name__}"
                )
            )
    checked = check_fields(raw, origin, lines)
    return SourceFields(
        Source.SIDECAR,
        origin,
        checked.fields,
        tuple(errors + checked.errors),
        tuple(checked.notes),
    )


def read_xattrs(
    core_path: str | os.PathLike[str],
    *,
    listxattr: Callable[[str], list[str]] = os.listxattr,
    getxattr: Callable[[str, str], bytes] = os.getxattr,
) -> SourceFields | None:
    """systemd-coredump's ``user.coredump.*`` xattrs as ``COREDUMP_*`` fields; None if the file
    has none or its file system does not support xattrs.

    Names beyond :data:`XATTR_FIELDS` (a newer systemd) map to ``COREDUMP_<NAME>`` and are kept.
    """
    path = os.fspath(core_path)
    try:
        names = [n for n in listxattr(path) if n.startswith(_XATTR_PREFIX)]
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise metadata_error(path, None, f"cannot list xattrs: {exc.strerror or exc}") from exc
    if not names:
        return None
    raw: dict[str, str] = {}
    for name in sorted(names):
        try:
            value = getxattr(path, name)
        except OSError as exc:
            if exc.errno == errno.ENODATA:  # removed between list and get
                continue
            raise metadata_error(
                path, None, f"cannot read xattr {name}: {exc.strerror or exc}"
            ) from exc
        key = XATTR_FIELDS.get(name) or "COREDUMP_" + name[len(_XATTR_PREFIX) :].upper()
        raw[key] = value.rstrip(b"\x00").decode("utf-8", "backslashreplace")
    checked = check_fields(raw, f"{path} (xattrs)")
    return SourceFields(
        Source.XATTR,
        f"{path} (xattrs)",
        checked.fields,
        tuple(checked.errors),
        tuple(checked.notes),
    )


def _unxescape(text: str) -> str:
    raw = _XESCAPE.sub(
        lambda m: bytes([int(m.group(1), 16)]), text.encode("utf-8", "surrogateescape")
    )
    return raw.decode("utf-8", "backslashreplace")


def parse_core_filename(core_path: str | os.PathLike[str]) -> SourceFields | None:
    """Fields from systemd-coredump's core file name; None if the name does not follow it."""
    name = os.path.basename(os.fspath(core_path))
    m = _CORE_NAME.fullmatch(name)
    if m is None:
        return None
    raw = {
        COMM: _unxescape(m["comm"]),
        UID: m["uid"],
        BOOT_ID: m["boot"],
        PID: m["pid"],
        TIMESTAMP: m["ts"],
    }
    checked = check_fields(raw, name)
    return SourceFields(Source.FILENAME, name, checked.fields, tuple(checked.errors))


def _disagreements(sources: Sequence[SourceFields]) -> list[str]:
    notes: list[str] = []
    for name in _COMPARED:
        seen = [(s, s.fields[name]) for s in sources if name in s.fields]
        if len(seen) < 2:
            continue
        (first, kept), *others = seen
        for other, value in others:
            same = value == kept
            if name == TIMESTAMP and kept.isdigit() and value.isdigit():
                same = abs(int(kept) - int(value)) <= _TIMESTAMP_TOLERANCE_US
            if not same:
                notes.append(
                    f"{name}: {first.source} says {kept!r}, {other.source} says {value!r}; "
                    f"kept {first.source}"
                )
    return notes


def merge_sources(
    sources: Sequence[SourceFields], errors: Sequence[MetadataError] = ()
) -> CrashMetadata:
    """Merge per :data:`PRECEDENCE` (the order of ``sources`` does not matter)."""
    ordered = sorted(sources, key=lambda s: PRECEDENCE.index(s.source))
    fields: dict[str, str] = {}
    provenance: dict[str, Source] = {}
    for src in ordered:
        for name, value in src.fields.items():
            if name not in fields:
                fields[name] = value
                provenance[name] = src.source
    all_errors = [*errors, *(e for s in ordered for e in s.errors)]
    notes = [*(n for s in ordered for n in s.notes), *_disagreements(ordered)]
    return CrashMetadata(
        fields=fields,
        provenance=provenance,
        errors=tuple(all_errors),
        notes=tuple(notes),
        sources=tuple(s.origin for s in ordered),
    )


def collect_metadata(
    core_path: str | os.PathLike[str],
    journal: JournalIndex | None = None,
    *,
    xattr_reader: Callable[[str | os.PathLike[str]], SourceFields | None] = read_xattrs,
) -> CrashMetadata:
    """All metadata for ``core_path``; never raises for bad metadata (see ``errors``)."""
    sources: list[SourceFields] = []
    errors: list[MetadataError] = []
    for reader in (read_sidecar, xattr_reader, parse_core_filename):
        try:
            found = reader(core_path)
        except MetadataError as exc:
            errors.append(exc)
            continue
        if found is not None:
            sources.append(found)
    if journal is not None:
        hints = merge_sources(sources).fields
        entry = journal.match(core_path, hints)
        if entry is not None:
            sources.append(
                SourceFields(
                    Source.JOURNAL,
                    entry.origin,
                    entry.fields,
                    errors=entry.errors,
                    notes=entry.notes,
                )
            )
    return merge_sources(sources, errors)
