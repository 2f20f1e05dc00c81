"""Gamma-Poisson (empirical Bayes) shrinkage of rate ratios, so tiny hosts do not look alarming.

Model: host *i* has observed count ``O_i ~ Poisson(theta_i E_i)`` where ``E_i`` is its expected
count from exposure and ``theta_i ~ Gamma(shape a, rate b)`` is its relative risk. The posterior
mean ``(a + O_i) / (b + E_i)`` pulls a host with little exposure (1 crash where 0.01 was expected,
raw ratio 100) towards the fleet mean, while a host with much exposure keeps its own ratio.

The prior is fitted by the method of moments of Marshall (1991, "Mapping disease and mortality
rates using empirical Bayes estimators", Applied Statistics 40:283-294), as in Clayton & Kaldor
(1987, "Empirical Bayes estimates of age-standardized relative risks for use in disease mapping",
Biometrics 43:671-681):

    m  = sum O / sum E
    s2 = sum E_i (O_i/E_i - m)^2 / sum E  -  m / mean(E)

with ``a = m^2 / s2`` and ``b = m / s2``. If ``s2 <= 0`` the data show no extra-Poisson
variation and every host is shrunk to ``m``. Units with ``O = 0`` enter the sums only through
``sum E`` and their count, so callers pass the non-zero cells plus two totals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special

__all__ = ["GammaPrior", "fit_gamma_prior"]

F64 = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class GammaPrior:
    """Gamma(shape, rate) prior on relative risk; ``shape = inf`` means no heterogeneity."""

    mean: float
    variance: float

    @property
    def shape(self) -> float:
        return float("inf") if self.variance <= 0 else self.mean**2 / self.variance

    @property
    def rate(self) -> float:
        return float("inf") if self.variance <= 0 else self.mean / self.variance

    def posterior_mean(self, observed: Any, expected: Any) -> F64:
        """Shrunken relative risk ``(a + O) / (b + E)`` (dimensionless; 1 = fleet average)."""
        o = np.asarray(observed, dtype=np.float64)
        e = np.asarray(expected, dtype=np.float64)
        if self.variance <= 0:
            return np.full(np.broadcast(o, e).shape, self.mean, dtype=np.float64)
        out: F64 = (self.shape + o) / (self.rate + e)
        return out

    def posterior_quantile(self, observed: Any, expected: Any, q: float) -> F64:
        """Quantile ``q`` of the Gamma posterior of the relative risk (e.g. 0.05 for a lower
        bound); equals the mean when there is no heterogeneity."""
        o = np.asarray(observed, dtype=np.float64)
        e = np.asarray(expected, dtype=np.float64)
        if self.variance <= 0:
            return np.full(np.broadcast(o, e).shape, self.mean, dtype=np.float64)
        out: F64 = special.gammaincinv(self.shape + o, q) / (self.rate + e)
        return out


def fit_gamma_prior(
    observed: Any, expected: Any, *, total_expected: float | None = None, units: int | None = None
) -> GammaPrior:
    """Marshall's moment estimate of the Gamma prior.

    ``observed``/``expected`` hold the cells with counts (zeros may be included or left out);
    ``total_expected`` is the sum of ``E`` over all units and ``units`` their number (both
    default to the cells given). Returns mean 1, variance 0 when there is nothing to fit.
    """
    o = np.asarray(observed, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    keep = e > 0
    o, e = o[keep], e[keep]
    e_all = float(e.sum()) if total_expected is None else float(total_expected)
    n_units = int(e.size) if units is None else int(units)
    if e_all <= 0 or n_units <= 0:
        return GammaPrior(mean=1.0, variance=0.0)
    m = float(o.sum()) / e_all
    if m <= 0:
        return GammaPrior(mean=0.0, variance=0.0)
    given = float(np.sum((o - m * e) ** 2 / e))
    # units with O = 0 that were not passed contribute (0 - m E)^2 / E = m^2 E each
    absent = max(e_all - float(e.sum()), 0.0)
    weighted_ss = given + m * m * absent
    s2 = weighted_ss / e_all - m / (e_all / n_units)
    return GammaPrior(mean=m, variance=max(s2, 0.0))
