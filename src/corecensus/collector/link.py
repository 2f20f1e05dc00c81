"""The link between the collector's HTTP front-end processes and its writer process.

One Unix stream socket per front end. A message is a header and a payload, each preceded by
its length (two big-endian 32-bit integers, then the header, then the payload); the header is
msgpack (msgspec). A front end sends ``[id, op, arg]``; the writer answers ``[id, "ok", value]``
or ``[id, "error", [reason, detail]]``, in any order (each request is answered when it is done).

A message with ``id`` -1 is a notice, never answered. Each front end tells the writer its
admitted work whenever it changes (``[-1, "load", records]``: requests admitted and not yet
queued, at its average request size), and the writer tells each front end what it cannot see
(``[-1, "view", [...]]``, :class:`~corecensus.collector.admission.WriterView`'s fields: the
records the other front ends hold, the collector's throughput and commit costs) whenever that
changes, and before it answers a ``store``: so every front end's admission decides on the whole
collector's queue, not its own share of it.

``store``: the payload is the rows (``UploadRows``' of one kind: signed crash rows, heartbeat
or screen rows) as the journal keeps them (:func:`~corecensus.collector.journal.journal_rows`:
msgpack of the store's own dataclasses), ``arg`` their kind and their keys; the answer comes
after they are committed, with the group commit's seconds and records. ``unready``,
``analysis`` (``arg``: seconds to wait for a first one) and ``host`` (``arg``: the host name)
are the read side.

The front ends do the per-record work (parse, check, sign, encode); the writer appends the
payload to its journal as it came, finding retries by the keys beside it, and its loader
decodes the rows once, to insert them. (Before, the writer decoded every row off the link and
encoded the group again for the journal: about a tenth of its CPU.)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from corecensus.collector.admission import Backlog, WriterView
from corecensus.collector.backend import LocalBackend
from corecensus.collector.journal import JournalRows, journal_rows
from corecensus.collector.writer import QueueFull, WriterStopped
from corecensus.errors import CorecensusError, StoreError
from corecensus.ingest.wire import RecordKind

__all__ = ["LinkServer", "RemoteBackend"]

_LENGTHS = struct.Struct(">II")
# The ``id`` of a notice (no answer).
_NOTICE = -1
# How many bytes of messages a front end lets wait in its link's transport before a store
# waits for them to leave (asyncio's high-water mark; its default, 64 KiB, is less than one
# message with rows, so every store waited for the writer to read the one before it: a
# hand-off between two processes per message, which on two busy CPUs held admitted requests
# at 5x overload). Enough for several messages, not so much that the transport's buffer,
# shifted on every send, costs more than the messages (Python 3.11).
_SEND_AHEAD = 1 << 20
# The link socket's kernel send buffer (SO_SNDBUF) a front end asks for: room for a few
# messages of rows, each in one send (RemoteBackend.connect).
_SEND_BUFFER = 1 << 20
# A message larger than this is a broken peer, not a batch (a request body is at most 32 MiB
# decoded; its rows are about as large).
_MAX_PART = 256 << 20
_ERRORS: dict[str, type[CorecensusError]] = {
    "queue_full": QueueFull,
    "stopping": WriterStopped,
    "store": StoreError,
}


def _frame(header: Any, payload: bytes = b"") -> bytes:
    head = msgspec.msgpack.encode(header)
    return _LENGTHS.pack(len(head), len(payload)) + head + payload


class _MessageReader(asyncio.BufferedProtocol):
    """The writer's end of one link connection, reading: each message whole, small ones
    through one staging buffer (many in one ``recv``), a larger one straight into a buffer of
    its own, its payload handed on as a view of it, never copied. asyncio's StreamReader
    received into a fresh 256 KiB object per ``recv``, copied that into its buffer and the
    payload out of it again: ``recv`` was the writer's event loop's largest cost per record
    (cProfile, 0.4 s of 20,000 records) and the copies as much again; past its 64 KiB limit
    every message with rows also paused the socket and resumed it, two ``epoll_ctl`` calls."""

    _STAGING = 64 << 10

    def __init__(
        self,
        made: Callable[[asyncio.BaseTransport], None],
        message: Callable[[Any, memoryview], None],
        lost: Callable[[], None],
    ) -> None:
        self._made, self._message, self._lost = made, message, lost
        self._staging = bytearray(self._STAGING)
        self._have = 0  # bytes in the staging buffer
        self._whole: bytearray | None = None  # a large message's head and payload
        self._head_len = 0
        self._filled = 0
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._whole is not None:
            return memoryview(self._whole)[self._filled :]
        return memoryview(self._staging)[self._have :]

    def buffer_updated(self, nbytes: int) -> None:
        try:
            if self._whole is not None:
                self._filled += nbytes
                if self._filled == len(self._whole):
                    whole, self._whole = memoryview(self._whole), None
                    self._deliver(whole[: self._head_len], whole[self._head_len :])
                return
            self._have += nbytes
            self._parse()
        except (msgspec.DecodeError, ValueError, ConnectionError):
            # A broken front end: its connection ends, and its requests with it.
            if self._transport is not None:
                self._transport.close()

    def _parse(self) -> None:
        view, at = memoryview(self._staging), 0
        while self._have - at >= _LENGTHS.size:
            head_len, payload_len = _LENGTHS.unpack_from(self._staging, at)
            if head_len > _MAX_PART or payload_len > _MAX_PART:
                raise ConnectionError(f"link message of {head_len}+{payload_len} bytes")
            start, size = at + _LENGTHS.size, head_len + payload_len
            if self._have - start >= size:
                # (a copy of a small payload: the staging buffer is read into again)
                payload = memoryview(bytes(view[start + head_len : start + size]))
                self._deliver(view[start : start + head_len], payload)
                at = start + size
                continue
            if _LENGTHS.size + size > self._STAGING:
                # Too large to stage: a buffer of its own, with what came of it already.
                self._whole = bytearray(size)
                self._filled = self._have - start
                self._whole[: self._filled] = view[start : self._have]
                self._head_len = head_len
                at = self._have
            break
        # What is left of a message not read whole yet moves to the front.
        left = self._have - at
        if at and left:
            self._staging[:left] = view[at : self._have]
        self._have = left

    def _deliver(self, head: memoryview, payload: memoryview) -> None:
        self._message(msgspec.msgpack.decode(head), payload)


async def _read(reader: asyncio.StreamReader) -> tuple[Any, bytes]:
    head_len, payload_len = _LENGTHS.unpack(await reader.readexactly(_LENGTHS.size))
    if head_len > _MAX_PART or payload_len > _MAX_PART:
        raise ConnectionError(f"link message of {head_len}+{payload_len} bytes")
    header = msgspec.msgpack.decode(await reader.readexactly(head_len))
    return header, await reader.readexactly(payload_len)


@dataclass(eq=False, slots=True)
class _FrontEnd:
    """The writer's record of one connected front end."""

    writer: asyncio.Transport
    admitted_records: float = 0.0  # as it last said
    queued_records: int = 0  # its rows received and not yet committed
    sent: tuple[Any, ...] | None = field(default=None)  # the last view sent to it


