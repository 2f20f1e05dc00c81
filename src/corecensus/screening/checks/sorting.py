"""Sorting: NumPy's SIMD sorts (x86-simd-sort, AVX2/AVX-512 sorting networks) against Python's
timsort, plus stable sort, argsort and partition invariants.

Sorting mixes compares, branches, shuffles and memory traffic; a wrong answer shows up as an
unsorted result, a lost or duplicated element, or a disagreement between two algorithms.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from corecensus.screening.checks.protocol import CheckContext, Observation, Tally

__all__ = ["Sorting"]


class Sorting:
    name = "sorting"
    family = "sort"
    description = "NumPy SIMD quicksort vs timsort vs stable sort; argsort and partition"

    def run(self, ctx: CheckContext) -> Observation:
        rng = np.random.default_rng(ctx.seed)
        tally = Tally("SIMD sort equals timsort and stable sort; argsort/partition invariants hold")
        n = ctx.units(1 << 15, minimum=256)
        arrays: dict[str, npt.NDArray[Any]] = {
            "int64": rng.integers(-(1 << 62), 1 << 62, size=n, dtype=np.int64),
            "int32": rng.integers(-(1 << 31), (1 << 31) - 1, size=n, dtype=np.int32),
            "float64": rng.standard_normal(n),
            "float32": rng.standard_normal(n).astype(np.float32),
            "uint16-dups": rng.integers(0, 512, size=n, dtype=np.uint16),
        }
        for label, arr in arrays.items():
            quick = np.sort(arr, kind="quicksort")
            tally.feed(quick.tobytes())
            tally.expect(f"{label} sorted", True, bool(np.all(quick[1:] >= quick[:-1])))
            tally.arrays(f"{label} quicksort vs stable", np.sort(arr, kind="stable"), quick)
            if label in ("int64", "float64"):
                tim = np.array(sorted(arr.tolist()), dtype=arr.dtype)
                tally.arrays(f"{label} quicksort vs timsort", tim, quick)
            order = np.argsort(arr, kind="quicksort")
            tally.arrays(f"{label} argsort gathers sorted", quick, arr[order])
            tally.expect(
                f"{label} argsort is a permutation",
                True,
                bool(np.array_equal(np.sort(order), np.arange(n))),
            )
            k = int(rng.integers(0, n))
            part = np.partition(arr, k)
            tally.expect(f"{label} partition kth", quick[k].item(), part[k].item())
            tally.expect(
                f"{label} partition sides",
                True,
                bool(np.all(part[:k] <= part[k]) and np.all(part[k + 1 :] >= part[k])),
            )
        return tally.observation()
