"""PRR, ROR, their intervals, Yates chi-square and the one-sided Fisher exact p-value."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from corecensus.epidemiology.disproportionality import attribute_cells, host_enrichment, two_by_two


def test_prr_and_ror_by_hand() -> None:
    # 20 of 100 crashes of the population on kernel k, against 50 of 1000 other crashes
    t = two_by_two(20, 80, 50, 950)
    assert t.prr[0] == pytest.approx((20 / 100) / (50 / 1000))
    se = math.sqrt(1 / 20 - 1 / 100 + 1 / 50 - 1 / 1000)
    assert t.prr_low[0] == pytest.approx(4.0 * math.exp(-1.959964 * se), rel=1e-5)
    assert t.prr_high[0] == pytest.approx(4.0 * math.exp(1.959964 * se), rel=1e-5)
    assert t.ror[0] == pytest.approx(20 * 950 / (80 * 50))
    se_r = math.sqrt(1 / 20 + 1 / 80 + 1 / 50 + 1 / 950)
    assert t.ror_low[0] == pytest.approx(t.ror[0] * math.exp(-1.959964 * se_r), rel=1e-5)
    chi2 = stats.chi2_contingency([[20, 80], [50, 950]], correction=True)[0]
    assert t.chi2[0] == pytest.approx(chi2)
    assert not t.exact[0]
    assert t.p_value[0] == pytest.approx(stats.chi2.sf(chi2, 1) / 2)


def test_small_tables_use_fisher_exact_one_sided() -> None:
    t = two_by_two([4, 1], [1, 5], [10, 30], [500, 400])
    assert t.exact.all()
    for i, table in enumerate([[[4, 1], [10, 500]], [[1, 5], [30, 400]]]):
        ref = stats.fisher_exact(table, alternative="greater").pvalue
        assert t.p_value[i] == pytest.approx(ref, rel=1e-9)


def test_zero_cells_get_haldane_correction() -> None:
    t = two_by_two(5, 0, 0, 100)
    assert np.isfinite(t.prr[0]) and np.isfinite(t.ror[0]) and np.isfinite(t.ror_high[0])
    assert t.ror[0] == pytest.approx(5.5 * 100.5 / (0.5 * 0.5))


def test_host_enrichment_is_a_binomial_tail() -> None:
    assert host_enrichment(6, 8, 0.25)[()] == pytest.approx(stats.binom.sf(5, 8, 0.25))
    assert host_enrichment(0, 8, 0.25)[()] == 1.0


def test_attribute_cells_counts_crashes_and_pairs() -> None:
    # population 0: 3 crashes on value 1 from one host (a busy host), population 1 spread
    value = np.array([1, 1, 1, 0, 1, 0, -1])
    pop = np.array([0, 0, 0, 1, 1, 1, 1])
    pair_pop = np.array([0, 1, 1, 1])
    pair_value = np.array([1, 0, 1, 0])
    cells = attribute_cells(
        "kernel",
        value=value,
        population=pop,
        n_pops=2,
        n_values=2,
        pair_pop=pair_pop,
        pair_value=pair_value,
    )
    got = {
        (int(p), int(v)): (int(c), int(h))
        for p, v, c, h in zip(
            cells.population, cells.value, cells.crashes, cells.hosts, strict=True
        )
    }
    assert got == {(0, 1): (3, 1), (1, 0): (2, 2), (1, 1): (1, 1)}
