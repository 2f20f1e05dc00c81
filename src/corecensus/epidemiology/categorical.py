"""A categorical column: ``int32`` codes into a vocabulary of strings.

Every categorical column of the epidemiology's tables (host, population, service, version, CPU
model, microcode, kernel) is one :class:`Categorical`, so codes never travel without the
vocabulary they index. Code ``-1`` means unknown. Vocabularies built here are sorted, so the
same values always get the same codes whatever order they arrived in.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from corecensus.errors import MetadataError

__all__ = ["Categorical", "CategoryEncoder"]

I32 = NDArray[np.int32]


@dataclass(frozen=True, slots=True, eq=False)
class Categorical:
    """``codes[i]`` indexes ``vocab`` (``-1``: unknown).

    Construction validates: codes are a 1-D integer array within ``[-1, len(vocab))``, stored as
    ``int32`` (not copied when already ``int32``).
    """

    codes: I32
    vocab: tuple[str, ...]

    def __init__(self, codes: ArrayLike, vocab: Sequence[str], *, name: str = "column") -> None:
        arr = np.asarray(codes)
        if arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
            raise MetadataError(f"column {name!r} must be a 1-D integer array, got {arr.dtype}")
        arr = arr.astype(np.int32, copy=False)
        if arr.size:
            lo, hi = int(arr.min()), int(arr.max())
            if lo < -1 or hi >= len(vocab):
                raise MetadataError(
                    f"column {name!r} has codes in [{lo}, {hi}] outside [-1, {len(vocab) - 1}]"
                )
        object.__setattr__(self, "codes", arr)
        object.__setattr__(self, "vocab", tuple(vocab))

    def __len__(self) -> int:
        return len(self.codes)

    @classmethod
    def unknown(cls, n: int) -> Categorical:
        """``n`` unknown values over an empty vocabulary."""
        return cls(np.full(n, -1, dtype=np.int32), ())

    @classmethod
    def encode(cls, values: Sequence[str | None]) -> Categorical:
        """Codes and a sorted vocabulary for a column of strings; ``None`` and ``""`` are
        unknown."""
        encoder = CategoryEncoder()
        for v in values:
            encoder.add(v)
        return encoder.finish()

    def require_known(self, name: str) -> Categorical:
        """This column, checked to have no unknown values (host and population keys)."""
        if self.codes.size and int(self.codes.min()) < 0:
            raise MetadataError(f"column {name!r} has unknown (-1) codes")
        return self

    def decode(self) -> list[str | None]:
        """The values as strings, ``None`` for unknown (for small columns: one object each)."""
        return [self.vocab[c] if c >= 0 else None for c in self.codes.tolist()]

    def fill_unknown(self, name: str) -> Categorical:
        """This column with unknown values named ``name`` (merged into the sorted vocabulary):
        what :meth:`encode` gives when ``name`` stands in for each unknown value."""
        if not self.codes.size or int(self.codes.min()) >= 0:
            return self
        vocab = tuple(sorted({*self.vocab, name}))
        where = {v: i for i, v in enumerate(vocab)}
        table = np.array([where[v] for v in self.vocab] + [where[name]], dtype=np.int32)
        return Categorical(table[self.codes], vocab)

    def remap(self, vocab: Sequence[str]) -> NDArray[np.int64]:
        """Each code of this column as a code into ``vocab`` (``-1`` where absent or unknown)."""
        where = {v: i for i, v in enumerate(vocab)}
        table = np.array([where.get(v, -1) for v in self.vocab] + [-1], dtype=np.int64)
        return table[self.codes]


class CategoryEncoder:
    """Encodes a stream of strings one at a time into compact codes (4 bytes a value, no list
    of strings kept), then sorts the vocabulary at the end, as :meth:`Categorical.encode`."""

    __slots__ = ("_codes", "_index")

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self._codes = array("i")

    def add(self, value: str | None) -> None:
        if not value:
            self._codes.append(-1)
            return
        code = self._index.get(value)
        if code is None:
            code = self._index[value] = len(self._index)
        self._codes.append(code)

    def finish(self) -> Categorical:
        arrival = (
            np.frombuffer(self._codes, dtype=np.int32) if self._codes else np.zeros(0, np.int32)
        )
        vocab = sorted(self._index)
        # new code of each arrival-order code; the extra last entry keeps -1 as -1
        rank = np.empty(len(vocab) + 1, dtype=np.int32)
        rank[np.array([self._index[v] for v in vocab], dtype=np.intp)] = np.arange(len(vocab))
        rank[-1] = -1
        return Categorical(rank[arrival], tuple(vocab))
