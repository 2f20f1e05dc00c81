"""Byte sources for core dumps: plain files, compressed files, stdin, and truncated heads.

Everything above this module reads a core through :class:`CoreSource.pread`, and reads only what
it needs (headers, notes, a window of stack). For a plain file that is a handful of ``pread``
calls, so time and memory do not depend on the core's size, even for a 100 GB sparse core.

Compressed cores (systemd-coredump writes zstd) cannot be read at random offsets, so
:class:`StreamSource` decompresses forward, keeps the first ``head_cache`` bytes (where headers and
notes live) and skips over the rest in fixed-size chunks; reading backwards restarts the stream.
Memory stays bounded; time grows with the offset of the furthest byte read, which for a core is
where the stack lies. ``max_stream_bytes`` caps that walk so a decompression bomb costs bounded
time, and the parser reports ``partial`` instead of reading on.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol, cast

from corecensus.errors import CompressionError, CoreError
from corecensus.outside import open_regular, open_regular_fd

__all__ = [
    "CoreSource",
    "FileSource",
    "StreamSource",
    "open_core",
]

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_LZ4_MAGIC = b"\x04\x22\x4d\x18"
_XZ_MAGIC = b"\xfd7zXZ\x00"

# The head of a core (ELF header, program headers, notes) is small; keep up to this much of a
# decompressed stream in memory so the parser can revisit it for free.
HEAD_CACHE_BYTES = 16 << 20
# Skip-ahead chunk when walking a stream to a far offset.
_CHUNK = 1 << 20
# How far past the last byte a parse read a compressed stream is decoded to reach its end and
# have its checksum verified (see StreamSource.check_integrity).
VERIFY_BYTES = 64 << 20
# Default cap on how far into a decompressed stream a parse may walk (bytes).
DEFAULT_MAX_STREAM_BYTES = 64 << 30
# Decoder memory caps (issue 10): a 537 KB `zstd --long=31` core asked for a 2 GiB window and a
# 1.7 MB .xz with a 3 GiB dictionary for 3.2 GB. zstd's own default limit without --long is a
# 2**27 window (ZSTD_WINDOWLOG_LIMIT_DEFAULT in zstd's lib/zstd.h); systemd-coredump and `xz -9`
# stay far below both (8 MiB window, 64 MiB dictionary).
ZSTD_MAX_WINDOW_BYTES = 1 << 27
XZ_MEMLIMIT_BYTES = 256 << 20
# How long a read of stdin may wait for bytes, in seconds, before the core is given up as
# stalled (a pipe whose writer neither writes nor closes).
DEFAULT_STDIN_TIMEOUT = 60.0


class CoreSource(Protocol):
    """Random-access reads over a (possibly truncated) core image."""

    name: str
    compression: str | None
    # Set when the bytes stopped being readable part-way (a corrupt or truncated compressed
    # stream); everything after that point reads as absent, and the record must say so.
    damage: str | None

    def pread(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``; fewer at the end of the visible data."""
        ...

    def visible_size(self) -> int | None:
        """Bytes that can be read, when known without reading them all."""
        ...

    def prefetch(self, ranges: list[tuple[int, int]]) -> None:
        """Hint: these (offset, size) ranges will be read."""
        ...

    def check_integrity(self, expected_end: int) -> None:
        """Let the decoder verify its checksums if that is cheap (sets ``damage`` if not)."""
        ...

    def close(self) -> None: ...


PREFETCH_LIMIT = 64 << 20


def _merge(ranges: list[tuple[int, int]], gap: int = 1 << 16) -> list[tuple[int, int]]:
    """Merge (offset, size) ranges that overlap or lie within ``gap`` bytes of each other."""
    out: list[list[int]] = []
    for off, size in sorted(r for r in ranges if r[1] > 0):
        if out and off <= out[-1][0] + out[-1][1] + gap:
            out[-1][1] = max(out[-1][1], off + size - out[-1][0])
        else:
            out.append([off, size])
    return [(o, s) for o, s in out]