class LinkServer:
    """The writer process's end: answers each front end's requests from a :class:`LocalBackend`,
    and keeps every front end told of the work the others hold."""

    def __init__(self, backend: LocalBackend) -> None:
        self._backend = backend
        self._tasks: set[asyncio.Task[None]] = set()
        self._front_ends: list[_FrontEnd] = []
        self._dirty = False
        self._flush_due = False
        # The writer thread announces stalls (a checkpoint or snapshot) through the backlog.
        self._loop = asyncio.get_running_loop()
        backend.backlog.on_change = self._changed_elsewhere
        # Front ends that said they serve (``hello``, sent once uvicorn listens).
        self.serving = 0
        self.hello = asyncio.Event()

    def protocol(self) -> asyncio.BufferedProtocol:
        """A new connection's protocol (``loop.create_unix_server(server.protocol, ...)``):
        a front end, told of the others' work and answered, until it goes away (its requests
        end with it)."""
        peer: _FrontEnd | None = None

        def made(transport: asyncio.BaseTransport) -> None:
            nonlocal peer
            assert isinstance(transport, asyncio.Transport)
            peer = _FrontEnd(transport)
            self._front_ends.append(peer)
            self._changed()

        def message(header: Any, payload: memoryview) -> None:
            assert peer is not None
            if header[0] == _NOTICE:
                if header[1] == "load":
                    peer.admitted_records = max(0.0, float(header[2]))
                    self._changed()
                return
            task = asyncio.create_task(self._answer(header, payload, peer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        def lost() -> None:
            if peer is not None and peer in self._front_ends:
                self._front_ends.remove(peer)
                self._changed()

        return _MessageReader(made, message, lost)

    def _changed_elsewhere(self) -> None:
        # From the writer thread.
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to tell
            self._loop.call_soon_threadsafe(self._changed)

    def _changed(self) -> None:
        """Some front end's work changed: tell the others, once per turn of the loop."""
        self._dirty = True
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_due = False
        if not self._dirty:
            return
        self._dirty = False
        backlog = self._backend.backlog
        # The writer's busy windows are the whole collector's: work admitted anywhere counts.
        backlog.elsewhere(sum(p.admitted_records for p in self._front_ends))
        held = [p.admitted_records + p.queued_records for p in self._front_ends]
        total = sum(held)
        for peer, own in zip(self._front_ends, held, strict=True):
            view = backlog.view(total - own)
            fields = (
                view.others_records,
                view.throughput,
                view.last_throughput,
                view.commit_s,
                view.commit_s_per_record,
                view.commit_floor_s,
                view.stall_s,
            )
            if fields != peer.sent and not peer.writer.is_closing():
                peer.sent = fields
                peer.writer.write(_frame([_NOTICE, "view", fields]))

    async def _answer(self, header: Any, payload: memoryview, peer: _FrontEnd) -> None:
        ident, op, arg = header
        try:
            value = await self._run(op, arg, payload, peer)
            reply = [ident, "ok", value]
        except (QueueFull, WriterStopped, StoreError) as exc:
            reason = next(k for k, t in _ERRORS.items() if isinstance(exc, t))
            reply = [ident, "error", [reason, str(exc)]]
        except Exception as exc:  # a request the writer cannot read; the front end says 503
            reply = [ident, "error", ["store", f"{type(exc).__name__}: {exc}"]]
        # The others hear that this work left before its front end can answer its client
        # (whose next request may reach another front end).
        self._flush()
        if not peer.writer.is_closing():
            peer.writer.write(_frame(reply))

    async def _run(self, op: str, arg: Any, payload: memoryview, peer: _FrontEnd) -> Any:
        if op == "store":
            kind, keys = arg
            rows = JournalRows.received(RecordKind(kind), keys, payload)
            peer.queued_records += len(rows)
            self._changed()
            try:
                seconds, group = await self._backend.commit(rows)
            finally:
                peer.queued_records -= len(rows)
                self._changed()
            return [seconds, group]
        if op == "hello":
            self.serving += 1
            self.hello.set()
            return None
        if op == "unready":
            return await self._backend.unready()
        if op == "analysis":
            return list(await self._backend.analysis(float(arg)))
        if op == "host":
            return await self._backend.host(str(arg))
        raise ValueError(f"unknown link operation {op!r}")


class RemoteBackend:
    """A front end's end: the :class:`~corecensus.collector.backend.Backend` of a writer in
    another process. ``on_lost`` is called once if the writer goes away; every request
    waiting then fails with :class:`WriterStopped` (503: nothing it sent is acknowledged).
    It tells the writer whenever ``backlog``'s admitted work changes, and gives ``backlog``
    each view the writer sends (``on_view`` is called after)."""

    def __init__(self, path: Path, backlog: Backlog) -> None:
        self._path = path
        self._backlog = backlog
        self._ids = itertools.count()
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._sending = asyncio.Lock()
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self._report_due = False
        self._reported = 0.0
        self._unsent = 0  # records of stores whose message is not written yet
        self.lost = False
        self.on_lost: Callable[[], None] | None = None
        self.on_view: Callable[[], None] | None = None

    async def connect(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while True:
            try:
                reader, self._writer = await asyncio.open_unix_connection(str(self._path))
                break
            except OSError:
                if loop.time() > end:
                    raise
                await asyncio.sleep(0.05)
        # Up to _SEND_AHEAD bytes of messages wait in the transport before a store waits for
        # them to leave (:meth:`_call`).
        self._writer.transport.set_write_buffer_limits(high=_SEND_AHEAD)
        # A message with rows in one send: with the socket's default buffer (net.core.
        # wmem_default, 208 KiB) a 20-record message (210 KB) did not fit, so asyncio kept
        # the rest, copied, and sent it when the socket was writable again, and the writer
        # read it in pieces (two front ends at capacity, three interleaved pairs, load 4-6:
        # front-end CPU per record 0.246/0.204/0.204 -> 0.200/0.146/0.186 ms, the writer's
        # 0.110/0.091/0.096 -> 0.097/0.077/0.096). The kernel caps it at net.core.wmem_max
        # and doubles it (socket(7)): up to 2 MiB of messages in the socket, written (so no
        # longer reported with this front end's load) and not yet read by the writer, as
        # those in the transport's buffer are.
        sock = self._writer.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)
        self._reading = asyncio.create_task(self._read_replies(reader))
        # Backlog calls it on this loop's thread (the upload handler's admitted/left/decoded).
        self._backlog.on_change = self._report_soon

    def _report_soon(self) -> None:
        # Once per turn of the loop: a request queued for the writer leaves the admitted count
        # in the same turn, so its rows reach the writer before the lower count does (counted
        # twice for a moment rather than not at all).
        if not self._report_due and not self.lost and self._writer is not None:
            self._report_due = True
            asyncio.get_running_loop().call_soon(self._report)

    def _report(self) -> None:
        self._report_due = False
        records = self._backlog.admitted_records() + self._unsent
        if records != self._reported and not self.lost and self._writer is not None:
            self._reported = records
            self._writer.write(_frame([_NOTICE, "load", records]))

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                (ident, status, value), _ = await _read(reader)
                if ident == _NOTICE:
                    if status == "view":
                        self._backlog.heard(WriterView(*value))
                        if self.on_view is not None:
                            self.on_view()
                    continue
                future = self._waiting.pop(ident, None)
                if future is None or future.done():
                    continue
                if status == "ok":
                    future.set_result(value)
                else:
                    reason, detail = value
                    future.set_exception(_ERRORS.get(reason, StoreError)(detail))
        except (asyncio.IncompleteReadError, ConnectionError, msgspec.DecodeError, ValueError):
            pass
        finally:
            self.lost = True
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(WriterStopped("the writer process is gone"))
            self._waiting.clear()
            if self.on_lost is not None:
                self.on_lost()

    async def _call(
        self,
        op: str,
        arg: Any,
        payload: bytes | memoryview = b"",
        sent: Callable[[], None] | None = None,
    ) -> Any:
        if self.lost or self._writer is None:
            raise WriterStopped("the writer process is gone")
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        if not payload:
            self._writer.write(_frame([ident, op, arg]))
            return await future
        # At most _SEND_AHEAD bytes in the transport's buffer. asyncio's transport keeps what
        # the socket did not take in one bytearray that every send shifts (Python 3.11): with a
        # front end's concurrent requests each writing its 100-200 KB at once, the buffer grew
        # to megabytes, and extending and shifting it cost the front end 0.05 ms of CPU per
        # record (bench/collector_writer_bench.py's front-end side, cProfile). So a message
        # waits for room (drain), head and rows as two writes, so the rows are not copied
        # into a joined message first.
        async with self._sending:
            head = msgspec.msgpack.encode([ident, op, arg])
            self._writer.write(_LENGTHS.pack(len(head), len(payload)) + head)
            self._writer.write(payload)
            if sent is not None:
                sent()
            with contextlib.suppress(ConnectionError):  # (the reader fails the future)
                await self._writer.drain()
        return await future

    def start(self) -> None:
        """Connected by :meth:`connect` before serving."""

    async def hello(self) -> None:
        """Tell the writer this front end serves (it announces the collector when all do)."""
        await self._call("hello", None)

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        if self._reading is not None:
            await asyncio.gather(self._reading, return_exceptions=True)

    async def store(self, kind: RecordKind, rows: Sequence[Any] | JournalRows) -> None:
        encoded = rows if isinstance(rows, JournalRows) else journal_rows(kind, rows)
        n = len(encoded)
        self._backlog.queued(n)
        # Until its message is written, the writer cannot count these records, so this front
        # end reports them with its admitted work: rows waiting for the link (behind other
        # messages, _SEND_AHEAD) were in no process's view, the writer's busy windows ended
        # while they waited and its throughput came out too high; at 5x overload the admitted
        # requests then waited seconds past what admission expected (42-65 % acknowledged
        # past the deadline in the lead's bench, 0 % before the link's flow control).
        self._unsent += n
        self._report_soon()
        left = False

        def written() -> None:
            nonlocal left
            if not left:
                left = True
                self._unsent -= n
                self._report_soon()

        try:
            await self._call("store", [str(kind), encoded.keys], encoded.payload, written)
        finally:
            written()
            # Committed or not, they left; the writer measures its commits (its views say).
            self._backlog.unqueued(n)

    async def unready(self) -> str | None:
        if self.lost:
            return "the writer process is gone"
        try:
            reason: str | None = await self._call("unready", None)
        except WriterStopped as exc:
            return str(exc)
        return reason

    async def analysis(self, wait_s: float) -> tuple[dict[str, Any] | None, str | None]:
        doc, error = await self._call("analysis", wait_s)
        return doc, error

    async def host(self, host: str) -> dict[str, Any] | None:
        doc: dict[str, Any] | None = await self._call("host", host)
        return doc
