"""zstd frames read forward, with an input that ends inside a frame reported as the error it is.

``zstandard``'s stream reader ends quietly when its input runs out, inside a frame or not, so a
truncated zstd core read as a shorter core with no word of the damage, and one cut inside its
first block (up to 128 KiB of core) as an "empty file" (issue 10: decoder damage is always
reported). When the reader ends, :class:`ZstdReader` walks the frame and block headers of the
input (RFC 8878, section 3.1) and raises :class:`EOFError` if the input ends inside a frame.

A compressed zstd block cannot be decoded in part: its sequences, which say where each literal
goes, are read from the end of their bitstream backwards (RFC 8878, section 3.1.1.3.2.1), so
unlike lz4 (:mod:`~corecensus.coredump.lz4stream`) nothing of a cut block is read. Checked with
``zstandard``'s streaming decompressor (issue 10): fed a core cut anywhere inside a compressed
block it returns the blocks before it and nothing of that one, so a core whose first block is
compressed and cut (up to 128 KiB of core, the most a block holds) has nothing decodable, and
the reason says exactly that. A raw (stored) block libzstd does hand out in part (its
``decompressobj`` returns every byte of a cut one), but ``stream_reader``, used here, may stop
at the input's end with some of them undelivered (zstandard 0.25: 64 of 99,991 bytes, by the
sizes read). A core's first block is compressed in practice (its head compresses well); a cut
raw one is reported as damage after the bytes that were read.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

from corecensus.coredump.rawinput import read_exactly, skip, skip_within

__all__ = [
    "BLOCK_MAX_BYTES",
    "EarlyEnd",
    "TruncatedZstdError",
    "ZstdReader",
    "where_input_ends_early",
]

_FRAME_MAGIC = 0xFD2FB528
_SKIPPABLE_MASK = 0xFFFFFFF0
_SKIPPABLE_MAGIC = 0x184D2A50
# Frame_Content_Size field bytes by its flag (RFC 8878 3.1.1.1.1); flag 0 is 1 byte only in a
# single-segment frame.
_FCS_BYTES = (0, 2, 4, 8)
_DICT_ID_BYTES = (0, 1, 2, 4)
_RAW_BLOCK = 0
_RLE_BLOCK = 1
# Block_Maximum_Size (RFC 8878 3.1.1.2.3): the most a block decodes to.
BLOCK_MAX_BYTES = 128 << 10


@dataclass(frozen=True, slots=True)
class EarlyEnd:
    """Where an input ends inside a zstd frame: a sentence, and for a cut inside the first block
    of the first frame, the bytes of it that are there (``present`` of ``size``) and whether it
    is compressed (a raw block is decoded in part)."""

    where: str
    first_block: tuple[int, int] | None = None
    compressed: bool = True

    def nothing_decodable(self) -> str:
        """The reason for a core of which nothing decoded."""
        if self.first_block is None or not self.compressed:
            return f"it ends before any of the core decodes ({self.where})"
        present, size = self.first_block
        return (
            f"it ends inside its first block ({present:,} of the block's {size:,} compressed "
            f"bytes, which hold up to {BLOCK_MAX_BYTES >> 10} KiB of the core); a compressed "
            "zstd block cannot be decoded in part, so nothing is decodable"
        )


def where_input_ends_early(fh: BinaryIO) -> EarlyEnd | None:
    """Where ``fh`` ends inside a zstd frame, or None if it ends between frames.

    Only headers are read; block contents are skipped. Bytes that are not a frame are left to
    the decoder to judge (it has already read them)."""
    pos = 0
    frame = 0
    while True:
        head = read_exactly(fh, 4)
        if not head:
            return None
        if len(head) < 4:
            return EarlyEnd(
                f"input ends inside the magic number of a frame at compressed offset {pos}"
            )
        (magic,) = struct.unpack("<I", head)
        if magic & _SKIPPABLE_MASK == _SKIPPABLE_MAGIC:
            size_bytes = read_exactly(fh, 4)
            skipped = struct.unpack("<I", size_bytes)[0] if len(size_bytes) == 4 else -1
            if skipped < 0 or not skip(fh, skipped):
                return EarlyEnd(f"input ends inside a skippable frame at compressed offset {pos}")
            pos += 8 + skipped
            continue
        if magic != _FRAME_MAGIC:
            return None
        frame += 1
        descriptor = read_exactly(fh, 1)
        if not descriptor:
            return EarlyEnd(
                f"input ends inside the header of frame {frame} (compressed offset {pos})"
            )
        fhd = descriptor[0]
        single_segment = bool(fhd & 0x20)
        fcs = _FCS_BYTES[fhd >> 6] or (1 if single_segment else 0)
        rest = (0 if single_segment else 1) + _DICT_ID_BYTES[fhd & 3] + fcs
        checksum = 4 if fhd & 0x04 else 0
        if not skip(fh, rest):
            return EarlyEnd(
                f"input ends inside the header of frame {frame} (compressed offset {pos})"
            )
        pos += 5 + rest
        block = 0
        while True:
            header = read_exactly(fh, 3)
            if len(header) < 3:
                return EarlyEnd(
                    f"input ends before block {block + 1} of frame {frame} "
                    f"(compressed offset {pos})"
                )
            block += 1
            word = header[0] | header[1] << 8 | header[2] << 16
            last, kind, size = word & 1, (word >> 1) & 3, word >> 3
            body = 1 if kind == _RLE_BLOCK else size
            present = skip_within(fh, body)
            if present < body:
                first = frame == 1 and block == 1
                return EarlyEnd(
                    f"input ends inside block {block} of frame {frame} "
                    f"(compressed offset {pos}, {present} of its {body} bytes there)",
                    (present, body) if first else None,
                    compressed=kind != _RAW_BLOCK,
                )
            pos += 3 + body
            if last:
                break
        if not skip(fh, checksum):
            return EarlyEnd(
                f"input ends inside the checksum of frame {frame} (compressed offset {pos})"
            )
        pos += checksum


class TruncatedZstdError(EOFError):
    """The input ends inside a zstd frame; ``end`` says where."""

    def __init__(self, end: EarlyEnd) -> None:
        super().__init__(end.where)
        self.end = end


class ZstdReader:
    """A zstd stream reader over ``open_raw()`` (every frame, under ``max_window_size``) that
    raises :class:`EOFError` instead of ending when its input ends inside a frame. The input is
    opened a second time, and only its headers walked, once the decoder has ended."""

    def __init__(self, open_raw: Callable[[], BinaryIO], max_window_size: int) -> None:
        self._open_raw = open_raw
        dctx = zstandard.ZstdDecompressor(max_window_size=max_window_size)
        # read_across_frames: systemd-coredump and `zstd` may write several frames.
        self._reader = dctx.stream_reader(open_raw(), read_across_frames=True, closefd=True)
        self._checked = False

    def read(self, n: int = -1) -> bytes:
        return self.read1(n)

    def read1(self, n: int = -1) -> bytes:
        data: bytes = self._reader.read1(n)
        if not data and not self._checked:
            self._checked = True
            fh = self._open_raw()
            try:
                early = where_input_ends_early(fh)
            finally:
                fh.close()
            if early is not None:
                raise TruncatedZstdError(early)
        return data

    def close(self) -> None:
        self._reader.close()  # type: ignore[no-untyped-call]
