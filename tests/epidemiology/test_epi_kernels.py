"""The host test's numerical kernels, rewritten for speed (issue 7), against the computations
they replaced: the same float64 values to the bit (``analyze --json`` must not change), over a
grid of sizes that covers the tails and the entries outside each law's support."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import special

from corecensus.epidemiology import concentration, hosttest
from corecensus.epidemiology.concentration import EXACT_MAX_N, max_cell_law, max_cell_pvalue
from corecensus.epidemiology.hosttest import (
    _fewest_passing,
    _hypergeom_rows,
    _spread_bounds,
    _tail_rev,
    _union_lower_bounds,
    count_reach,
    lower_bounds,
    pair_cell_pvalue,
    poisson_binomial_prefixes,
)
from corecensus.epidemiology.onset import _first_best
from corecensus.epidemiology.poisson import poisson_upper
from corecensus.epidemiology.tails import DISTINCT_AT_LEAST, per_distinct_counts, unit_probability


def _log_choose_before(n: Any, k: Any) -> Any:
    nn = np.asarray(n, dtype=np.float64)
    kk = np.asarray(k, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return special.gammaln(nn + 1) - special.gammaln(kk + 1) - special.gammaln(nn - kk + 1)


def _hypergeom_rows_before(n: int, z_max: int, lo: int, hi: int) -> Any:
    """hosttest._hypergeom_rows as it was: gammaln evaluated for every element."""
    z = np.arange(z_max + 1, dtype=np.float64)[:, None, None]
    m = np.arange(lo, hi, dtype=np.float64)[None, :, None]
    k = np.arange(z_max + 1, dtype=np.float64)[None, None, :]
    ok = (k <= z) & (k <= m) & (m - k <= n - z)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        logp = (
            _log_choose_before(z, k)
            + _log_choose_before(n - z, m - k)
            - _log_choose_before(float(n), m)
        )
        return np.where(ok, np.exp(np.where(ok, logp, 0.0)), 0.0)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 20, 59, 61, 100, 159, 160])
def test_hypergeometric_rows_are_the_gammaln_computation_to_the_bit(n: int) -> None:
    # z_max above n too (more anomalies allowed than crashes: the entries outside the support)
    for z_max in sorted({0, 1, min(n, 5), n // 2, n, n + 3, 40}):
        for lo, hi in {(0, n + 1), (0, 1), (n // 3, n // 3 + 7), (max(0, n - 4), n + 1)}:
            new = _hypergeom_rows(n, z_max, lo, hi)
            old = _hypergeom_rows_before(n, z_max, lo, hi)
            assert new.shape == old.shape
            assert new.tobytes() == old.tobytes(), (n, z_max, lo, hi)
            # and it is a law: the k-rows of every valid (z, m) sum to one
            if new.size and hi > lo:
                sums = new.sum(axis=2)
                valid = sums > 0
                assert np.allclose(sums[valid], 1.0, atol=1e-12)


def _fewest_passing_before(s: Any, ec: Any, eo: Any, t_obs: Any, z_max: int, o_max: int) -> Any:
    """The count of failing o in hosttest._group_pvalues as it was: every (g, m) cell's tails."""
    k_grid = np.arange(z_max + 1, dtype=np.float64)
    o_grid = np.arange(o_max + 1, dtype=np.float64)
    gk = poisson_upper(k_grid[None, None, :], ec[:, :, None])
    ho = poisson_upper(o_grid[None, None, :], eo[:, :, None])
    sg = s[:, :, None] * gk
    too_big = sg[:, :, :, None] * ho[:, :, None, :] > t_obs[:, None, None, None]
    return too_big.sum(axis=3)


@pytest.mark.parametrize("seed", range(6))
def test_fewest_passing_skips_only_cells_already_below_the_observed_score(seed: int) -> None:
    rng = np.random.default_rng(seed)
    g, m, z_max, o_max = 7, 9, int(rng.integers(0, 12)), int(rng.integers(0, 20))
    s = np.sort(rng.random((g, m)) ** 3, axis=1)[:, ::-1]  # non-increasing in m, as s(m)
    s[0] = 1.0  # no cell below the observed score
    ec = rng.random((g, m)) * 5.0
    eo = rng.random((g, m)) * 8.0
    t_obs = rng.random(g) ** 4
    t_obs[1] = 0.0  # nothing is at most 0 but 0
    t_obs[2] = s[2, 4]  # a tie with the cell: s <= T_obs there, counted as passing
    t_obs[3] = 1.0  # every cell at most it
    new = _fewest_passing(s, ec, eo, t_obs, z_max, o_max)
    old = _fewest_passing_before(s, ec, eo, t_obs, z_max, o_max)
    assert new.shape == old.shape == (g, m, z_max + 1)
    assert np.array_equal(new, old)
    assert (new[3] == 0).all() and (new[0] > 0).any()  # both kinds of cell were there