class FileSource:
    """A plain core file, read with ``os.pread``; ``head_bytes`` hides everything after it."""

    compression: str | None = None
    damage: str | None = None

    def __init__(self, path: Path, head_bytes: int | None = None, *, fd: int | None = None) -> None:
        """Open ``path``, or adopt ``fd`` (already open on it; closed by :meth:`close`)."""
        self.name = str(path)
        if fd is None:
            try:
                fd = open_regular_fd(path)
            except OSError as exc:
                raise CoreError(f"cannot open: {exc.strerror}", str(path)) from exc
        self._fd = fd
        size = os.fstat(self._fd).st_size
        self._size = size if head_bytes is None else min(size, head_bytes)

    def pread(self, offset: int, size: int) -> bytes:
        if offset < 0 or size <= 0 or offset >= self._size:
            return b""
        size = min(size, self._size - offset)
        try:
            return os.pread(self._fd, size, offset)
        except OSError as exc:
            raise CoreError(f"read failed at offset {offset}: {exc.strerror}", self.name) from exc

    def visible_size(self) -> int | None:
        return self._size

    def prefetch(self, ranges: list[tuple[int, int]]) -> None:
        """Random access is cheap here; nothing to do."""

    def check_integrity(self, expected_end: int) -> None:
        """A plain file has no checksum to verify."""

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class StreamSource:
    """A forward-only decompressed stream made to look random-access (see module docstring)."""

    def __init__(
        self,
        name: str,
        opener: Callable[[], BinaryIO],
        compression: str | None,
        head_bytes: int | None = None,
        max_stream_bytes: int = DEFAULT_MAX_STREAM_BYTES,
        restartable: bool = True,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.compression = compression
        self._opener = opener
        self._limit = head_bytes
        self._max = max_stream_bytes
        self._restartable = restartable
        self._on_close = on_close
        self._stream: BinaryIO | None = None
        self._pos = 0
        self._head = bytearray()
        self._eof_at: int | None = None
        self._captured: list[tuple[int, bytes]] = []
        self.restarts = 0
        self.damage: str | None = None
        self._open()

    def _open(self) -> None:
        if self._stream is not None:
            self._stream.close()
        self._stream = self._opener()
        self._pos = 0

    def _read_stream(self, n: int) -> bytes:
        assert self._stream is not None
        # The decoders are imported when a compressed core is opened, not with this module.
        import lzma

        import zstandard

        try:
            # read1: one decoder step at most, so the bytes decoded before a damaged block are
            # returned before the damage is met (read(n) would drop them with the error).
            read1 = getattr(self._stream, "read1", None)
            data = read1(n) if read1 is not None else self._stream.read(n)
        except (zstandard.ZstdError, lzma.LZMAError, RuntimeError, EOFError, OSError) as exc:
            # lz4 raises RuntimeError on corrupt frames; all mean the same to the caller.
            if self._pos == 0:
                raise CompressionError(_decoder_problem(self.compression, exc), self.name) from exc
            # Damage after the head: what was read so far stays usable, and the record says
            # where the readable part ends (an lz4 core corrupt mid-stream once came out `ok`
            # with an empty stack window and a missing anomaly).
            self._eof_at = self._pos
            if self.damage is None:
                self.damage = (
                    f"{self.compression} stream unreadable after {self._pos} decompressed bytes "
                    f"({exc}); memory beyond that point is missing"
                )
            return b""
        if not data:
            self._eof_at = self._pos
        self._pos += len(data)
        if len(self._head) < HEAD_CACHE_BYTES and self._pos - len(data) == len(self._head):
            self._head += data[: HEAD_CACHE_BYTES - len(self._head)]
        return data

    def _visible_end(self, offset: int, size: int) -> int:
        end = offset + size
        if self._limit is not None:
            end = min(end, self._limit)
        return end

    def pread(self, offset: int, size: int) -> bytes:
        end = self._visible_end(offset, size)
        if offset < 0 or end <= offset:
            return b""
        if self._eof_at is not None and offset >= self._eof_at:
            return b""
        if end <= len(self._head):
            return bytes(self._head[offset:end])
        for start, data in self._captured:
            if start <= offset and end <= start + len(data):
                return data[offset - start : end - start]
        if end > self._max:
            raise CompressionError(
                f"reading offset {end:#x} would decompress past the {self._max >> 20} MiB limit "
                "of a compressed core",
                self.name,
            )
        if offset < self._pos:
            if not self._restartable:
                raise CoreError("stdin stream cannot be re-read backwards", self.name)
            self.restarts += 1
            self._open()
        # Skip forward without keeping what is skipped.
        while self._pos < offset:
            if not self._read_stream(min(_CHUNK, offset - self._pos)):
                return b""
        out = bytearray()
        while self._pos < end:
            chunk = self._read_stream(min(_CHUNK, end - self._pos))
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def visible_size(self) -> int | None:
        return None

    def prefetch(self, ranges: list[tuple[int, int]]) -> None:
        """Capture ``(offset, size)`` ranges in one forward pass, so later reads need no restart.

        The total kept is capped at :data:`PREFETCH_LIMIT`; reads outside the captured ranges
        still work, at the cost of a restart.
        """
        kept = 0
        for offset, size in sorted(_merge(ranges)):
            if kept + size > PREFETCH_LIMIT:
                break
            try:
                data = self.pread(offset, size)
            except CompressionError:
                break
            if data:
                self._captured.append((offset, data))
                kept += len(data)

    def check_integrity(self, expected_end: int) -> None:
        """Decompress on to the end of the stream when it lies at most
        :data:`VERIFY_BYTES` past what was read, so that the decoder checks the stream's
        checksum (lz4 content checksum, zstd frame checksum, xz check).

        Damage inside a block that still decodes gives wrong bytes and no error until that
        check: an lz4 core corrupt mid-stream once came out ``ok`` with an empty stack window.
        The stack is usually among the last segments of a core, so the rest is short.
        """
        if self._eof_at is not None or self.damage is not None or self._stream is None:
            return
        stop = max(expected_end, self._pos) + VERIFY_BYTES
        if expected_end - self._pos > VERIFY_BYTES:
            return
        while self._pos < stop and self._read_stream(_CHUNK):
            pass

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self._on_close is not None:
            self._on_close()
            self._on_close = None


def _sniff(head: bytes) -> str | None:
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    if head.startswith(_LZ4_MAGIC):
        return "lz4"
    if head.startswith(_XZ_MAGIC):
        return "xz"
    return None


def _decoder_problem(compression: str | None, exc: BaseException) -> str:
    text = str(exc)
    if "memory" in text.lower():  # zstd: "...too much memory...", xz: "Memory usage limit..."
        cap = ZSTD_MAX_WINDOW_BYTES if compression == "zstd" else XZ_MEMLIMIT_BYTES
        return (
            f"{compression} stream needs more decoder memory than the {cap >> 20} MiB cap "
            f"(a decompression bomb, or an unusually large window): {text}"
        )
    if isinstance(exc, EOFError):
        if compression == "zstd":  # zstdstream is loaded already
            from corecensus.coredump.zstdstream import TruncatedZstdError

            if isinstance(exc, TruncatedZstdError):
                return f"truncated zstd stream: {exc.end.nothing_decodable()}"
        return f"truncated {compression} stream: it ends before any of the core decodes ({text})"
    return f"corrupt {compression} stream: {text}"


def _decompressing_reader(open_raw: Callable[[], BinaryIO], compression: str) -> BinaryIO:
    """A decompressing reader of ``open_raw()``, which it owns (and closes). The lz4 reader may
    call ``open_raw`` once more, to find the block a truncated input ends inside."""
    # Imported here: a plain core (most of them) never loads a decoder.
    if compression == "lz4":
        from corecensus.coredump.lz4stream import Lz4Reader

        return cast(BinaryIO, Lz4Reader(open_raw))
    if compression == "zstd":
        from corecensus.coredump.zstdstream import ZstdReader

        return cast(BinaryIO, ZstdReader(open_raw, ZSTD_MAX_WINDOW_BYTES))
    raw = open_raw()
    if compression == "xz":
        return _xz_reader(raw)
    raise AssertionError(compression)


class _Closing:
    """A decompressing reader that also closes the file it reads (the xz reader leaves a file
    object it was given open)."""

    def __init__(self, reader: BinaryIO, fh: BinaryIO) -> None:
        self._reader = reader
        self._fh = fh

    def read(self, n: int = -1) -> bytes:
        return self._reader.read(n)

    def read1(self, n: int = -1) -> bytes:
        return cast(bytes, self._reader.read1(n))  # type: ignore[attr-defined]

    def close(self) -> None:
        try:
            self._reader.close()
        finally:
            self._fh.close()


def _xz_reader(fh: BinaryIO) -> BinaryIO:
    """xz (and concatenated xz streams) decoded under :data:`XZ_MEMLIMIT_BYTES`.

    lzma.LZMAFile takes no memory limit, so this builds what it builds inside (CPython
    Lib/lzma.py, LZMAFile.__init__) with one: the stdlib's ``_compression.DecompressReader``
    over an ``LZMADecompressor(memlimit=...)``.
    """
    import _compression
    import lzma

    decoder = _compression.DecompressReader(
        fh,
        lzma.LZMADecompressor,
        trailing_error=lzma.LZMAError,
        format=lzma.FORMAT_AUTO,
        memlimit=XZ_MEMLIMIT_BYTES,
    )
    return cast(BinaryIO, _Closing(cast(BinaryIO, io.BufferedReader(decoder)), fh))


def open_core(
    path: str | Path,
    head_bytes: int | None = None,
    max_stream_bytes: int = DEFAULT_MAX_STREAM_BYTES,
    stdin: BinaryIO | None = None,
    stdin_timeout: float = DEFAULT_STDIN_TIMEOUT,
) -> CoreSource:
    """Open a core by path (``-`` for stdin), detecting compression by magic, not by name.

    A read of stdin that waits more than ``stdin_timeout`` seconds for a byte raises
    :class:`CoreError` (a stalled pipe must not hang the caller)."""
    if str(path) == "-":
        raw_in = stdin if stdin is not None else sys.stdin.buffer
        # stdin cannot be rewound, so its bytes are spooled to an anonymous temporary file as
        # they are read; only the part the parse touches is ever pulled from the pipe.
        return _stdin_source(_TimedInput(raw_in, stdin_timeout), head_bytes, max_stream_bytes)
    p = Path(path)
    # One descriptor sniffs the magic and, for a plain core, becomes the FileSource's. Only a
    # regular file is read: opening a FIFO would block forever, a device never ends.
    try:
        fd = open_regular_fd(p)
    except OSError as exc:
        raise CoreError(f"cannot open: {exc.strerror}", str(p)) from exc
    try:
        magic = os.pread(fd, 8, 0)
    except OSError as exc:
        os.close(fd)
        raise CoreError(f"cannot open: {exc.strerror}", str(p)) from exc
    compression = _sniff(magic)
    if compression is None:
        return FileSource(p, head_bytes, fd=fd)
    os.close(fd)

    def opener() -> BinaryIO:
        return _decompressing_reader(lambda: open_regular(p), compression)

    return StreamSource(str(p), opener, compression, head_bytes, max_stream_bytes)


class _TimedInput:
    """Reads from a pipe that give up after ``timeout`` seconds without a byte.

    A file object without a descriptor (BytesIO in tests) is read as it is: it cannot stall.
    """

    def __init__(self, raw: BinaryIO, timeout: float) -> None:
        self._raw = raw
        self._timeout = timeout
        try:
            self._fd: int | None = raw.fileno()
        except (OSError, AttributeError, ValueError):  # io.UnsupportedOperation is an OSError
            self._fd = None

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer if that is what has arrived); b"" at the end."""
        if self._fd is None:
            return self._raw.read(n)
        import select

        ready, _w, _x = select.select([self._fd], [], [], self._timeout)
        if not ready:
            raise CoreError(f"stdin stalled: no data for {self._timeout:g} s", "<stdin>")
        try:
            return os.read(self._fd, n)
        except OSError as exc:
            raise CoreError(f"cannot read stdin: {exc.strerror or exc}", "<stdin>") from exc

    def read_exactly(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.read(n - len(out))
            if not chunk:
                break
            out += chunk
        return out


def _stdin_source(raw_in: _TimedInput, head_bytes: int | None, max_stream_bytes: int) -> CoreSource:
    magic = raw_in.read_exactly(8)
    compression = _sniff(magic)
    spool = _Spool(raw_in, magic)
    if compression is None:
        return StreamSource(
            "<stdin>", spool.reader, None, head_bytes, max_stream_bytes, on_close=spool.close
        )

    def opener() -> BinaryIO:
        return _decompressing_reader(spool.reader, compression)

    return StreamSource(
        "<stdin>", opener, compression, head_bytes, max_stream_bytes, on_close=spool.close
    )


class _Spool:
    """Tees a pipe into an unnamed temporary file so the stream can be restarted."""

    def __init__(self, raw: _TimedInput, first: bytes) -> None:
        import tempfile

        self._raw = raw
        try:
            self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
            self._file.write(first)
        except OSError as exc:
            raise _spool_error(exc) from exc
        self._written = len(first)
        self._done = False

    def _fill_to(self, n: int) -> None:
        while not self._done and self._written < n:
            chunk = self._raw.read(min(_CHUNK, n - self._written))
            if not chunk:
                self._done = True
                break
            try:
                self._file.seek(self._written)
                self._file.write(chunk)
                self._file.flush()
            except OSError as exc:  # ENOSPC in a nearly full $TMPDIR
                raise _spool_error(exc) from exc
            self._written += len(chunk)

    def reader(self) -> BinaryIO:
        return _SpoolReader(self)  # type: ignore[return-value]

    def close(self) -> None:
        self._file.close()


def _spool_error(exc: OSError) -> CoreError:
    import tempfile

    return CoreError(
        f"cannot keep stdin in {tempfile.gettempdir()} ($TMPDIR): {exc.strerror or exc}",
        "<stdin>",
    )


class _SpoolReader(io.RawIOBase):
    def __init__(self, spool: _Spool) -> None:
        self._spool = spool
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        n = len(buf)
        self._spool._fill_to(self._pos + n)
        self._spool._file.seek(self._pos)
        data = self._spool._file.read(min(n, self._spool._written - self._pos))
        buf[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = _CHUNK
        b = bytearray(n)
        got = self.readinto(memoryview(b))
        return bytes(b[:got])

    def close(self) -> None:  # the spool outlives its readers
        super().close()
