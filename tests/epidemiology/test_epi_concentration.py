"""CPU concentration: the largest-cell bound against the exact multinomial law; CPU counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corecensus.epidemiology.concentration import max_cell_pvalue, modal_cells


def exact_max_tail(n: int, m: int, cells: int) -> float:
    """P(max cell >= m) for n items uniform over ``cells`` cells, exactly:
    P(all < m) = n! / C^n [x^n] (sum_{j<m} x^j / j!)^C."""
    poly = [1.0]
    base = [1.0 / math.factorial(j) for j in range(min(m, n + 1))]
    for _ in range(cells):
        out = [0.0] * (n + 1)
        for i, a in enumerate(poly):
            for j, b in enumerate(base):
                if i + j <= n:
                    out[i + j] += a * b
        poly = out
    below = math.factorial(n) * poly[n] / cells**n
    return 1.0 - below


def test_seven_of_seven_on_one_of_sixteen_cpus() -> None:
    # "7 of 7 on CPU 11": 16 * (1/16)^7, exact since 7 > 7/2
    assert max_cell_pvalue(7, 7, 16) == pytest.approx(16 * 16.0**-7)
    assert max_cell_pvalue(7, 7, 16) == pytest.approx(exact_max_tail(7, 7, 16))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=12),
    cells=st.integers(min_value=2, max_value=8),
    data=st.data(),
)
def test_bound_is_exact_above_half_and_conservative_below(
    n: int, cells: int, data: st.DataObject
) -> None:
    m = data.draw(st.integers(min_value=2, max_value=n)) if n >= 2 else 1
    bound = float(max_cell_pvalue(n, m, cells))
    exact = exact_max_tail(n, m, cells) if m >= 2 else 1.0
    assert 0.0 <= bound <= 1.0
    assert bound >= exact - 1e-12
    if m > n / 2:
        assert bound == pytest.approx(exact, rel=1e-9, abs=1e-14)


def test_no_evidence_cases() -> None:
    assert np.all(max_cell_pvalue([5, 1, 3], [1, 1, 3], [64, 64, 1]) == 1.0)


def test_modal_cells_picks_largest_and_breaks_ties() -> None:
    group = np.array([0, 0, 0, 1, 1, 1, 1, 2])
    cell = np.array([3, 3, 5, 2, 7, 7, 2, -1])
    tie = np.array([0, 0, 0, 0, 1, 1, 0, 0], dtype=float)
    m = modal_cells(group, cell, 4, tiebreak=tie)
    assert m.n.tolist() == [3, 4, 0, 0]
    assert m.top.tolist() == [2, 2, 0, 0]
    assert m.cell.tolist() == [3, 7, -1, -1]  # group 1: tie 2-2 broken by the tiebreak sum
    assert m.second.tolist() == [1, 2, 0, 0]