def _power_at_before(pmf: Any, times: int, at: int) -> float:
    """concentration._power_at as it was: the powers multiplied into [1.0]."""
    result = np.ones(1, dtype=np.float64)
    base = pmf
    k = times
    while k:
        if k & 1:
            result = np.convolve(result, base)[: at + 1]
        k >>= 1
        if k:
            base = np.convolve(base, base)[: at + 1]
    return float(result[at]) if result.size > at else 0.0


@pytest.mark.parametrize("cells", [1, 2, 3, 5, 8, 24, 32, 48, 64, 127, 384])
def test_largest_cell_law_is_the_old_binary_powering_to_the_bit(
    cells: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = [*range(0, 40), *range(40, EXACT_MAX_N + 1, 9), EXACT_MAX_N - 1, EXACT_MAX_N]
    new = [max_cell_law(n, cells) for n in sizes]
    monkeypatch.setattr(concentration, "_power_at", _power_at_before)
    for n, law in zip(sizes, new, strict=True):
        old = max_cell_law(n, cells)
        assert law.tobytes() == old.tobytes(), (n, cells)
    # the comparison reaches the tails: laws with values far below the method's 1e-15 error
    tiny = sum(int(((law > 0.0) & (law < 1e-15)).sum()) for law in new)
    assert tiny > 0 or cells == 1


def test_first_best_is_the_leader_of_the_lexsort_it_replaced() -> None:
    rng = np.random.default_rng(3)
    for trial in range(200):
        counts = rng.integers(0, 6, rng.integers(1, 12))
        if trial % 7 == 0:
            counts[rng.integers(0, counts.size)] = 0  # empty segments among the others
        n = int(counts.sum())
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        seg = np.repeat(np.arange(counts.size), counts)
        # few distinct values: ties everywhere, and -inf, NaN, -0.0 among them
        score = rng.choice(np.array([-np.inf, np.nan, -0.0, 0.0, 1.5, 2.0, -3.0]), n)
        order = np.lexsort((-score, seg))
        first = np.ones(n, dtype=bool)
        first[1:] = seg[order][1:] != seg[order][:-1]
        expected = order[first] if n else np.zeros(0, dtype=np.int64)
        got = _first_best(score, seg, starts, counts.astype(np.int64))
        assert got.tolist() == expected.tolist(), (score.tolist(), counts.tolist())


def _convolve_segments_before(
    a: Any, starts: Any, lengths: Any, slot: Any, out: Any, cap: int
) -> None:
    """hosttest._convolve_segments as it was: one step at a time, every view made anew."""
    by_len = np.argsort(-lengths, kind="stable")
    first = starts[by_len]
    steps = np.arange(int(lengths.max(initial=0)))
    running = lengths.size - np.searchsorted(np.sort(lengths), steps, side="right")
    state = np.zeros((starts.size, cap + 1), dtype=np.float64)
    state[:, 0] = 1.0
    carry = np.empty_like(state)
    for j, count in enumerate(running.tolist()):
        w = min(cap, j + 1) + 1
        pos = first[:count] + j
        q = a[pos][:, None]
        cur = state[:count, :w]
        gain = carry[:count, :w]
        np.multiply(cur, q, out=gain)
        cur -= gain
        cur[:, 1:] += gain[:, :-1]
        if w == cap + 1:
            cur[:, -1] += gain[:, -1]
        done = slot[pos] >= 0
        if done.any():
            out[slot[pos[done]], :w] = cur[done]


def _poisson_binomial_prefixes_before(a: Any, starts: Any, record: Any, cap: int) -> Any:
    """hosttest.poisson_binomial_prefixes as it was: every element stepped through, one step
    at a time."""
    size = a.size
    ends = np.append(starts[1:], size).astype(np.int64)
    lengths = ends - starts
    slot = np.full(size, -1, dtype=np.int64)
    if record is None:
        out = np.zeros((starts.size, cap + 1), dtype=np.float64)
        nonempty = lengths > 0
        slot[ends[nonempty] - 1] = np.flatnonzero(nonempty)
    else:
        rec_pos = np.flatnonzero(record)
        out = np.zeros((rec_pos.size, cap + 1), dtype=np.float64)
        slot[rec_pos] = np.arange(rec_pos.size)
    out[:, 0] = 1.0
    if not a.any():
        return out
    total = np.concatenate([[0.0], np.cumsum(a)])
    width = np.minimum(cap, ((count_reach(total[ends] - total[starts]) + 7) // 8) * 8)
    for w in np.unique(width).tolist():
        sel = np.flatnonzero(width == w)
        _convolve_segments_before(a, starts[sel], lengths[sel], slot, out, int(w))
    return out


@pytest.mark.parametrize("cap", [0, 1, 3, 8, 64])
def test_poisson_binomial_prefixes_skip_zero_probabilities_to_the_bit(cap: int) -> None:
    rng = np.random.default_rng(cap)
    for _ in range(30):
        lengths = rng.integers(0, 40, rng.integers(1, 20))
        lengths[0] = 200  # one long segment running alone for many steps, past every cap
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        a = rng.uniform(0.0, 0.9, int(lengths.sum()))
        # most elements 0 (crashes of the other kind), whole segments and segment ends too
        a[rng.random(a.size) < 0.7] = 0.0
        if lengths.size > 2 and lengths[1]:
            a[starts[1] : starts[1] + lengths[1]] = 0.0
        record = rng.random(a.size) < 0.3
        for rec in (None, record):
            new = poisson_binomial_prefixes(a, starts, record=rec, cap=cap)
            old = _poisson_binomial_prefixes_before(a, starts, rec, cap)
            assert new.tobytes() == old.tobytes()


def _union_lower_bounds_before(n: Any, t: Any, cpus: Any, score: Any) -> Any:
    """hosttest._union_lower_bounds as it was: every entry's tail at every bisection step."""
    lo = np.full(n.shape, 2, dtype=np.int64)
    hi = n + 1
    while bool((lo < hi).any()):
        mid = (lo + hi) // 2
        ok = score(n, mid, cpus) <= t
        active = lo < hi
        hi = np.where(active & ok, mid, hi)
        lo = np.where(active & ~ok, mid + 1, lo)
    found = lo <= n
    value = score(n, np.minimum(lo, n), cpus) * (1.0 - 1e-9)
    return np.where(found, value, 0.0)


@pytest.mark.parametrize("score", [max_cell_pvalue, pair_cell_pvalue])
def test_union_lower_bounds_search_only_the_unsettled_entries_to_the_bit(score: Any) -> None:
    rng = np.random.default_rng(11)
    size = 3000
    n = rng.integers(0, 5000, size).astype(np.int64)
    n[:20] = [0, 1, 2, 3, 161, 162, 4999, *range(13)]
    cpus = rng.choice(np.array([1, 2, 3, 4, 8, 32, 64, 384]), size).astype(np.int64)
    # thresholds from "nothing qualifies" to "everything does", and the tails' own values
    t = 10.0 ** rng.uniform(-40, 0.5, size)
    t[20:40] = score(n[20:40], n[20:40] // 3, cpus[20:40])
    new = _union_lower_bounds(n, t, cpus, score)
    old = _union_lower_bounds_before(n, t, cpus, score)
    assert new.tobytes() == old.tobytes()
    assert 0 < int((new > 0).sum()) < size  # both outcomes are there


@pytest.mark.parametrize("cells", [1, 2, 3, 8, 24, 32, 64, 160])
def test_spread_bounds_never_exceed_the_exact_tails(cells: int) -> None:
    # the negatively associated bound is a lower bound of the exact law's tails (with room for
    # the exact law's own error, 1e-13 where its tail reaches 1), and it is close where it
    # decides: the central tails
    for n in [*range(0, 30), *range(30, EXACT_MAX_N + 1, 13), EXACT_MAX_N]:
        spread, exact = _spread_bounds(n, cells), _tail_rev(n, cells)
        assert spread.shape == exact.shape
        assert np.all(spread <= exact + 1e-12), (n, cells)
        if n >= 8 and cells > 1:
            assert np.any((spread > 0.05) & (spread < 0.95)), (n, cells)


def test_lower_bounds_above_a_level_decide_as_the_exact_bounds_without_their_laws() -> None:
    rng = np.random.default_rng(5)
    size = 4000
    n = rng.integers(0, EXACT_MAX_N + 1, size).astype(np.int64)
    cpus = rng.choice(np.array([1, 2, 4, 8, 24, 32, 64]), size).astype(np.int64)
    score = 10.0 ** rng.uniform(-12, 0, size)
    level = rng.choice(np.array([1e-3, 1e-2, 0.2]), size)
    hosttest._m_law.cache_clear()
    hosttest._tail_rev.cache_clear()
    exact = lower_bounds(n, score, cpus)
    laws_exact = hosttest._m_law.cache_info().currsize
    hosttest._m_law.cache_clear()
    hosttest._tail_rev.cache_clear()
    screened = lower_bounds(n, score, cpus, above=level)
    laws_screened = hosttest._m_law.cache_info().currsize
    # the same entries exceed the level; below it, the same values to the bit
    np.testing.assert_array_equal(screened > level, exact > level)
    below = exact <= level
    assert screened[below].tobytes() == exact[below].tobytes()
    assert np.all(screened <= exact + 1e-12)  # still a lower bound everywhere
    # some entries were decided by the cheaper bound, and some laws never computed
    assert int((screened != exact).sum()) > 0
    assert laws_screened < laws_exact


def test_unit_probability_is_nan_to_num_and_clip_to_the_bit() -> None:
    special_values = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1.0, -1e-300, 1.0 + 1e-16, 2.5, 0.3]
    rng = np.random.default_rng(2)
    values = np.concatenate([special_values, rng.uniform(-0.5, 1.5, 500)])
    for p in [values, values.reshape(51, 10), np.float64(np.nan), np.asarray(0.5), -0.0, np.inf]:
        new = unit_probability(p)
        old = np.clip(np.nan_to_num(p, nan=1.0), 0.0, 1.0)
        assert type(new) is type(old)
        assert np.asarray(new).tobytes() == np.asarray(old).tobytes()


def _count_triples(rng: np.random.Generator, size: int) -> tuple[Any, Any, Any]:
    """Host-like (n, m, cells) triples, many repeated: m <= n, a few CPU counts."""
    n = rng.integers(0, 60, size).astype(np.float64)
    m = np.floor(n * rng.random(size) ** 3)
    cells = rng.choice([1.0, 2.0, 8.0, 48.0, 64.0, 96.0], size)
    return n, m, cells


@pytest.mark.parametrize(
    ("bound", "direct"),
    [
        (max_cell_pvalue, concentration._max_cell_pvalue),
        (pair_cell_pvalue, hosttest._pair_cell_pvalue),
    ],
)
def test_count_tails_per_distinct_triple_are_the_direct_ones_to_the_bit(
    bound: Any, direct: Any
) -> None:
    rng = np.random.default_rng(7)
    n, m, cells = _count_triples(rng, 3 * DISTINCT_AT_LEAST)
    assert np.unique(np.stack([n, m, cells]), axis=1).shape[1] < n.size // 2  # repeats
    assert bound(n, m, cells).tobytes() == direct(n, m, cells).tobytes()
    # broadcast against a scalar and a column, in a 2-D shape
    grid = bound(n[:4096, None], m[None, :3], 64.0)
    assert grid.shape == (4096, 3)
    assert grid.tobytes() == direct(n[:4096, None], m[None, :3], 64.0).tobytes()
    # below the size, scalars as they were
    assert float(bound(100.0, 9.0, 64)) == float(direct(100.0, 9.0, 64))


@pytest.mark.parametrize("odd", [np.nan, np.inf, -1.0, 2.5, -0.0, float(1 << 20)])
def test_counts_that_are_not_small_integers_go_to_the_function_as_they_are(odd: float) -> None:
    rng = np.random.default_rng(3)
    n, m, cells = _count_triples(rng, DISTINCT_AT_LEAST)
    n[17] = odd
    seen: list[Any] = []

    def spy(a: Any, b: Any, c: Any) -> Any:
        seen.append(a)
        return concentration._max_cell_pvalue(a, b, c)

    out = per_distinct_counts(spy, n, m, cells)
    (given,) = seen
    assert given.size == n.size  # every element, not the distinct ones
    assert given[17] == odd or (np.isnan(odd) and np.isnan(given[17]))
    assert np.signbit(given[17]) == np.signbit(odd)
    assert out.tobytes() == concentration._max_cell_pvalue(n, m, cells).tobytes()
