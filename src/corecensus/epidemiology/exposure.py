"""Exposure aligned with crashes: who ran what, for how many exposure-hours.

The expected number of crashes of population *P* on host *h* is the population's count spread
over hosts in proportion to exposure, *stratified* by the (service, version) the crashes came
from:

    E[P, h] = sum_s  n[P, s] * X[h, s] / X[., s]

where ``X[h, s]`` is host *h*'s exposure-hours in stratum *s* and ``n[P, s]`` the population's
crashes in it. Stratifying matters: a bug that exists only in version 2 is expected only on
hosts that ran version 2, and a bug in one service only where that service runs. A crash whose
(service, version) is unknown or absent from the exposure falls back to its service's stratum,
then to the whole fleet. ``sum_h E[P, h] = n[P]`` by construction.

Hosts are unified by name: crash hosts keep their codes, hosts found only in the exposure are
appended (they crashed zero times but count as exposed units).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from corecensus.epidemiology.segments import Groups, pair_key, segment_rank, weighted_count
from corecensus.epidemiology.table import CrashTable, ExposureTable

__all__ = ["ExposureIndex", "build_exposure_index"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

# Above this many (pair, stratum) expansions a population's strata are collapsed to one, to
# bound memory; see ExposureIndex.expected_for_pairs.
MAX_EXPANSION = 50_000_000
# Below this many (host, stratum) cells the exposure is also kept as a dense array (8 bytes per
# cell), which turns lookups into plain indexing.
DENSE_CELLS = 20_000_000
# A population over more strata than this is collapsed to coarser strata.
MAX_STRATA = 8


def _count_keys(key: I64, size: int) -> tuple[I64, I64]:
    """Distinct keys (sorted) and their counts: a bincount when ``size`` is small."""
    if size <= DENSE_CELLS:
        counts = np.bincount(key, minlength=size)
        keys = np.flatnonzero(counts).astype(np.int64)
        return keys, counts[keys].astype(np.int64)
    g = Groups.of(key)
    return g.keys, g.counts


@dataclass(frozen=True, slots=True, eq=False)
class ExposureIndex:
    """Exposure per (host, stratum) in unified host codes, and each crash's stratum.

    Strata: ``0`` the fleet, ``1 + s`` service *s*, ``1 + S + s * V + v`` service *s* at
    version *v* (crash vocabularies, ``S``/``V`` their sizes).
    """

    hosts: tuple[str, ...]
    n_strata: int
    cell_keys: I64  # host * n_strata + stratum, sorted
    cell_hours: F64
    stratum_hours: F64
    stratum_hosts: I64
    crash_stratum: I64
    host_hours: F64  # per unified host, all exposure
    exposure_host: I64  # each exposure row's unified host code
    exposure_service: I64  # each exposure row's service in the crash vocabulary (-1 other)
    exposure_version: I64
    n_services: int = 0
    dense: F64 | None = None  # X as a flat host * n_strata array, when small enough

    @property
    def n_hosts(self) -> int:
        return len(self.hosts)

    @property
    def exposed_hosts(self) -> int:
        return int(np.count_nonzero(self.host_hours > 0))

    def hours(self, host: NDArray[Any], stratum: NDArray[Any]) -> F64:
        """``X[h, s]`` for arrays of hosts and strata (0 where the host has none)."""
        key = pair_key(host, stratum, self.n_strata)
        if self.dense is not None:
            dense: F64 = self.dense[key]
            return dense
        pos = np.searchsorted(self.cell_keys, key)
        pos = np.minimum(pos, max(len(self.cell_keys) - 1, 0))
        if not len(self.cell_keys):
            return np.zeros(key.shape, dtype=np.float64)
        hit = self.cell_keys[pos] == key
        out: F64 = np.where(hit, self.cell_hours[pos], 0.0)
        return out

    def coarser(self) -> I64:
        """Each stratum's parent: (service, version) -> service -> fleet."""
        parent = np.zeros(self.n_strata, dtype=np.int64)
        n_s = self.n_services
        if n_s:
            n_v = (self.n_strata - 1 - n_s) // n_s
            parent[1 : 1 + n_s] = 0
            sv = np.arange(1 + n_s, self.n_strata)
            parent[sv] = 1 + (sv - 1 - n_s) // max(n_v, 1)
        return parent

    def population_strata(self, crash_pop: NDArray[Any], n_pops: int) -> tuple[I64, I64, F64]:
        """(population, stratum, crashes) triples, sorted by population.

        A population spread over more than ``MAX_STRATA`` strata is collapsed to service
        strata, then to the fleet, which bounds the per-pair work of
        :meth:`expected_for_pairs` (a signature normally lives in one or two versions of one
        service; a population over every version of every service gains nothing from
        stratification anyway).
        """
        pop = np.asarray(crash_pop, dtype=np.int64)
        stratum = self.crash_stratum
        parent = self.coarser()
        for _ in range(3):
            keys, counts = _count_keys(
                pair_key(pop, stratum, self.n_strata), n_pops * self.n_strata
            )
            t_pop = keys // self.n_strata
            per_pop = np.bincount(t_pop, minlength=n_pops)
            wide = per_pop > MAX_STRATA
            if not wide.any():
                break
            stratum = np.where(wide[pop], parent[stratum], stratum)
        return t_pop, keys % self.n_strata, counts.astype(np.float64)

    def expected_for_pairs(
        self, pair_pop: I64, pair_host: I64, crash_pop: NDArray[Any], n_pops: int
    ) -> tuple[F64, I64]:
        """``E[P, h]`` for the given pairs, and the number of exposed hosts per population.

        The second result counts hosts with exposure in any of the population's strata
        (bounded by the number of exposed hosts); it is the number of units BH and the
        dispersion test run over.
        """
        t_pop, t_str, t_n = self.population_strata(crash_pop, n_pops)
        per_pop = np.bincount(t_pop, minlength=n_pops)
        if int(per_pop[pair_pop].sum()) > MAX_EXPANSION:
            # collapse every population to the fleet stratum
            t_pop = np.flatnonzero(per_pop > 0)
            t_str = np.zeros_like(t_pop)
            t_n = np.bincount(np.asarray(crash_pop, np.int64), minlength=n_pops)[t_pop].astype(
                np.float64
            )
            per_pop = np.bincount(t_pop, minlength=n_pops)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_w = np.where(self.stratum_hours[t_str] > 0, t_n / self.stratum_hours[t_str], 0.0)
        first = np.concatenate([[0], np.cumsum(per_pop)[:-1]]).astype(np.int64)
        reps = per_pop[pair_pop]
        expected: F64
        if int(reps.max(initial=0)) <= 1:
            # one stratum per population: no expansion needed
            tri = first[pair_pop]
            tri = np.minimum(tri, max(t_str.size - 1, 0))
            share = self.hours(pair_host, t_str[tri]) if t_str.size else np.zeros(tri.size)
            expected = np.where(reps > 0, share * (t_w[tri] if t_w.size else 0.0), 0.0)
        else:
            rows = np.repeat(np.arange(pair_pop.size, dtype=np.int64), reps)
            starts = np.concatenate([[0], np.cumsum(reps)[:-1]]).astype(np.int64)
            within = segment_rank(rows.size, starts[reps > 0])
            tri = first[pair_pop][rows] + within
            share = self.hours(pair_host[rows], t_str[tri])
            expected = weighted_count(rows, share * t_w[tri], pair_pop.size)
        hosts = weighted_count(t_pop, self.stratum_hosts[t_str], n_pops)
        units: I64 = np.minimum(hosts, self.exposed_hosts).astype(np.int64)
        return expected, units

    def expected_per_host(self) -> F64:
        """Expected crashes of each host over all populations (same stratification)."""
        counts = np.bincount(self.crash_stratum, minlength=self.n_strata).astype(np.float64)
        s = self.cell_keys % self.n_strata
        h = self.cell_keys // self.n_strata
        with np.errstate(divide="ignore", invalid="ignore"):
            w = np.where(self.stratum_hours[s] > 0, counts[s] / self.stratum_hours[s], 0.0)
        out: F64 = weighted_count(h, self.cell_hours * w, self.n_hosts)
        return out


