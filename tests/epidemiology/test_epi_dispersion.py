"""Poisson dispersion from the cells with crashes equals the full chi-square over all hosts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from corecensus.epidemiology.dispersion import poisson_dispersion


def test_sparse_cells_equal_full_pearson_and_g() -> None:
    rng = np.random.default_rng(5)
    exposure = rng.uniform(1, 10, 50)
    observed = rng.poisson(0.3 * exposure).astype(float)
    expected = observed.sum() * exposure / exposure.sum()
    full = stats.chisquare(observed, expected)
    g_full = stats.power_divergence(observed, expected, lambda_="log-likelihood")
    has = observed > 0
    d = poisson_dispersion(
        observed[has],
        expected[has],
        group=np.zeros(int(has.sum()), dtype=int),
        n_groups=1,
        expected_total=np.array([expected.sum()]),
        units=np.array([50]),
    )
    assert d.statistic[0] == pytest.approx(full.statistic)
    assert d.p_value[0] == pytest.approx(full.pvalue)
    assert d.g[0] == pytest.approx(g_full.statistic)
    assert d.df[0] == 49 and d.index[0] == pytest.approx(full.statistic / 49)


def test_concentrated_population_is_overdispersed() -> None:
    # 20 crashes on one of 100 equally exposed hosts
    d = poisson_dispersion(
        np.array([20.0]),
        np.array([0.2]),
        group=np.array([0]),
        n_groups=1,
        expected_total=np.array([20.0]),
        units=np.array([100]),
    )
    assert d.index[0] > 10 and d.p_value[0] < 1e-10
