"""The exact conditional host test: its null law against brute-force enumeration, and the
calibration of its p-values on a simulated null fleet."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from corecensus.epidemiology import AnalysisParams, Categorical, CrashTable, analyze
from corecensus.epidemiology.concentration import max_cell_law
from corecensus.epidemiology.hosttest import (
    GRID_MAX_N,
    host_pvalues,
    lower_bounds,
    poisson_binomial_prefixes,
    statistic,
)
from corecensus.model import ANOMALY_NAMES

FLIP = 1 << ANOMALY_NAMES.index("bit_flip_candidate")


def brute_max_law(n: int, cells: int) -> list[float]:
    """P(max cell = m) by enumerating all cells**n assignments."""
    law = [0.0] * (n + 1)
    for assign in itertools.product(range(cells), repeat=n):
        counts = [assign.count(c) for c in range(cells)]
        law[max(counts) if n else 0] += 1.0
    return [v / cells**n for v in law]


@pytest.mark.parametrize(("n", "cells"), [(0, 4), (1, 3), (4, 2), (5, 3), (6, 4), (7, 3)])
def test_largest_cell_law_matches_enumeration(n: int, cells: int) -> None:
    assert max_cell_law(n, cells) == pytest.approx(brute_max_law(n, cells), abs=1e-14)


def test_largest_cell_law_of_a_realistic_host_sums_to_one() -> None:
    law = max_cell_law(40, 64)
    assert law.sum() == pytest.approx(1.0, abs=1e-12)
    assert law[:1].sum() == 0.0 and np.all(law >= 0)


def enumerate_host(
    a_known: list[float], a_unknown: list[float], cells: int
) -> list[tuple[float, float, tuple[int, ...]]]:
    """Every outcome of a host under the null: (probability, statistic, inputs of host_pvalues).

    CPUs uniform and independent, crash i anomalous with probability a_i; the busiest CPU is the
    tied one with the smallest statistic, as the scan takes it."""
    n = len(a_known)
    lam, lam_u = sum(a_known), sum(a_unknown)
    rows: list[tuple[int, float, int, int, int]] = []  # outcome, probability, m, k, o
    outcome = 0
    for assign in itertools.product(range(cells), repeat=n):
        counts = [assign.count(c) for c in range(cells)]
        m = max(counts)
        for flags in itertools.product((0, 1), repeat=n + len(a_unknown)):
            prob = cells**-n * math.prod(
                a if f else 1 - a for a, f in zip((*a_known, *a_unknown), flags, strict=True)
            )
            z = sum(flags)
            for c in range(cells):
                if counts[c] == m:
                    k = sum(f for f, cc in zip(flags[:n], assign, strict=False) if cc == c)
                    rows.append((outcome, prob, m, k, z - k))
            outcome += 1
    arr = np.array(rows, dtype=float)
    score = statistic(n, arr[:, 2], arr[:, 3], arr[:, 4], lam, lam_u, cells).score
    out: list[tuple[float, float, tuple[int, ...]]] = []
    for i in range(outcome):
        cand = np.flatnonzero(arr[:, 0] == i)
        best = cand[np.argmin(score[cand])]
        m, k, o = (int(v) for v in arr[best, 2:])
        out.append((float(arr[best, 1]), float(score[best]), (n, m, k, o)))
    return out


def law(a: list[float]) -> np.ndarray:
    """Poisson-binomial law of the anomaly count, one row."""
    return poisson_binomial_prefixes(np.array(a, dtype=float), np.array([0]), cap=40)


@pytest.mark.parametrize(
    ("a_known", "a_unknown", "cells"),
    [
        ([0.05, 0.05, 0.1, 0.2], [], 3),
        ([0.02, 0.3, 0.1, 0.05, 0.05], [0.1], 2),
        ([0.1, 0.1, 0.1], [0.2, 0.05], 4),
    ],
)
def test_pvalue_is_never_below_the_exact_null_probability(
    a_known: list[float], a_unknown: list[float], cells: int
) -> None:
    """For every outcome, host_pvalues >= P(T <= T_obs) computed by brute force, and close to
    it (the Poisson domination and the tie bound are the only slack)."""
    outcomes = enumerate_host(a_known, a_unknown, cells)
    probs = np.array([o[0] for o in outcomes])
    scores = np.array([o[1] for o in outcomes])
    assert probs.sum() == pytest.approx(1.0)
    inputs = np.array([o[2] for o in outcomes])
    size = len(outcomes)
    _, p = host_pvalues(
        inputs[:, 0],
        inputs[:, 1],
        inputs[:, 2],
        inputs[:, 3],
        np.repeat(law(a_known), size, axis=0),
        np.repeat(law(a_unknown), size, axis=0),
        cells,
    )
    exact = np.array([probs[scores <= t * (1 + 1e-9)].sum() for t in scores])
    assert np.all(p >= exact - 1e-12)
    small = exact < 0.05
    assert small.any()
    assert np.all(p[small] <= 1.5 * exact[small])


def null_fleet(seed: int, hosts: int = 3000) -> CrashTable:
    """A fleet without faulty CPUs: about 6 crashes per host on 8 CPUs, uniform; 5
    populations anomalous at 3-15% (below the explaining-away rate), flags independent."""
    rng = np.random.default_rng(seed)
    per_host = rng.poisson(6.0, hosts)
    host = np.repeat(np.arange(hosts), per_host)
    size = host.size
    pop = rng.integers(0, 5, size)
    rate = np.array([0.03, 0.05, 0.08, 0.1, 0.15])[pop]
    return CrashTable.from_arrays(
        time_us=rng.integers(0, 30 * 86_400_000_000, size),
        host=Categorical(host, tuple(f"h{i}" for i in range(hosts))),
        cpu=rng.integers(0, 8, size),
        population=Categorical(pop, tuple(f"p{i}" for i in range(5))),
        anomaly_mask=np.where(rng.random(size) < rate, FLIP, 0),
        host_cpus=np.full(hosts, 8),
    )


@pytest.mark.parametrize("alpha", [0.002, 0.01, 0.05])
def test_null_pvalues_are_calibrated(alpha: float) -> None:
    """Through analyze: the share of null hosts with p <= alpha is at most alpha (plus three
    binomial standard errors), and not far below it (the test is close to exact)."""
    shares = []
    for seed in (1, 2):
        params = AnalysisParams(streaming=False, host_p_exact_below=1.0)
        a = analyze(null_fleet(seed), params=params)
        assert a.scan is not None
        shares.append(float(np.mean(a.scan.p_value <= alpha)))
    share = float(np.mean(shares))
    size = 2 * 3000
    assert share <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / size)
    assert share >= 0.5 * alpha


def test_hosts_with_many_crashes_use_a_valid_two_factor_test() -> None:
    """Above GRID_MAX_N crashes: the share of null draws with p <= alpha is at most alpha."""
    rng = np.random.default_rng(3)
    n, cells, draws = 200, 8, 20_000
    assert n > GRID_MAX_N
    a = rng.uniform(0.01, 0.06, n)
    counts = rng.multinomial(n, np.full(cells, 1 / cells), draws)
    m = counts.max(axis=1)
    z = (rng.random((draws, n)) < a).sum(axis=1)
    row = law(list(a))
    cases, back = np.unique(np.stack([m, z]), axis=1, return_inverse=True)
    _, p_cases = host_pvalues(n, cases[0], 0, cases[1], row, np.array([[1.0]]), cells)
    p = p_cases[back.ravel()]
    for alpha in (0.01, 0.05):
        assert np.mean(p <= alpha) <= alpha + 3 * math.sqrt(alpha / draws)
    assert np.mean(p <= 0.05) >= 0.02


def test_grid_up_to_160_crashes_is_valid_and_keeps_the_busiest_cpus_anomalies() -> None:
    """60 < n <= GRID_MAX_N (the grid, issue 9's busy hosts): null draws of CPUs and anomaly
    flags give p <= alpha at most alpha of the time; 4 anomalies on a busiest CPU of 9 count
    far more than 4 anomalies elsewhere."""
    rng = np.random.default_rng(5)
    n, cells, draws = 90, 8, 4000
    assert 60 < n <= GRID_MAX_N
    a = rng.uniform(0.01, 0.06, n)
    assign = rng.integers(0, cells, (draws, n))
    flags = rng.random((draws, n)) < a
    per = np.stack([(assign == c).sum(axis=1) for c in range(cells)], axis=1)
    top = per.argmax(axis=1)  # the lowest among ties: a choice from the counts alone
    m = per.max(axis=1)
    k = (flags & (assign == top[:, None])).sum(axis=1)
    o = flags.sum(axis=1) - k
    cases, back = np.unique(np.stack([m, k, o]), axis=1, return_inverse=True)
    row = law(list(a))
    _, p_cases = host_pvalues(n, cases[0], cases[1], cases[2], row, np.array([[1.0]]), cells)
    p = p_cases[back.ravel()]
    for alpha in (0.01, 0.05):
        assert np.mean(p <= alpha) <= alpha + 3 * math.sqrt(alpha / draws)
    assert np.mean(p <= 0.05) >= 0.02
    _, (on_cell, off_cell) = host_pvalues(
        n, [20, 20], [4, 0], [0, 4], row, np.array([[1.0]]), cells
    )
    assert on_cell < 0.1 * off_cell


@pytest.mark.parametrize(("n", "cells"), [(12, 8), (45, 32), (90, 8), (400, 64)])
def test_lower_bound_never_exceeds_the_pvalue_and_skips_only_large_ones(n: int, cells: int) -> None:
    """lower_bounds is below the computed p-value for every outcome, in the grid (n <= 160)
    and the two-factor union-bound law (n > 160) paths; with exact_below the
    p-values at or below the level are unchanged and the others are exact or 1."""
    rng = np.random.default_rng(n)
    a = rng.uniform(0.005, 0.05, n)
    row = law(list(a))
    lam = float(a.sum())
    m = rng.integers(1, n // 3 + 3, 300)
    z = rng.poisson(lam * rng.uniform(0.5, 4.0, 300))
    k = np.minimum(z, rng.integers(0, 6, 300))
    k = np.minimum(k, m)
    o = z - k
    unknown = np.array([[1.0]])
    stat, exact = host_pvalues(n, m, k, o, row, unknown, cells)
    bound = lower_bounds(n, stat.score, cells)
    live = stat.score < 1.0
    assert np.all(bound[live] <= exact[live] + 1e-12)
    assert (bound[live] > 0.05).any() and (exact < 0.05).any()
    _, fast = host_pvalues(n, m, k, o, row, unknown, cells, exact_below=0.05)
    small = exact <= 0.05
    np.testing.assert_array_equal(fast[small], exact[small])
    # the rest are exact or the conservative stand-in 1, and some were skipped
    assert np.all((fast[~small] == exact[~small]) | (fast[~small] == 1.0))
    assert np.any(fast[~small] > exact[~small])


def test_poisson_binomial_prefixes_match_direct_convolution() -> None:
    """Every segment's law (empty ones included) and every recorded prefix equal the product of
    the Bernoulli generating polynomials, with the mass beyond the cap folded into it."""
    rng = np.random.default_rng(7)
    lengths = rng.integers(0, 12, 25)
    lengths[[0, 5]] = 0
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    a = rng.uniform(0.0, 0.6, int(lengths.sum()))
    record = rng.random(a.size) < 0.4
    cap = 5

    def direct(probs: np.ndarray) -> np.ndarray:
        poly = np.array([1.0])
        for q in probs:
            poly = np.convolve(poly, [1.0 - q, q])
        out = np.zeros(cap + 1)
        out[: min(cap + 1, poly.size)] = poly[: cap + 1]
        out[cap] += poly[cap + 1 :].sum()
        return out

    ends = starts + lengths
    whole = poisson_binomial_prefixes(a, starts, cap=cap)
    for row, (lo, hi) in enumerate(zip(starts, ends, strict=True)):
        np.testing.assert_allclose(whole[row], direct(a[lo:hi]), atol=1e-12)
    prefixes = poisson_binomial_prefixes(a, starts, record=record, cap=cap)
    seg_of = np.repeat(np.arange(starts.size), lengths)
    for row, pos in enumerate(np.flatnonzero(record)):
        lo = starts[seg_of[pos]]
        np.testing.assert_allclose(prefixes[row], direct(a[lo : pos + 1]), atol=1e-12)
