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
    if seekable(fh):
        here = fh.tell()
        if fh.seek(0, 2) - here < n:
            return False
        fh.seek(here + n)
        return True
    while n > 0:
        chunk = fh.read(min(n, 1 << 20))
        if not chunk:
            return False
        n -= len(chunk)
    return True