def build_exposure_index(crashes: CrashTable, exposure: ExposureTable) -> ExposureIndex:
    """Align ``exposure`` with ``crashes`` (vocabularies matched by name)."""
    crash_hosts = crashes.host.vocab
    known = set(crash_hosts)
    extra = tuple(sorted({h for h in exposure.host.vocab if h not in known}))
    hosts = crash_hosts + extra
    host_index = {h: i for i, h in enumerate(hosts)}
    e_host = np.array([host_index[h] for h in exposure.host.vocab], dtype=np.int64)[
        exposure.host.codes
    ]
    svc = exposure.service.remap(crashes.service.vocab)
    ver = exposure.version.remap(crashes.version.vocab)
    n_s = len(crashes.service.vocab)
    n_v = max(len(crashes.version.vocab), 1)
    n_strata = 1 + n_s + n_s * n_v
    hrs = exposure.hours

    # every exposure row counts in the fleet stratum, its service's and its (service, version)'s
    keys = [pair_key(e_host, np.zeros_like(e_host), n_strata)]
    weights = [hrs]
    has_s = svc >= 0
    keys.append(pair_key(e_host[has_s], 1 + svc[has_s], n_strata))
    weights.append(hrs[has_s])
    has_sv = has_s & (ver >= 0)
    keys.append(pair_key(e_host[has_sv], 1 + n_s + svc[has_sv] * n_v + ver[has_sv], n_strata))
    weights.append(hrs[has_sv])
    cells = Groups.of(np.concatenate(keys))
    cell_hours = cells.sum(np.concatenate(weights))
    keep = cell_hours > 0
    cell_keys = cells.keys[keep]
    cell_hours = cell_hours[keep]
    cell_stratum = cell_keys % n_strata
    stratum_hours = weighted_count(cell_stratum, cell_hours, n_strata)
    stratum_hosts = np.bincount(cell_stratum, minlength=n_strata).astype(np.int64)

    # each crash's stratum: (service, version) if exposed, else service if exposed, else fleet
    cs = crashes.service.codes.astype(np.int64)
    cv = crashes.version.codes.astype(np.int64)
    sv = np.where((cs >= 0) & (cv >= 0), 1 + n_s + cs * n_v + cv, 0)
    s_only = np.where(cs >= 0, 1 + cs, 0)
    stratum = np.where(stratum_hours[sv] > 0, sv, np.where(stratum_hours[s_only] > 0, s_only, 0))
    stratum = np.where(sv == 0, np.where(stratum_hours[s_only] > 0, s_only, 0), stratum)
    fleet = cell_stratum == 0
    host_hours = weighted_count(cell_keys[fleet] // n_strata, cell_hours[fleet], len(hosts))
    dense = None
    if len(hosts) * n_strata <= DENSE_CELLS:
        dense = np.zeros(len(hosts) * n_strata, dtype=np.float64)
        dense[cell_keys] = cell_hours
    return ExposureIndex(
        n_services=n_s,
        dense=dense,
        hosts=hosts,
        n_strata=n_strata,
        cell_keys=cell_keys,
        cell_hours=cell_hours,
        stratum_hours=stratum_hours,
        stratum_hosts=stratum_hosts,
        crash_stratum=stratum.astype(np.int64),
        host_hours=host_hours,
        exposure_host=e_host,
        exposure_service=svc,
        exposure_version=ver,
    )
