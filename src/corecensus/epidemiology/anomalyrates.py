"""Each crash's null probability of a hardware-flavoured anomaly, and which crashes are explained.

The host scan (:mod:`~corecensus.epidemiology.hostscan`) counts a host's residual
hardware-flavoured anomalies against a Poisson-binomial law whose per-crash probabilities come
from here. A crash's probability is the anomaly rate of what it is — its population (signature)
and, within the population, its service — *on the other hosts* (leave-one-host-out, so a host's
own anomalies never raise its own expectation), estimated by empirical Bayes in two levels:

1. **Population.** ``(z + kappa r0) / (n + kappa)`` from the population's ``n`` crashes and
   ``z`` anomalies elsewhere, ``r0`` the rate of ordinary populations (not anomaly-heavy and
   spread), ``kappa`` pseudo-crashes: the Gamma prior Marshall's moments fit to the populations'
   spread (:func:`~corecensus.epidemiology.shrinkage.fit_gamma_prior` on counts ``z`` against
   ``n r0``; ``kappa = b / r0`` for the prior's rate ``b``), at most ``anomaly_prior_strength``.
   A fixed 50 pulled a population that one busy host dominates far towards ``r0``: 17 anomalies
   in 89 other crashes (0.19) became 0.13, and the host's 45 crashes of it "expected" 5.7
   anomalies where 11 were ordinary (``bench/fleet_adversary.py``, *numa* seed 1).
2. **Service within the population.** A signature in a shared library (glibc's ``abort``,
   ``std::terminate``) is one population across services whose anomaly rates differ: a service
   whose bug corrupts memory before aborting, another that aborts cleanly. The (population,
   service) rate elsewhere is shrunk to the population's by a Gamma prior on the service's
   relative risk, fitted the same way over the (population, service) cells of populations seen
   in several services; when those show no spread beyond Poisson (``s2 <= 0``, the simulator's
   fleets) every service keeps its population's rate. Before, a healthy host with 459 ``db``
   aborts, 133 anomalous (``db`` aborts elsewhere: 0.34), was held to the population's 0.064
   (``api``, ``cache``, ... abort cleanly) and flagged with p = 9e-14; 12 ``db`` populations
   followed it to ``hardware-suspect`` because three such hosts held half their crashes.

Crashes whose rate elsewhere, at either level, is at least ``explain_min_rate`` on at least
``explain_min_hosts`` other hosts are **explained away** (set aside): wild-pointer and
memory-corrupting bugs produce hardware-flavoured registers on every host they reach. A
(population, host) pair whose anomalies (at least two with a cell) all sit on one cell does not
vote, at either level: anomalies on one CPU per host across several hosts is what a defect
shared by several hosts looks like (one bad stepping failing the same code; issue 9).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from corecensus.epidemiology.segments import Groups, pair_key, weighted_count
from corecensus.epidemiology.shrinkage import fit_gamma_prior

__all__ = ["AnomalyRates", "anomaly_rates", "on_one_cell"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B = NDArray[np.bool_]


@dataclass(frozen=True, slots=True, eq=False)
class AnomalyRates:
    """Per crash ``resid`` (a residual hardware-flavoured anomaly), ``ez`` (its null
    probability, 0 when explained) and ``crash_explained``; ``fleet_rate`` is ``r0``,
    ``pseudo_crashes`` the population level's ``kappa`` and ``service_variance`` the fitted
    spread of services' relative risks within a population (0: none)."""

    resid: B
    ez: F64
    crash_explained: B
    fleet_rate: float
    pseudo_crashes: float
    service_variance: float


