"""lz4 frames read forward, with the readable start of a block the input ends inside.

``lz4.frame`` hands out a block only once all of it has arrived, so an lz4 core cut inside its
first block (the ``lz4`` command writes 4 MiB blocks; most cores are smaller) decoded to nothing
and came out ``unparsed``, where xz and zstd cut alike decode up to the cut and give ``partial``
(issue 10). python-lz4 exposes no partial decode (``lz4.block.decompress`` wants the whole
block), so when the frame decoder reports that the input ended early, :class:`Lz4Reader` finds
the block the input ends inside and decodes the sequences of it that arrived whole with a small
block decoder (:func:`decode_block_prefix`), then reports the truncation as the error it was.

Formats, as specified in the lz4 repository (doc/lz4_Frame_format.md, doc/lz4_Block_format.md):
a frame is a 4-byte magic, a descriptor (FLG, BD, optional 8-byte content size, optional 4-byte
dictionary id, a header checksum byte), then blocks, each a little-endian 32-bit size whose high
bit marks stored (uncompressed) data, the data, and an optional 4-byte block checksum; a zero
size ends the frame (then an optional 4-byte content checksum). A block is a run of sequences:
a token (literal length, match length - 4, 4 bits each, 15 meaning "more bytes follow, each
added, until one is not 255"), the literals, a 2-byte little-endian offset back into the output
(up to 64 KiB, into earlier blocks of the frame when blocks are linked), the match.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import BinaryIO

import lz4.frame

from corecensus.coredump.rawinput import read_exactly, seekable, skip

__all__ = ["Lz4Reader", "TruncatedBlock", "decode_block_prefix", "find_truncated_block"]

_FRAME_MAGIC = 0x184D2204
# Skippable frames: magic 0x184D2A50 to 0x184D2A5F, a 4-byte size, that many bytes.
_SKIPPABLE_MASK = 0xFFFFFFF0
_SKIPPABLE_MAGIC = 0x184D2A50
_STORED_BIT = 0x80000000
# BD bits 6-4: 4 -> 64 KiB, 5 -> 256 KiB, 6 -> 1 MiB, 7 -> 4 MiB.
_BLOCK_MAX = {4: 64 << 10, 5: 256 << 10, 6: 1 << 20, 7: 4 << 20}
# How far back a match may reach (the offset is 16 bits).
HISTORY_BYTES = 64 << 10
_MIN_MATCH = 4


class TruncatedBlock:
    """The arrived part of the block the input ends inside."""

    __slots__ = ("data", "index", "max_size", "offset", "stored")

    def __init__(self, data: bytes, stored: bool, max_size: int, offset: int, index: int) -> None:
        self.data = data
        self.stored = stored
        self.max_size = max_size
        # Where the block's data starts in the compressed input, and its number in the input
        # (1 = the first data block).
        self.offset = offset
        self.index = index


def decode_block_prefix(src: bytes, history: bytes, limit: int) -> bytes:
    """What the sequences at the start of LZ4 block ``src`` decode to, up to the first one that
    did not arrive whole (its literals that did arrive are kept: they are the data itself).

    ``history`` is the output before the block (matches may reach into it when blocks are
    linked); ``limit`` caps the output (a block never decodes to more than its frame's maximum
    block size, so a run of 255s claiming a gigabyte-long match stops there). Decoding also stops
    at an offset that points before the history or at zero: the bytes after it are not data.
    """
    out = bytearray(history[-HISTORY_BYTES:])
    base = len(out)
    cap = base + limit
    i, n = 0, len(src)
    while i < n:
        token = src[i]
        i += 1
        literals, i = _length(src, i, token >> 4)
        if i > n:
            break
        take = min(literals, n - i, cap - len(out))
        out += src[i : i + take]
        i += take
        if take < literals or i + 2 > n:
            break  # cut inside the literals or the offset (or the block's last, literal-only run)
        offset = src[i] | (src[i + 1] << 8)
        i += 2
        match, i = _length(src, i, token & 15)
        if i > n:
            break
        match += _MIN_MATCH
        if offset == 0 or offset > len(out) or len(out) + match > cap:
            break  # not a block a real encoder wrote; nothing after this is data
        start = len(out) - offset
        if offset >= match:
            out += out[start : start + match]
        else:  # the match overlaps its own output: a repeated pattern of `offset` bytes
            pattern = bytes(out[start:])
            out += (pattern * (match // offset + 1))[:match]
    return bytes(out[base:])


def _block_data(fh: BinaryIO, size: int) -> bytes | None:
    """None after moving past ``size`` bytes of block data; what there is of them if the input
    ends first. A file is seeked past; a pipe's spool is read (at most one block at a time)."""
    if seekable(fh):
        here = fh.tell()
        if fh.seek(0, 2) - here >= size:
            fh.seek(here + size)
            return None
        fh.seek(here)
    data = read_exactly(fh, size)
    return None if len(data) == size else data


