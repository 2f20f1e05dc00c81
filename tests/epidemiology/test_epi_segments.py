"""Sort-based group-by helpers against plain Python."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from corecensus.epidemiology.segments import (
    Groups,
    carried_segment_cumsum,
    chunk_ranges,
    radix_argsort,
    segment_cummax,
    segment_cumsum,
    segment_rank,
)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(min_value=-(2**40), max_value=2**40), max_size=200),
    st.sampled_from([3, 70_000, 2**33, 2**41]),
    st.integers(min_value=-(2**40), max_value=2**40),
)
def test_radix_argsort_is_a_stable_argsort(values: list[int], mod: int, offset: int) -> None:
    # keys of any sign, many ties (mod 3) and ranges on both sides of the packed sort's limit
    # (2**55 at 200 records): the one order np.argsort(kind="stable") gives
    key = np.array(values, dtype=np.int64) % mod + offset
    assert radix_argsort(key).tolist() == np.argsort(key, kind="stable").tolist()


def test_radix_argsort_packs_ten_thousand_records_and_falls_back_above_the_limit() -> None:
    rng = np.random.default_rng(7)
    index_bits = (10_000 - 1).bit_length()
    for top in (2, 10_000, 2 ** (63 - index_bits) - 1, 2 ** (63 - index_bits), 2**62):
        key = rng.integers(0, top, 10_000, dtype=np.int64, endpoint=True)
        key[:50] = top  # the largest key, tied, at the edge of the packed range
        key[50:100] = 0
        assert radix_argsort(key).tolist() == np.argsort(key, kind="stable").tolist()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 9)), min_size=1, max_size=80))
def test_groups_and_segment_ops(rows: list[tuple[int, int]]) -> None:
    key = np.array([r[0] for r in rows])
    val = np.array([r[1] for r in rows])
    g = Groups.of(key)
    assert g.keys.tolist() == sorted(set(key.tolist()))
    assert g.counts.tolist() == [int((key == k).sum()) for k in g.keys]
    assert g.sum(val).tolist() == [float(val[key == k].sum()) for k in g.keys]
    assert g.keys[g.inverse].tolist() == key.tolist()
    # segments in sorted order
    sv = val[g.order]
    cs = segment_cumsum(sv, g.starts)
    cm = segment_cummax(sv.astype(np.int64), g.starts)
    rk = segment_rank(sv.size, g.starts)
    ends = [*g.starts[1:].tolist(), sv.size]
    for s, e in zip(g.starts.tolist(), ends, strict=True):
        assert cs[s:e].tolist() == np.cumsum(sv[s:e]).tolist()
        assert cm[s:e].tolist() == np.maximum.accumulate(sv[s:e]).tolist()
        assert rk[s:e].tolist() == list(range(e - s))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 12), max_size=40), st.integers(1, 20))
def test_chunk_ranges_cover_every_group_once_within_the_limit(sizes: list[int], limit: int) -> None:
    ranges = chunk_ranges(np.array(sizes, dtype=np.int64), limit)
    assert [g for lo, hi in ranges for g in range(lo, hi)] == list(range(len(sizes)))
    for lo, hi in ranges:
        # within the limit, or a single group larger than it
        assert sum(sizes[lo:hi]) <= limit or hi - lo == 1
        # and no room left for the next group
        if hi < len(sizes):
            assert sum(sizes[lo : hi + 1]) > limit


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60),
    st.lists(st.integers(1, 59), max_size=8),
    st.lists(st.integers(1, 59), max_size=4),
)
def test_carried_segment_cumsum_is_the_whole_arrays_to_the_bit(
    values: list[float], cuts: list[int], chunk_cuts: list[int]
) -> None:
    """Chunks that begin segments, each carrying the running total of the ones before: the
    values segment_cumsum gives the whole array (its float rounding included)."""
    x = np.array(values) * np.array([1.0, 1e-9, 3.3e5, 7e-3] * 15)[: len(values)]
    starts = np.array(sorted({0, *(c for c in cuts if c < x.size)}), dtype=np.int64)
    whole = segment_cumsum(x, starts)
    bounds = sorted({0, *(int(starts[c % starts.size]) for c in chunk_cuts), x.size})
    got, before = [], 0.0
    for lo, hi in itertools.pairwise(bounds):
        inside = starts[(starts >= lo) & (starts < hi)] - lo
        part, before = carried_segment_cumsum(x[lo:hi], inside, before)
        got.extend(part.tolist())
    assert got == whole.tolist()
    assert before == float(np.cumsum(x)[-1])
