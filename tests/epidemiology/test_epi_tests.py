"""Poisson, binomial and hypergeometric tails; BH; Fisher's combination — against SciPy and by
hand, plus properties with Hypothesis."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from corecensus.epidemiology.multiplicity import (
    benjamini_hochberg,
    fisher_combine,
    grouped_benjamini_hochberg,
)
from corecensus.epidemiology.poisson import (
    poisson_lower,
    poisson_rate_ratio_test,
    poisson_upper,
)
from corecensus.epidemiology.tails import binomial_upper, chi2_upper, hypergeom_upper

counts = st.integers(min_value=0, max_value=200)
means = st.floats(min_value=1e-6, max_value=300, allow_nan=False)


def test_poisson_upper_matches_scipy_and_hand_values() -> None:
    o = np.array([0, 1, 3, 10, 40])
    e = np.array([0.5, 0.5, 0.2, 2.0, 10.0])
    assert np.allclose(poisson_upper(o, e), stats.poisson.sf(o - 1, e))
    # 3 crashes where 0.2 expected: 1 - e^-0.2 (1 + 0.2 + 0.02)
    assert poisson_upper(3, 0.2) == pytest.approx(1 - math.exp(-0.2) * 1.22)
    assert poisson_upper(2, 0.0) == 0.0  # impossible under the null
    assert poisson_upper(0, 5.0) == 1.0


def test_mid_p_is_half_the_point_mass_smaller() -> None:
    o, e = 4, 1.3
    pmf = stats.poisson.pmf(o, e)
    assert poisson_upper(o, e, mid_p=True) == pytest.approx(stats.poisson.sf(o - 1, e) - pmf / 2)
    assert poisson_upper(0, 1.0, mid_p=True) == pytest.approx(1 - math.exp(-1.0) / 2)


def test_poisson_lower_and_absence() -> None:
    assert poisson_lower(0, 3.0) == pytest.approx(math.exp(-3.0))
    assert np.allclose(poisson_lower([0, 2, 5], 2.5), stats.poisson.cdf([0, 2, 5], 2.5))


def test_rate_ratio_test_is_the_conditional_binomial() -> None:
    # 2 crashes over 100 h against 12 over 50 h: P(N2 >= 12 | 14, p = 50/150)
    ref = stats.binomtest(12, 14, 50 / 150, alternative="greater").pvalue
    assert poisson_rate_ratio_test(2, 100.0, 12, 50.0) == pytest.approx(ref)
    assert poisson_rate_ratio_test(5, 1.0, 0, 1.0) == 1.0


@settings(max_examples=200, deadline=None)
@given(o=counts, e=means)
def test_poisson_p_values_in_unit_interval_and_monotone(o: int, e: float) -> None:
    p = float(poisson_upper(o, e))
    assert 0.0 <= p <= 1.0
    assert float(poisson_upper(o + 1, e)) <= p + 1e-12  # more crashes, more surprising
    assert float(poisson_upper(o, e * 1.5)) >= p - 1e-12  # more expected, less surprising
    assert float(poisson_upper(o, e, mid_p=True)) <= p + 1e-12


def test_binomial_and_hypergeometric_tails_match_scipy() -> None:
    rng = np.random.default_rng(1)
    n = rng.integers(0, 400, 500)
    k = rng.integers(-1, 402, 500)
    p = rng.random(500)
    assert np.allclose(binomial_upper(k, n, p), stats.binom.sf(k - 1, n, p), atol=1e-12)
    big = rng.integers(1, 5000, 500)
    succ = (rng.random(500) * big).astype(int)
    draws = (rng.random(500) * big).astype(int)
    a = (rng.random(500) * np.minimum(succ, draws) * 1.2).astype(int)
    ours = hypergeom_upper(a, big, succ, draws)
    ref = stats.hypergeom.sf(a - 1, big, succ, draws)
    assert np.allclose(ours, ref, rtol=1e-8, atol=1e-13)


def test_hypergeometric_tail_is_accurate_far_in_the_tail_and_for_wide_laws() -> None:
    assert hypergeom_upper(9, 1_000_000, 10, 10)[0] == pytest.approx(
        stats.hypergeom.sf(8, 1_000_000, 10, 10), rel=1e-8
    )
    # a wide distribution, just above its mode: summing 200 terms would fall short
    assert hypergeom_upper(250_001, 1_000_000, 500_000, 500_000)[0] == pytest.approx(
        stats.hypergeom.sf(250_000, 1_000_000, 500_000, 500_000), rel=1e-6
    )


def test_benjamini_hochberg_matches_scipy_and_a_hand_example() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.2])
    # sorted: .01 .03 .04 .2 -> .04 .06 .0533 .2 -> step-up minimum: .04 .0533 .0533 .2
    assert np.allclose(benjamini_hochberg(p), [0.04, 0.0533333, 0.0533333, 0.2])
    rng = np.random.default_rng(3)
    q = rng.random(300) ** 3
    assert np.allclose(benjamini_hochberg(q), stats.false_discovery_control(q))
    # untested hosts count as p = 1
    assert np.allclose(
        benjamini_hochberg(p, m=8), stats.false_discovery_control([*p, 1, 1, 1, 1])[:4]
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1), min_size=1, max_size=60))
def test_bh_properties(values: list[float]) -> None:
    p = np.array(values)
    q = benjamini_hochberg(p)
    assert np.all(q >= p - 1e-15) and np.all(q <= 1.0)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(q[order]) >= -1e-15)  # monotone in p


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(min_value=0, max_value=1), st.integers(min_value=0, max_value=4)),
        min_size=1,
        max_size=60,
    )
)
def test_grouped_bh_equals_bh_per_group(rows: list[tuple[float, int]]) -> None:
    p = np.array([r[0] for r in rows])
    g = np.array([r[1] for r in rows])
    q = grouped_benjamini_hochberg(p, g)
    for k in np.unique(g):
        assert np.allclose(q[g == k], benjamini_hochberg(p[g == k]))
    m = np.full(5, 100)
    q100 = grouped_benjamini_hochberg(p, g, m)
    for k in np.unique(g):
        assert np.allclose(q100[g == k], benjamini_hochberg(p[g == k], m=100))


def test_grouped_bh_keeps_tiny_p_values() -> None:
    q = grouped_benjamini_hochberg([1e-300, 1e-200, 0.5], [7, 7, 9])
    assert q[0] == pytest.approx(2e-300) and q[1] == pytest.approx(2e-200)


def test_fisher_combination_matches_scipy() -> None:
    for p1, p2 in [(0.01, 0.2), (1e-8, 0.5), (1.0, 1.0), (0.3, 0.04)]:
        ref = stats.combine_pvalues([p1, p2], method="fisher").pvalue
        assert fisher_combine(p1, p2) == pytest.approx(ref, rel=1e-9)
    assert fisher_combine(0.0, 0.5) == 0.0


@settings(max_examples=100, deadline=None)
@given(st.floats(min_value=0, max_value=1), st.floats(min_value=0, max_value=1))
def test_fisher_combination_in_unit_interval(p1: float, p2: float) -> None:
    c = float(fisher_combine(p1, p2))
    assert 0.0 <= c <= 1.0
    assert c >= p1 * p2 - 1e-15


def test_chi2_upper_is_scipy_stats_chi2_sf_exactly() -> None:
    """The same numbers as scipy.stats.chi2.sf (no tolerance), negative and NaN statistics too."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.exponential(5.0, 20_000), [0.0, -0.0, -1.0, -1e-12, np.inf, np.nan]])
    df = rng.uniform(1.0, 60.0, x.size)
    assert np.array_equal(chi2_upper(x, df), stats.chi2.sf(x, df), equal_nan=True)
    assert np.array_equal(chi2_upper(x, 1), stats.chi2.sf(x, 1), equal_nan=True)
    assert chi2_upper(-3.0, 2)[()] == 1.0