def anomaly_rates(
    *,
    population: NDArray[Any],
    service: NDArray[Any] | None,
    host: NDArray[Any],
    n_hosts: int,
    hardware: B,
    cell: NDArray[Any],
    prior_strength: float,
    explain_min_rate: float,
    explain_min_hosts: int,
) -> AnomalyRates:
    """The two-level leave-one-host-out rates of the module docstring, per crash."""
    width = max(n_hosts, 1)
    pop = np.asarray(population)
    # (population, service) cells, then (cell, host) triples: one grouping of the crashes each
    # (the first on a small key); pairs (population, host) are groups of triples
    if service is None:
        ps_inverse: I64 = pop.astype(np.int64)
        ps_pop = np.arange(int(pop.max()) + 1 if pop.size else 0, dtype=np.int64)
    else:
        svc = np.asarray(service).astype(np.int64) + 1  # -1 (unknown) is a service of its own
        n_svc = int(svc.max()) + 1 if svc.size else 1
        ps = Groups.of(pair_key(pop, svc, n_svc))
        ps_inverse, ps_pop = ps.inverse, ps.keys // n_svc
        del ps
    trip = Groups.of(pair_key(ps_inverse, host, width))
    del ps_inverse
    t_ps = trip.keys // width
    t_host = trip.keys % width
    t_pop = ps_pop[t_ps]
    n_t = trip.counts.astype(np.float64)
    z_t = trip.count_where(hardware).astype(np.float64)
    pairs = Groups.of(pair_key(t_pop, t_host, width))
    n_ph = weighted_count(pairs.inverse, n_t, len(pairs))
    z_ph = weighted_count(pairs.inverse, z_t, len(pairs))
    pair_pop = pairs.keys // width
    c = np.asarray(cell)
    sel = hardware & (c >= 0)
    own_ph = ~on_one_cell(pairs.inverse[trip.inverse[sel]], len(pairs), c[sel])
    own_t = own_ph[pairs.inverse]

    n_pops = int(pair_pop.max()) + 1 if pair_pop.size else 0
    n_p = weighted_count(pair_pop[own_ph], n_ph[own_ph], n_pops)
    z_p = weighted_count(pair_pop[own_ph], z_ph[own_ph], n_pops)
    h_p = np.bincount(pair_pop[own_ph], minlength=n_pops)
    # Fleet prior: the anomaly rate of "ordinary" populations (not anomaly-heavy and spread),
    # with half a pseudo-anomaly so that a fleet without any anomaly keeps a non-zero rate.
    with np.errstate(divide="ignore", invalid="ignore"):
        rate_p = np.where(n_p > 0, z_p / n_p, 0.0)
    heavy = (rate_p >= explain_min_rate) & (h_p > explain_min_hosts)
    ordinary = ~heavy & (n_p > 0)
    r0 = (float(z_p[ordinary].sum()) + 0.5) / (float(n_p[ordinary].sum()) + 1.0)
    # level 1: how far populations' rates spread around r0, as pseudo-crashes (at most the
    # configured strength: never shrink harder than before)
    prior1 = fit_gamma_prior(z_p[ordinary], n_p[ordinary] * r0)
    kappa = prior_strength
    if prior1.variance > 0 and prior1.mean > 0:
        kappa = min(kappa, prior1.rate / r0)
    other_n = n_p[pair_pop] - np.where(own_ph, n_ph, 0.0)
    other_z = z_p[pair_pop] - np.where(own_ph, z_ph, 0.0)
    a_ph = (other_z + prior_strength * r0) / (other_n + prior_strength)
    if kappa < prior_strength:
        # only ever upwards: the fitted prior is a Gamma fitted to a mixture (most populations
        # near r0, a few wild-pointer ones far above), whose weight near zero would pull a
        # clean population below r0 more than the data say
        mean1 = r0 * prior1.mean
        a_ph = np.maximum(a_ph, (other_z + kappa * mean1) / (other_n + kappa))
    explained_ph = (h_p[pair_pop] - own_ph >= explain_min_hosts) & (a_ph >= explain_min_rate)

    # level 2: the service within the population, from populations seen in several services
    n_cells = int(t_ps.max()) + 1 if t_ps.size else 0
    n_ps = weighted_count(t_ps[own_t], n_t[own_t], n_cells)
    z_ps = weighted_count(t_ps[own_t], z_t[own_t], n_cells)
    h_ps = np.bincount(t_ps[own_t], minlength=n_cells)
    a_t = a_ph[pairs.inverse]
    explained_t = explained_ph[pairs.inverse]
    variance = 0.0
    if service is not None and n_cells:
        cells_of_pop = np.bincount(ps_pop, minlength=n_pops)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate_cell_pop = np.where(n_p > 0, z_p / n_p, 0.0)[ps_pop]
        fit = (cells_of_pop[ps_pop] >= 2) & ~heavy[ps_pop] & (n_ps > 0)
        prior2 = fit_gamma_prior(z_ps[fit], n_ps[fit] * rate_cell_pop[fit])
        variance = prior2.variance if prior2.mean > 0 else 0.0
        if variance > 0:
            o_n = n_ps[t_ps] - np.where(own_t, n_t, 0.0)
            o_z = z_ps[t_ps] - np.where(own_t, z_t, 0.0)
            # the Gamma posterior mean of the service's relative risk, with mean 1 (the
            # population's own rate), times that rate
            a_t = a_t * service_factor(o_z, o_n * a_t, 1.0 / variance)
            explained_t = explained_t | (
                (h_ps[t_ps] - own_t >= explain_min_hosts) & (a_t >= explain_min_rate)
            )
    crash_expl = explained_t[trip.inverse]
    ez = a_t[trip.inverse]
    ez[crash_expl] = 0.0
    return AnomalyRates(
        resid=hardware & ~crash_expl,
        ez=ez,
        crash_explained=crash_expl,
        fleet_rate=r0,
        pseudo_crashes=float(kappa),
        service_variance=float(variance),
    )


def service_factor(observed: F64, expected: F64, shape: float) -> F64:
    """A service's relative risk within its population from ``observed`` anomalies where its
    population's rate ``expected`` elsewhere, under a Gamma(``shape``, ``shape``) prior (mean
    1): the posterior mean when it is above 1; below 1, the posterior's 90 % quantile, and at
    most 1. Downwards the prior is not trusted: fitted to mostly clean services and a few dirty
    ones (shape 1/3 on ``bench/fleet_adversary.py``'s fleets) its mass near zero would hold a
    clean service with 50 crashes elsewhere to a quarter of its population's rate; a service
    goes below its population's rate only as far as its own crashes make sure of. The quantile
    is Wilson and Hilferty's (1931, "The distribution of chi-square", PNAS 17:684-688), within
    a few per cent of the exact one down to shape 1/3 (numerically cheap: one per crash group
    at fleet scale)."""
    a = shape + observed
    b = shape + expected
    mean = a / b
    h = 1.0 / (9.0 * a)
    q90 = a * (1.0 - h + 1.2815516 * np.sqrt(h)) ** 3 / b
    out: F64 = np.where(mean >= 1.0, mean, np.minimum(q90, 1.0))
    return out


def on_one_cell(group: I64, n_groups: int, cell: NDArray[Any]) -> B:
    """Per group: at least two of its anomalous crashes with a cell (``group`` and ``cell`` of
    each), all on the same cell (crashes without a cell, e.g. pinned ones, neither count nor
    spoil it)."""
    out = np.zeros(n_groups, dtype=bool)
    if not group.size:
        return out
    width = int(cell.max()) + 1
    g = Groups.of(pair_key(group, cell, width))
    g_pair = g.keys // width
    distinct = np.bincount(g_pair, minlength=n_groups)
    total = np.bincount(g_pair, weights=g.counts, minlength=n_groups)
    out[:] = (distinct == 1) & (total >= 2)
    return out
