"""The collector's write-ahead journal: where an upload is durable before the store has it.

An acknowledgement means durable (issue 11). Committing every group of uploads to DuckDB put
DuckDB's costs on the acknowledgement path: about 8 ms of fixed cost per commit at groups of
20-40 records, and checkpoints of 41-1,308 ms (DuckDB blocks appends to a table while it
checkpoints it, duckdb#25988) that every request behind them waited for -- at half the
capacity, every one of the slowest 1 % overlapped a checkpoint (README, the collector under
load). The writer now appends each group to this journal instead, one ``write`` and one
``fdatasync`` per group, and answers after the ``fdatasync``; a loader thread
(:mod:`corecensus.collector.loader`) moves the journal into the store in large batches and
records, in the same store transaction, how far the journal is applied, so a replay after a
crash applies each frame exactly once. Databases keep their own log for the same reason
(PostgreSQL's WAL, with checkpoints off the commit path).

Layout: ``FILE.journal/`` beside the store ``FILE``, segments ``<number>.seg`` numbered from 1.
A segment is a sequence of frames; a frame is its payload's length and CRC-32 (two big-endian
32-bit integers; zlib's CRC-32, computed by zlib-ng, which uses the CPU's carry-less multiply:
50 GB/s here against zlib's 1-2, whose checksum of every byte appended was a third of the
writer thread's CPU), then the payload: the group's rows as msgpack, ``[2, [[kind, rows], ...]]``,
each request's rows (a list of the store's own row dataclasses) as :func:`journal_rows` encoded
them once, in the front end that signed them: the link between the collector's processes
carries the same bytes, and the writer appends them as they came, with no decoding and no
encoding of its own (:class:`JournalRows` carries the rows' keys beside them, for retries).
Format 1, ``[1, crashes, heartbeats, screens]``, is what the writer wrote before (it decoded
each request's rows and encoded the group again); a journal left in it still loads. The writer appends to the last segment and starts the next once it holds
``segment_bytes``; a :class:`JournalPosition` (segment, offset) names the point between two
frames. Segments wholly before the applied position are deleted.

A crash (``kill -9``, power) can leave the last frame of the last segment torn: it was being
written and its request was never answered. Opening the journal cuts the last segment after
its last whole frame. A bad frame anywhere else is damage the journal cannot repair, and is
reported (:class:`JournalError`) rather than skipped.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from zlib_ng.zlib_ng import crc32

from corecensus.app.uploads import UploadRows
from corecensus.durable import fsync_dir
from corecensus.errors import StoreError
from corecensus.ingest.wire import RecordKind
from corecensus.store import HEARTBEATS, CrashRow, EncodedCrashRows, Heartbeat, ScreenResultRow

__all__ = [
    "Journal",
    "JournalError",
    "JournalPosition",
    "JournalRows",
    "decode_rows",
    "encode_rows",
    "frame_parts",
    "journal_path",
    "journal_rows",
    "piece_rows",
    "row_keys",
    "rows_of",
]

_HEADER = struct.Struct(">II")
# A frame larger than this is damage, not a group (a group commit is at most
# max_commit_records rows of at most a request's 32 MiB).
_MAX_FRAME = 1 << 30
_FORMAT_GROUP = 1  # [1, crashes, heartbeats, screens] (read only)
_FORMAT_PIECES = 2  # [2, [[kind, rows], ...]]
_SUFFIX = ".seg"
# os.writev takes at most this many buffers at once (IOV_MAX on Linux).
_IOV_MAX = 1024

_encoder = msgspec.msgpack.Encoder()
_ROW_TYPES: dict[RecordKind, Any] = {
    RecordKind.CRASHES: list[CrashRow],
    RecordKind.HEARTBEATS: list[Heartbeat],
    RecordKind.SCREENINGS: list[ScreenResultRow],
}
_row_decoders = {kind: msgspec.msgpack.Decoder(t) for kind, t in _ROW_TYPES.items()}
_parts_decoder = msgspec.msgpack.Decoder(list[msgspec.Raw])
_pieces_decoder = msgspec.msgpack.Decoder(list[tuple[RecordKind, msgspec.Raw]])
_group_decoder = msgspec.msgpack.Decoder(
    tuple[int, list[CrashRow], list[Heartbeat], list[ScreenResultRow]]
)
# Each piece's msgpack head: a 2-array and its kind (the rows follow, as encoded).
_PIECE_HEAD = {kind: b"\x92" + _encoder.encode(kind.value) for kind in RecordKind}


class JournalError(StoreError):
    """The journal cannot be written or read (a full disk, a damaged segment)."""


@dataclass(frozen=True, order=True, slots=True)
class JournalPosition:
    """A point between two frames: ``offset`` bytes into segment number ``segment``."""

    segment: int
    offset: int


def journal_path(store: str | os.PathLike[str]) -> Path:
    """The journal directory of the store file ``store``."""
    return Path(f"{os.fspath(store)}.journal")


def row_keys(kind: RecordKind, rows: Sequence[Any]) -> list[Hashable]:
    """The store's key of each row of ``kind``: what makes a retry the same record (crashes
    by ``core_id``, screens by ``result_id``, heartbeats by their content)."""
    if kind is RecordKind.CRASHES:
        return [r.core_id for r in rows]
    if kind is RecordKind.SCREENINGS:
        return [r.result_id for r in rows]
    return [HEARTBEATS.key_of(r) for r in rows]


@dataclass(frozen=True, slots=True)
class JournalRows:
    """One request's rows of one kind as the journal keeps them: ``payload`` is the msgpack
    list of the store's row dataclasses, ``keys`` each row's key (:func:`row_keys`), in order.
    Encoded once (:func:`journal_rows`), where the rows are made; the writer journals the
    payload as it is and finds retries by the keys."""

    kind: RecordKind
    keys: Sequence[Hashable]
    payload: bytes | memoryview

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def received(
        cls, kind: RecordKind, keys: Sequence[Any], payload: bytes | memoryview
    ) -> JournalRows:
        """Rows as another process sent them (msgpack turned the heartbeats' key tuples into
        lists). The payload must be a list of as many rows as there are keys (its head says;
        the rows themselves are decoded by the loader): else :class:`JournalError`."""
        if kind is RecordKind.HEARTBEATS:
            keys = [tuple(k) for k in keys]
        if _array_length(payload) != len(keys):
            raise JournalError(f"{kind} rows sent with {len(keys)} keys are not as many rows")
        return cls(kind, keys, payload)


def journal_rows(kind: RecordKind, rows: Sequence[Any]) -> JournalRows:
    """``rows`` (the store's rows of ``kind``, as :class:`UploadRows` holds them) encoded for
    the journal: the one encoding they get, in the process that made them."""
    return JournalRows(kind, row_keys(kind, rows), _encoder.encode(list(rows)))


def _array_length(payload: bytes | memoryview) -> int | None:
    """The element count in the head of a msgpack array (None: not an array)."""
    if not payload:
        return None
    head = payload[0]
    if 0x90 <= head <= 0x9F:
        return head & 0x0F
    if head == 0xDC and len(payload) >= 3:
        return int.from_bytes(payload[1:3], "big")
    if head == 0xDD and len(payload) >= 5:
        return int.from_bytes(payload[1:5], "big")
    return None


def _array_head(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def frame_parts(pieces: Sequence[JournalRows]) -> list[bytes | memoryview]:
    """A frame's payload (``[2, [[kind, rows], ...]]``) as the buffers it is written from, in
    order: msgpack heads around each piece's payload, which is not copied."""
    parts: list[bytes | memoryview] = [b"\x92\x02" + _array_head(len(pieces))]
    for piece in pieces:
        parts += (_PIECE_HEAD[piece.kind], piece.payload)
    return parts


def encode_rows(rows: UploadRows) -> bytes:
    """A frame's payload for ``rows`` (tests and benchmarks; the writer appends
    :func:`frame_parts`)."""
    pieces = [
        journal_rows(kind, kind_rows)
        for kind, kind_rows in (
            (RecordKind.CRASHES, list(rows.crashes)),
            (RecordKind.HEARTBEATS, rows.heartbeats),
            (RecordKind.SCREENINGS, rows.screens),
        )
        if kind_rows
    ]
    return b"".join(frame_parts(pieces))


def piece_rows(piece: JournalRows) -> list[Any]:
    """The rows of ``piece``, decoded."""
    try:
        rows: list[Any] = _row_decoders[piece.kind].decode(piece.payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise JournalError(f"rows do not decode: {exc}") from exc
    return rows


def rows_of(pieces: Sequence[JournalRows], *, encoded: bool = False) -> UploadRows:
    """The rows of ``pieces``, decoded, by kind; with ``encoded``, the crashes as
    :class:`EncodedCrashRows` (for the store: each record's JSON left as msgpack)."""
    try:
        return _decoded(((p.kind, p.payload) for p in pieces), encoded)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise JournalError(f"rows do not decode: {exc}") from exc


def _decoded(pieces: Iterable[tuple[RecordKind, Any]], encoded: bool = False) -> UploadRows:
    by_kind: dict[RecordKind, list[Any]] = {kind: [] for kind in RecordKind}
    crash_payloads: list[Any] = []
    for kind, payload in pieces:
        if encoded and kind is RecordKind.CRASHES:
            crash_payloads.append(payload)
        else:
            by_kind[kind] += _row_decoders[kind].decode(payload)
    crashes: list[CrashRow] | EncodedCrashRows = by_kind[RecordKind.CRASHES]
    if encoded:
        crashes = EncodedCrashRows.decode(crash_payloads)
    return UploadRows(
        crashes=crashes,
        heartbeats=by_kind[RecordKind.HEARTBEATS],
        screens=by_kind[RecordKind.SCREENINGS],
    )


def decode_rows(payload: bytes, *, encoded: bool = False) -> UploadRows:
    """The rows of a frame's payload (either format); ``encoded`` as for :func:`rows_of`."""
    try:
        parts = _parts_decoder.decode(payload)
        version = msgspec.msgpack.decode(parts[0], type=int) if parts else None
        if version == _FORMAT_PIECES and len(parts) == 2:
            return _decoded(_pieces_decoder.decode(parts[1]), encoded)
        if version == _FORMAT_GROUP:
            _, crashes, heartbeats, screens = _group_decoder.decode(payload)
            return UploadRows(crashes=crashes, heartbeats=heartbeats, screens=screens)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise JournalError(f"a journal frame does not decode: {exc}") from exc
    raise JournalError(f"a journal frame of format {version} (this corecensus reads 1 and 2)")


def _write_all(fd: int, parts: Sequence[bytes | memoryview]) -> None:
    """Write every byte of ``parts``, in order (``writev``, so the parts are not joined first:
    a group's rows are most of a frame, and a copy of them costs as much as their checksum)."""
    views = [memoryview(p) for p in parts if p]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]


def _whole_frames(data: bytes) -> int:
    """How many bytes of ``data`` are whole frames with the right checksum, from its start."""
    at = 0
    while at + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, at)
        end = at + _HEADER.size + length
        if length > _MAX_FRAME or end > len(data):
            break
        if crc32(memoryview(data)[at + _HEADER.size : end]) != crc:
            break
        at = end
    return at


