"""A window of words read from the core, searched by byte pattern instead of word by word.

The stack window is thousands of words, of which a few dozen are code addresses and perhaps one
is the segment word of a signal frame. Looking at every word in Python costs half a millisecond;
loading NumPy to do it costs more than the whole register pass and most of ``inspect``'s
start-up. So the window stays bytes, and the words worth a look are found with ``bytes.find``
(C speed): a code address is found by the high bytes it shares with an executable mapping, a
signal frame by its segment word. Only the words found become Python ints.
"""

from __future__ import annotations

import array
import bisect
import itertools
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import compress

__all__ = ["WordWindow", "code_pointer_indices", "prefix_patterns"]

# A mapping's addresses are found by their top bytes; fewer than this many distinct top-byte
# values per mapping, else one byte fewer is compared (more words checked one by one).
_MAX_PREFIXES = 4
_MAX_FINE_PREFIXES = 256
# Below this no code pointer (the zero page is never mapped executable in practice, and small
# integers fill stacks).
_LOWEST_CODE = 4096


@dataclass(frozen=True, slots=True)
class WordWindow:
    """``count`` words of ``word_size`` bytes from address ``start``, as the core's raw bytes
    (words not in the core read as zero); ``present`` has one byte per word (1: in the core),
    or is None when every word is."""

    start: int
    raw: bytes
    word_size: int
    little_endian: bool
    present: bytes | None = None

    @property
    def count(self) -> int:
        return len(self.raw) // self.word_size

    def any_present(self) -> bool:
        return self.count > 0 and (self.present is None or 1 in self.present)

    def is_present(self, i: int) -> bool:
        return self.present is None or self.present[i] == 1

    def value(self, i: int) -> int:
        w = self.word_size
        return int.from_bytes(
            self.raw[i * w : (i + 1) * w], "little" if self.little_endian else "big"
        )

    def with_byte(self, offset: int, byte: int) -> list[int]:
        """Indices of the present words whose byte ``offset`` (in memory order) is ``byte``:
        one column of the window (``raw[offset::w]``), mapped to 0/1 in C."""
        table = bytearray(256)
        table[byte] = 1
        flags = self.raw[offset :: self.word_size].translate(table)
        if self.present is not None:
            both = int.from_bytes(flags, "little") & int.from_bytes(self.present, "little")
            flags = both.to_bytes(self.count, "little")
        # few words match (a signal frame's segment word): find them rather than walk all
        out = []
        i = flags.find(1)
        while i >= 0:
            out.append(i)
            i = flags.find(1, i + 1)
        return out


def prefix_patterns(
    ranges: Iterable[tuple[int, int]], word_size: int, little_endian: bool
) -> dict[bytes, int]:
    """Byte patterns (pattern -> its offset in a word) that every word holding an address in
    one of ``ranges`` (first, last; both included) contains: the address's top bytes, as many
    as keep each range to at most :data:`_MAX_PREFIXES` values."""
    out: dict[bytes, int] = {}
    bits = 8 * word_size
    for start, end in ranges:
        first, last = max(start, _LOWEST_CODE), min(end, (1 << bits) - 1)
        if last < first:
            continue
        shift = 8
        while shift < bits - 8 and (last >> shift) - (first >> shift) >= _MAX_PREFIXES:
            shift += 8
        # A prefix of zeros would match every small integer on the stack (a non-PIE program
        # near 0x400000): compare one byte more, even if that takes more patterns.
        while (
            shift > 8
            and first >> shift == 0
            and (last >> (shift - 8)) - (first >> (shift - 8)) < _MAX_FINE_PREFIXES
        ):
            shift -= 8
        size = word_size - shift // 8
        for top in range(first >> shift, (last >> shift) + 1):
            if little_endian:
                out[top.to_bytes(size, "little")] = shift // 8
            else:
                out[top.to_bytes(size, "big")] = 0
    return out


