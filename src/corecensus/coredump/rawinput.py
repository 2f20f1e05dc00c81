"""Forward reads of a compressed core's own bytes, for the frame walks that find where a
truncated input ends (:mod:`~corecensus.coredump.lz4stream`,
:mod:`~corecensus.coredump.zstdstream`). A file is seeked over; a pipe's spool is read."""

from __future__ import annotations

from typing import BinaryIO

__all__ = ["read_exactly", "seekable", "skip"]


def seekable(fh: BinaryIO) -> bool:
    check = getattr(fh, "seekable", None)
    return bool(check is not None and check())


def read_exactly(fh: BinaryIO, n: int) -> bytes:
    """``n`` bytes, or fewer if the input ends first."""
    out = bytearray()
    while len(out) < n:
        chunk = fh.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def skip(fh: BinaryIO, n: int) -> bool:
    """Move ``n`` bytes on; False if the input ends first."""
    return skip_within(fh, n) == n


def skip_within(fh: BinaryIO, n: int) -> int:
    """Move up to ``n`` bytes on: how many there were before the input ended."""
    if seekable(fh):
        here = fh.tell()
        moved = max(0, min(n, fh.seek(0, 2) - here))
        fh.seek(here + moved)
        return moved
    moved = 0
    while moved < n:
        chunk = fh.read(min(n - moved, 1 << 20))
        if not chunk:
            break
        moved += len(chunk)
    return moved
