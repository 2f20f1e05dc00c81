"""The ids of the crashes a store holds, as 64-bit digests: what lets the one writer of a store
skip asking the database which of a batch's crashes it holds already.

Asking cost the collector's writer a query per group commit (2-4 ms of CPU for 20 records on
this machine, whatever the store's size), and that query scans the whole ``core_id`` column
once ids are content hashes (no row group can be skipped by its min/max), so it grows with the
store. A digest not in the set is a crash certainly not stored, inserted without asking; a
digest in the set is a crash probably stored (a retried batch) or, rarely, another id with the
same 64 bits, and only those are asked about. The table's primary key stays the final word: an
insert it refuses means the set was behind (the caller reloads it and asks the database).

The digest is Python's own string hash (SipHash, seeded per process): the set is read from the
store by the process that uses it, so the digests need mean nothing elsewhere, and it is the
cheapest to compute for every stored id -- 0.5 us each with the ids fetched in chunks, where
MD5 in DuckDB (``md5_number_upper``) took 1.7 us and in Python 2.5 us (2 million ids, load 5).

Memory: 8 bytes per stored crash in a sorted array (80 MB at ten million crashes), plus a small
set of the ids added since it was last sorted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["KnownCrashIds", "crash_id_digest"]

# Added digests kept in a set until there are this many (or an eighth of the sorted ones).
_MERGE_MIN = 1 << 16

# 64 bits of a crash id, valid within this process (not for security: a collision costs one
# query, and the seed keeps anyone from choosing ids that collide).
crash_id_digest: Callable[[str], int] = hash


class KnownCrashIds:
    """The digests of every crash a store holds (loaded once, then added to by its writer)."""

    def __init__(self, stored: npt.NDArray[np.int64]) -> None:
        self._sorted = np.sort(np.asarray(stored, dtype=np.int64))
        self._recent: set[int] = set()

    def __len__(self) -> int:
        return int(self._sorted.size) + len(self._recent)

    def may_hold(self, digests: Sequence[int]) -> list[bool]:
        """For each digest: False if no stored crash has it (certain), True if one may."""
        if not digests:
            return []
        wanted = np.fromiter(digests, dtype=np.int64, count=len(digests))
        found = np.zeros(len(digests), dtype=bool)
        if self._sorted.size:
            pos = np.searchsorted(self._sorted, wanted)
            inside = pos < self._sorted.size
            found[inside] = self._sorted[pos[inside]] == wanted[inside]
        return [bool(f) or d in self._recent for f, d in zip(found.tolist(), digests, strict=True)]

    def add(self, digests: Iterable[int]) -> None:
        """Record crashes now stored (committed)."""
        self._recent.update(digests)
        if len(self._recent) > max(_MERGE_MIN, self._sorted.size // 8):
            added = np.fromiter(self._recent, dtype=np.int64, count=len(self._recent))
            self._sorted = np.sort(np.concatenate([self._sorted, added]))
            self._recent.clear()