def find_truncated_block(fh: BinaryIO) -> TruncatedBlock | None:
    """Walk the frames and block headers of ``fh`` (skipping block data, reading none of it but
    the last block's) to the data block the input ends inside; None if the input ends elsewhere
    (in a header, a checksum, between frames) or is not an lz4 frame there."""
    pos = 0
    index = 0
    while True:
        head = read_exactly(fh, 4)
        if len(head) < 4:
            return None
        (magic,) = struct.unpack("<I", head)
        pos += 4
        if magic & _SKIPPABLE_MASK == _SKIPPABLE_MAGIC:
            size_bytes = read_exactly(fh, 4)
            skipped = struct.unpack("<I", size_bytes)[0] if len(size_bytes) == 4 else -1
            if skipped < 0 or not skip(fh, skipped):
                return None
            pos += 4 + skipped
            continue
        if magic != _FRAME_MAGIC:
            return None
        descriptor = read_exactly(fh, 2)
        if len(descriptor) < 2:
            return None
        flg, bd = descriptor
        block_max = _BLOCK_MAX.get((bd >> 4) & 7)
        if block_max is None:
            return None
        block_checksum = 4 if flg & 0x10 else 0
        content_checksum = 4 if flg & 0x04 else 0
        rest = (8 if flg & 0x08 else 0) + (4 if flg & 0x01 else 0) + 1  # size, dict id, HC
        if not skip(fh, rest):
            return None
        pos += 2 + rest
        while True:
            size_bytes = read_exactly(fh, 4)
            if len(size_bytes) < 4:
                return None
            pos += 4
            (word,) = struct.unpack("<I", size_bytes)
            if word == 0:  # end mark
                if not skip(fh, content_checksum):
                    return None
                pos += content_checksum
                break
            size = word & ~_STORED_BIT
            if size > block_max:
                return None
            index += 1
            data = _block_data(fh, size)
            if data is not None:
                return TruncatedBlock(data, bool(word & _STORED_BIT), block_max, pos, index)
            pos += size
            if not skip(fh, block_checksum):
                return None
            pos += block_checksum


class Lz4Reader:
    """``lz4.frame.LZ4FrameFile`` over ``open_raw()``, which also yields the whole sequences of
    a block the input ends inside before raising the truncation (see module docstring).

    Keeps the last 64 KiB of output (what a linked block's matches may reach back into); opens
    the input a second time only when it turns out truncated."""

    def __init__(self, open_raw: Callable[[], BinaryIO]) -> None:
        self._open_raw = open_raw
        self._raw = open_raw()
        self._frames = lz4.frame.LZ4FrameFile(self._raw, mode="rb")
        self._history = bytearray()
        self._tail = b""
        self._ended: EOFError | None = None

    def read(self, n: int = -1) -> bytes:
        return self.read1(n)

    def read1(self, n: int = -1) -> bytes:
        if self._tail:
            size = len(self._tail) if n < 0 else n
            out, self._tail = self._tail[:size], self._tail[size:]
            return out
        if self._ended is not None:
            raise self._ended
        try:
            data: bytes = self._frames.read1(n)
        except EOFError as exc:
            self._ended = self._salvage(exc)
            if self._tail:
                return self.read1(n)
            raise self._ended from exc
        self._history += data
        if len(self._history) > 2 * HISTORY_BYTES:
            del self._history[:-HISTORY_BYTES]
        return data

    def _salvage(self, exc: EOFError) -> EOFError:
        """Decode what arrived of the last block into ``_tail``; the error that ends the read."""
        fh = self._open_raw()
        try:
            block = find_truncated_block(fh)
        finally:
            fh.close()
        if block is None:
            return exc
        if block.stored:
            # Stored data needs no decoding, and the frame decoder already handed out every
            # byte of it that arrived: there is nothing more to read.
            return EOFError(
                f"input ends inside stored block {block.index} (compressed offset "
                f"{block.offset}, {len(block.data)} bytes of it present)"
            )
        self._tail = decode_block_prefix(block.data, bytes(self._history), block.max_size)
        return EOFError(
            f"input ends inside block {block.index} (compressed offset {block.offset}, "
            f"{len(block.data)} bytes of it present); its {len(self._tail)} decodable bytes "
            "were read"
        )

    def close(self) -> None:
        try:
            self._frames.close()
        finally:
            self._raw.close()


def _length(src: bytes, i: int, nibble: int) -> tuple[int, int]:
    """A sequence's literal or match length from its token nibble, with the extra bytes LZ4
    adds when the nibble is 15 (each 255 adds 255 and goes on; the first other byte ends it),
    and where reading goes on; past ``len(src)`` when the extra bytes were cut off."""
    if nibble != 15:
        return nibble, i
    n = len(src)
    while i < n and src[i] == 255:
        nibble += 255
        i += 1
    if i >= n:
        return nibble, n + 1
    return nibble + src[i], i + 1