class Journal:
    """The segments of one journal directory. :meth:`append` is for one thread (the writer),
    :meth:`frames` and :meth:`release` for another (the loader); the sizes they share are
    kept under a lock."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        applied: JournalPosition | None = None,
        segment_bytes: int = 16 << 20,
    ) -> None:
        self.directory = Path(directory)
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()
        try:
            self.directory.mkdir(exist_ok=True)
            fsync_dir(self.directory.parent)
            numbers = sorted(
                int(p.name[: -len(_SUFFIX)])
                for p in self.directory.iterdir()
                if p.name.endswith(_SUFFIX) and p.name[: -len(_SUFFIX)].isdigit()
            )
        except OSError as exc:
            raise JournalError(f"{self.directory}: {exc.strerror or exc}") from exc
        wanted = applied or JournalPosition(numbers[0] if numbers else 1, 0)
        # Segments wholly applied before a crash that came between the store's commit and
        # their deletion.
        for number in [n for n in numbers if n < wanted.segment]:
            self._path(number).unlink(missing_ok=True)
        numbers = [n for n in numbers if n >= wanted.segment]
        if (numbers and numbers[0] == wanted.segment) or applied is None:
            self.start = wanted
        else:
            # The applied segment is gone (all of it was applied, or the journal was moved
            # aside): what comes next is a segment of its own, never appended to a number
            # the store calls applied.
            self.start = JournalPosition(numbers[0] if numbers else wanted.segment + 1, 0)
        # Sizes of the segments not yet deleted (the last is the one appended to).
        self._sizes: dict[int, int] = {n: self._path(n).stat().st_size for n in numbers}
        self._sizes.setdefault(self.start.segment, 0)
        self._last = max(self._sizes)
        self.torn_bytes = self._cut_torn_tail()
        if self._sizes[self.start.segment] < self.start.offset:
            raise JournalError(
                f"{self._path(self.start.segment)}: shorter ({self._sizes[self.start.segment]} "
                f"bytes) than the store says it applied ({self.start.offset})"
            )
        self._fd = self._open_for_append(self._last)
        self.broken: str | None = None

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:020d}{_SUFFIX}"

    def _open_for_append(self, number: int) -> int:
        path = self._path(number)
        created = not path.exists()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            if created:
                fsync_dir(self.directory)  # the new segment's name is durable too
        except OSError as exc:
            raise JournalError(f"{path}: {exc.strerror or exc}") from exc
        return fd

    def _cut_torn_tail(self) -> int:
        """Cut the last segment after its last whole frame (a frame torn by a crash was
        never acknowledged); returns the bytes cut."""
        path = self._path(self._last)
        if not self._sizes[self._last]:
            return 0
        try:
            data = path.read_bytes()
            whole = _whole_frames(data)
            if whole < len(data):
                with open(path, "r+b") as f:
                    f.truncate(whole)
                    f.flush()
                    os.fsync(f.fileno())
        except OSError as exc:
            raise JournalError(f"{path}: {exc.strerror or exc}") from exc
        self._sizes[self._last] = whole
        return len(data) - whole

    # -- the writer's side ------------------------------------------------------------------

    def append(self, *parts: bytes | memoryview) -> JournalPosition:
        """Append one frame, whose payload is ``parts`` joined, and make it durable
        (``fdatasync``); returns the position after it. On failure (a full disk, a file size
        limit) the segment is cut back to where it was, nothing of the frame stays, and
        :class:`JournalError` is raised."""
        if self.broken is not None:
            raise JournalError(self.broken)
        crc = 0
        for part in parts:
            crc = crc32(part, crc)
        length = sum(len(p) for p in parts)
        frame = (_HEADER.pack(length, crc), *parts)
        with self._lock:
            number, size = self._last, self._sizes[self._last]
        try:
            _write_all(self._fd, frame)
            os.fdatasync(self._fd)
        except OSError as exc:
            self._undo(size)
            raise JournalError(
                f"{self._path(number)}: appending {_HEADER.size + length} bytes: "
                f"{exc.strerror or exc}"
            ) from exc
        end = size + _HEADER.size + length
        with self._lock:
            self._sizes[number] = end
        if end >= self._segment_bytes:
            self._roll()
        return JournalPosition(number, end)

    def _undo(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
            os.fdatasync(self._fd)
        except OSError as exc:
            # The segment may end in part of a frame: a torn tail, which the next open cuts;
            # appending after it would hide it, so the journal takes nothing more.
            self.broken = (
                f"{self._path(self._last)}: cutting a failed append: {exc.strerror or exc}; "
                "restart the collector (the start cuts it)"
            )

    def _roll(self) -> None:
        number = self._last + 1
        try:
            fd = self._open_for_append(number)
        except JournalError:
            return  # the current segment takes the next frames; tried again after each
        os.close(self._fd)
        self._fd = fd
        with self._lock:
            self._sizes[number] = 0
            self._last = number

    def end(self) -> JournalPosition:
        """The position after the last durable frame."""
        with self._lock:
            return JournalPosition(self._last, self._sizes[self._last])

    def bytes_after(self, position: JournalPosition) -> int:
        """Bytes of frames after ``position`` (what is not applied yet)."""
        with self._lock:
            return sum(
                size - (position.offset if number == position.segment else 0)
                for number, size in self._sizes.items()
                if number >= position.segment
            )

    # -- the loader's side ------------------------------------------------------------------

    def frames(
        self, start: JournalPosition, max_bytes: int, until: JournalPosition | None = None
    ) -> Iterator[tuple[bytes, JournalPosition]]:
        """The frames after ``start`` (each payload and the position after it), up to the
        last durable one or ``until``, until at least ``max_bytes`` are read. Moving on to the
        next segment is a position too (its offset 0), with an empty payload."""
        position, read = start, 0
        while read < max_bytes and (until is None or position < until):
            with self._lock:
                size = self._sizes.get(position.segment)
                later = any(n > position.segment for n in self._sizes)
            if size is None:
                return
            if position.offset >= size:
                if not later:
                    return
                position = JournalPosition(position.segment + 1, 0)
                yield b"", position
                continue
            path = self._path(position.segment)
            offset = position.offset
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    end = size
                    if until is not None and until.segment == position.segment:
                        end = min(size, until.offset)
                    while offset < end and read < max_bytes:
                        head = f.read(_HEADER.size)
                        if len(head) < _HEADER.size:
                            raise self._damaged(path, offset)
                        length, crc = _HEADER.unpack(head)
                        if length > _MAX_FRAME or offset + _HEADER.size + length > size:
                            raise self._damaged(path, offset)
                        payload = f.read(length)
                        if len(payload) != length or crc32(payload) != crc:
                            raise self._damaged(path, offset)
                        offset += _HEADER.size + length
                        read += _HEADER.size + length
                        yield payload, JournalPosition(position.segment, offset)
            except OSError as exc:
                raise JournalError(f"{path}: {exc.strerror or exc}") from exc
            position = JournalPosition(position.segment, offset)
            if offset < size:
                return  # (at until, or max_bytes read)

    @staticmethod
    def _damaged(path: Path, offset: int) -> JournalError:
        return JournalError(
            f"{path}: the frame at byte {offset} is damaged (its length or checksum is wrong); "
            "move the journal aside to start without it (what it holds past that point is lost)"
        )

    def release(self, applied: JournalPosition) -> None:
        """Delete the segments wholly before ``applied`` (the store holds what they held)."""
        with self._lock:
            gone = [n for n in self._sizes if n < applied.segment and n != self._last]
            for number in gone:
                del self._sizes[number]
        for number in gone:
            with contextlib.suppress(FileNotFoundError):
                self._path(number).unlink()

    def segments(self) -> list[int]:
        with self._lock:
            return sorted(self._sizes)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
