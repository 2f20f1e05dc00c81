"""Observed against expected, per (population, host) and per host, from exposure.

For every (population, host) cell with crashes: the expected count from the host's share of the
population's exposure (:mod:`corecensus.epidemiology.exposure`), the exact Poisson upper-tail
p-value (:mod:`~corecensus.epidemiology.poisson`), Benjamini-Hochberg q-values across the
population's exposed hosts (:mod:`~corecensus.epidemiology.multiplicity`), and the
Gamma-Poisson shrunken rate ratio with its 5% posterior quantile
(:mod:`~corecensus.epidemiology.shrinkage`, prior fitted per population). Per population, the
dispersion of its hosts against exposure (:mod:`~corecensus.epidemiology.dispersion`). Per host
over all crashes, the same observed/expected/p/q/shrunken ratio: busy hosts show up here, which
is why the hardware scan does not use it.

Units: counts are crashes; ratios are dimensionless (1 = as expected from exposure).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import special

from corecensus.epidemiology.dispersion import Dispersion, poisson_dispersion
from corecensus.epidemiology.exposure import ExposureIndex
from corecensus.epidemiology.multiplicity import benjamini_hochberg, grouped_benjamini_hochberg
from corecensus.epidemiology.poisson import poisson_upper
from corecensus.epidemiology.segments import weighted_count
from corecensus.epidemiology.shrinkage import GammaPrior, fit_gamma_prior

__all__ = ["HostRates", "PairRates", "host_rates", "pair_rates"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@dataclass(frozen=True, slots=True, eq=False)
class PairRates:
    """Per (population, host) cell: ``expected``, ``p_value``, ``q_value``, shrunken
    ``rate_ratio`` and its 5% quantile ``rate_ratio_low``; ``expected`` 0 means the host has no
    exposure in the population's strata (the cell is left out of the tests, ``p`` = NaN).
    Per population: ``units`` exposed hosts, ``dispersion`` and the Gamma ``priors``."""

    expected: F64
    p_value: F64
    q_value: F64
    rate_ratio: F64
    rate_ratio_low: F64
    units: I64
    dispersion: Dispersion
    priors: tuple[GammaPrior, ...]


def pair_rates(
    index: ExposureIndex,
    *,
    pair_pop: I64,
    pair_host: I64,
    pair_count: I64,
    crash_pop: NDArray[np.int32],
    n_pops: int,
    mid_p: bool = False,
) -> PairRates:
    """Rates for the cells given (pairs sorted by population, as :class:`Groups` makes them)."""
    expected, units = index.expected_for_pairs(pair_pop, pair_host, crash_pop, n_pops)
    o = pair_count.astype(np.float64)
    ok = expected > 0
    p = np.full(o.size, np.nan)
    p[ok] = poisson_upper(o[ok], expected[ok], mid_p=mid_p)
    q = np.full(o.size, np.nan)
    q[ok] = grouped_benjamini_hochberg(p[ok], pair_pop[ok], units)
    # every crash's stratum has exposure, so sum_h E[P, h] over all hosts is the crash count
    e_all = weighted_count(pair_pop, o, n_pops)
    exp_seen = weighted_count(pair_pop[ok], expected[ok], n_pops)
    obs_ok = weighted_count(pair_pop[ok], o[ok], n_pops)
    disp = poisson_dispersion(
        o[ok], expected[ok], group=pair_pop[ok], n_groups=n_pops, expected_total=e_all, units=units
    )
    # Marshall's moments per population, vectorized (see shrinkage.fit_gamma_prior): hosts
    # without crashes add m^2 E each, i.e. m^2 (E_all - E_seen) together
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.where(e_all > 0, obs_ok / e_all, 1.0)
        mp = m[pair_pop[ok]]
        dev = weighted_count(pair_pop[ok], (o[ok] - mp * expected[ok]) ** 2 / expected[ok], n_pops)
        dev += m * m * np.maximum(e_all - exp_seen, 0.0)
        s2 = np.where(e_all > 0, dev / e_all - m * np.maximum(units, 1) / e_all, 0.0)
    s2 = np.maximum(np.nan_to_num(s2, nan=0.0), 0.0)
    priors = tuple(GammaPrior(mean=float(a), variance=float(b)) for a, b in zip(m, s2, strict=True))
    hetero = s2 > 0
    shape = np.where(hetero, m * m / np.where(hetero, s2, 1.0), 1.0)
    rate = np.where(hetero, m / np.where(hetero, s2, 1.0), 1.0)
    a = shape[pair_pop]
    b = rate[pair_pop]
    het = hetero[pair_pop]
    rr = np.where(het, (a + o) / (b + expected), m[pair_pop])
    with np.errstate(invalid="ignore"):
        low = np.where(het, special.gammaincinv(a + o, 0.05) / (b + expected), m[pair_pop])
    rr = np.where(ok, rr, np.nan)
    low = np.where(ok, low, np.nan)
    return PairRates(
        expected=expected,
        p_value=p,
        q_value=q,
        rate_ratio=rr,
        rate_ratio_low=low,
        units=units,
        dispersion=disp,
        priors=priors,
    )


@dataclass(frozen=True, slots=True, eq=False)
class HostRates:
    """Per host over all crashes: ``expected``, ``p_value``, ``q_value`` (BH over exposed
    hosts), shrunken ``rate_ratio``; NaN for hosts without exposure."""

    observed: I64
    expected: F64
    p_value: F64
    q_value: F64
    rate_ratio: F64
    prior: GammaPrior


def host_rates(index: ExposureIndex, crash_host: NDArray[np.int32], *, mid_p: bool) -> HostRates:
    observed = np.bincount(crash_host, minlength=index.n_hosts).astype(np.int64)
    expected = index.expected_per_host()
    ok = expected > 0
    p = np.full(index.n_hosts, np.nan)
    p[ok] = poisson_upper(observed[ok], expected[ok], mid_p=mid_p)
    q = np.full(index.n_hosts, np.nan)
    q[ok] = benjamini_hochberg(p[ok])
    prior = fit_gamma_prior(observed[ok], expected[ok])
    rr = np.full(index.n_hosts, np.nan)
    rr[ok] = prior.posterior_mean(observed[ok], expected[ok])
    return HostRates(
        observed=observed, expected=expected, p_value=p, q_value=q, rate_ratio=rr, prior=prior
    )
