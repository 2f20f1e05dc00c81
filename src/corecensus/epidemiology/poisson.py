"""Exact Poisson tests of observed against expected counts.

Assumption: under the null hypothesis the count is Poisson with a known mean ``expected`` (for a
host, its share of a population's crashes by exposure-hours). The one-sided upper test gives
``P(X >= observed)``; the *mid-p* variant ``P(X > observed) + P(X = observed) / 2`` (Lancaster
1961, "Significance tests in discrete distributions", JASA 56:223-234) is less conservative for
small counts and is offered as an option. All functions are vectorized NumPy ufunc calls
(``scipy.special.pdtr``/``pdtrc``), so a million host-population cells cost milliseconds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special

from corecensus.epidemiology.tails import binomial_upper, unit_probability

__all__ = ["poisson_lower", "poisson_rate_ratio_test", "poisson_upper"]

F64 = NDArray[np.float64]


def poisson_upper(observed: Any, expected: Any, *, mid_p: bool = False) -> F64:
    """One-sided p-value ``P(X >= observed)`` for ``X ~ Poisson(expected)``.

    ``observed`` are counts (>= 0), ``expected`` means (>= 0). An expected of 0 with an observed
    count gives 0 (impossible under the null); observed 0 gives 1. With ``mid_p`` the point mass
    at ``observed`` counts half.
    """
    o = np.asarray(observed, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        # pdtrc(k, m) = P(X > k); P(X >= o) = P(X > o - 1)
        p = np.where(o <= 0, 1.0, special.pdtrc(o - 1.0, e))
        if mid_p:
            pmf = np.exp(special.xlogy(o, e) - e - special.gammaln(o + 1.0))
            p = np.where(o <= 0, 1.0 - 0.5 * np.exp(-e), p - 0.5 * pmf)
    return unit_probability(p)


def poisson_lower(observed: Any, expected: Any) -> F64:
    """One-sided p-value ``P(X <= observed)`` for ``X ~ Poisson(expected)`` (a deficit test).

    ``P(X = 0) = exp(-expected)`` is the "absent where expected" probability used for onsets.
    """
    o = np.asarray(observed, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    out: F64 = np.clip(special.pdtr(o, e), 0.0, 1.0)
    return out


def poisson_rate_ratio_test(n1: Any, e1: Any, n2: Any, e2: Any) -> F64:
    """One-sided test that rate 2 exceeds rate 1, conditional on the total count.

    Given ``n1 + n2`` events, ``n2 ~ Binomial(n1 + n2, e2 / (e1 + e2))`` under equal rates
    (Przyborowski & Wilenski 1940, "Homogeneity of results in testing samples from Poisson
    series", Biometrika 31:313-323). Returns ``P(N2 >= n2)``.
    """
    a = np.asarray(n1, dtype=np.float64)
    b = np.asarray(n2, dtype=np.float64)
    x = np.asarray(e1, dtype=np.float64)
    y = np.asarray(e2, dtype=np.float64)
    n = a + b
    with np.errstate(invalid="ignore", divide="ignore"):
        prob = y / (x + y)
        p = binomial_upper(b, n, prob)
    return unit_probability(p)
