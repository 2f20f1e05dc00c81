"""Gamma-Poisson shrinkage (Marshall's moments): hand example and properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corecensus.epidemiology.shrinkage import GammaPrior, fit_gamma_prior


def test_marshall_moments_by_hand() -> None:
    o = np.array([0.0, 2.0, 4.0, 10.0])
    e = np.array([2.0, 2.0, 4.0, 4.0])
    prior = fit_gamma_prior(o, e)
    m = 16 / 12
    weighted = sum(ei * (oi / ei - m) ** 2 for oi, ei in zip(o, e, strict=True)) / 12
    assert prior.mean == pytest.approx(m)
    assert prior.variance == pytest.approx(weighted - m / 3)
    # posterior mean (a + O) / (b + E)
    a, b = m**2 / prior.variance, m / prior.variance
    assert prior.posterior_mean(10, 4)[()] == pytest.approx((a + 10) / (b + 4))


def test_zero_cells_enter_through_totals() -> None:
    o = np.array([3.0, 0.0, 0.0, 1.0, 0.0])
    e = np.array([0.5, 1.0, 1.5, 0.7, 0.3])
    full = fit_gamma_prior(o, e)
    sparse = fit_gamma_prior(o[o > 0], e[o > 0], total_expected=e.sum(), units=e.size)
    assert sparse.mean == pytest.approx(full.mean)
    assert sparse.variance == pytest.approx(full.variance)


def test_no_heterogeneity_shrinks_everyone_to_the_mean() -> None:
    prior = fit_gamma_prior([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
    assert prior.variance == 0.0 and prior.shape == float("inf")
    assert np.allclose(prior.posterior_mean([0, 5], [1, 1]), 1.0)
    assert fit_gamma_prior([], []).mean == 1.0


def test_tiny_host_is_shrunk_harder_than_a_big_one() -> None:
    prior = GammaPrior(mean=1.0, variance=0.5)
    small = prior.posterior_mean(1, 0.01)[()]  # raw ratio 100 from one crash
    big = prior.posterior_mean(1000, 10.0)[()]  # raw ratio 100 from a thousand
    assert small < 3
    assert big > 80
    assert prior.posterior_quantile(1, 0.01, 0.05)[()] < small


@settings(max_examples=200, deadline=None)
@given(
    mean=st.floats(min_value=0.1, max_value=5),
    var=st.floats(min_value=1e-3, max_value=10),
    o=st.integers(min_value=0, max_value=100),
    e=st.floats(min_value=1e-3, max_value=100),
)
def test_posterior_mean_lies_between_prior_and_raw(
    mean: float, var: float, o: int, e: float
) -> None:
    post = float(GammaPrior(mean=mean, variance=var).posterior_mean(o, e))
    raw = o / e
    lo, hi = min(mean, raw), max(mean, raw)
    assert lo - 1e-9 <= post <= hi + 1e-9