def _union(starts: Sequence[int], lasts: Sequence[int]) -> list[int]:
    """The ranges' union as sorted boundaries ``[a0, b0, a1, b1, ...]``, each ``[a, b)``: an
    address is inside iff ``bisect_right(bounds, v)`` is odd."""
    bounds: list[int] = []
    for start, last in sorted(zip(starts, lasts, strict=True)):
        first = max(start, _LOWEST_CODE)
        if last < first:
            continue
        if bounds and first <= bounds[-1]:
            bounds[-1] = max(bounds[-1], last + 1)
        else:
            bounds += [first, last + 1]
    return bounds


def code_pointer_indices(
    window: WordWindow, starts: Sequence[int], lasts: Sequence[int]
) -> list[int]:
    """Indices of the present words that point into one of the ranges ``[starts[i],
    lasts[i]]`` (ranges below 4096 excluded), in order.

    Two ways, the same answer (tests/coredump/test_words.py holds them to it): NumPy when the
    process has already loaded it (ingest, backfill: thousands of cores, 4x faster per core),
    else bytes operations that need no import (``inspect`` as a command, the agent's core
    handler: loading NumPy would cost more than the whole register pass).
    """
    if "numpy" in sys.modules:
        return _indices_numpy(window, starts, lasts)
    return _indices_bytes(window, starts, lasts)


def _indices_numpy(window: WordWindow, starts: Sequence[int], lasts: Sequence[int]) -> list[int]:
    import numpy as np

    union = _union(starts, lasts)
    if union and union[-1] >> (8 * window.word_size):
        # a range up to the last address: no word is above it, and 2**64 fits no uint64
        union.pop()
    bounds = np.array(union, dtype=np.uint64)
    if not len(bounds) or not window.count:
        return []
    order = "<" if window.little_endian else ">"
    dtype = np.dtype(order + ("u8" if window.word_size == 8 else "u4"))
    values = np.frombuffer(window.raw, dtype=dtype).astype(np.uint64)
    keep = values >= bounds[0]
    if window.present is not None:
        keep &= np.frombuffer(window.present, dtype=np.uint8).astype(bool)
    cand = np.flatnonzero(keep)
    inside = (np.searchsorted(bounds, values[cand], side="right") & 1) == 1
    found: list[int] = cand[inside].tolist()
    return found


def _indices_bytes(window: WordWindow, starts: Sequence[int], lasts: Sequence[int]) -> list[int]:
    """:func:`code_pointer_indices` without NumPy.

    Each step runs in C over the whole window: a byte column per compared top byte
    (``raw[k::w]``), mapped to 0/1 by the bytes the ranges allow there (``translate``), the
    columns and the presence mask ANDed as big integers; the surviving words (code addresses,
    and pointers that merely share their high bytes, such as heap next to the executable) are
    then checked exactly against the ranges' union with ``bisect``, still through ``map``
    and ``compress`` rather than a Python loop.
    """
    bounds = _union(starts, lasts)
    patterns = prefix_patterns(
        zip(starts, lasts, strict=True), window.word_size, window.little_endian
    )
    n, w, raw = window.count, window.word_size, window.raw
    if not bounds or not patterns or not n:
        return []
    # The byte columns every pattern compares (LE patterns end at the word's end, BE ones
    # start at its beginning).
    lo = max(patterns.values())
    hi = min(at + len(p) for p, at in patterns.items())
    tables: dict[int, bytearray] = {}
    for pattern, at in patterns.items():
        for k in range(lo, hi):
            tables.setdefault(k, bytearray(256))[pattern[k - at]] = 1
    flags = int.from_bytes(window.present, "little") if window.present is not None else -1
    for k, table in tables.items():
        flags &= int.from_bytes(raw[k::w].translate(table), "little")
    if not flags:
        return []
    mask = flags.to_bytes(n, "little")
    values = array.array("Q" if w == 8 else "I", raw[: n * w])
    if window.little_endian != (sys.byteorder == "little"):
        values.byteswap()
    found = map(bisect.bisect_right, itertools.repeat(bounds), compress(values, mask))
    return list(compress(compress(range(n), mask), map((1).__and__, found)))
