"""The whole-table facts :func:`~corecensus.epidemiology.analyze` computes once, step by step.

Each step is a small function of arrays (no loop per crash) with its own test in
tests/epidemiology/test_epi_facts.py; :mod:`~corecensus.epidemiology.analysis` calls them in
order and reads their results in its loop over populations:

1. :func:`exposure_index` — align exposure with the crashes, or say why there are no rates;
2. :func:`group_pairs` — crashes grouped by (population, host);
3. :func:`cpu_counts`, :func:`scan_settings`, :func:`time_order` — inputs of the host scan;
4. :func:`exposure_rates` — observed against expected per pair and per host;
5. :func:`anomaly_counts` — crashes per population and anomaly class (all crashes, and those
   on each population's top host);
6. :func:`top_pairs`, :func:`excess_pairs` — each population's largest host, and the hosts in
   excess of their exposure;
7. :func:`candidate_pairs`, :func:`candidate_cells` — the pairs a population's verdict looks at,
   with their modal CPU and its concentration p-value;
8. :func:`cited_rows` — the crashes a finding may cite (a suspect is a candidate pair), so their
   ids can be looked up at once when the table holds a lookup rather than an id per crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from corecensus.epidemiology.concentration import max_cell_pvalue, modal_cells
from corecensus.epidemiology.exposure import ExposureIndex, build_exposure_index
from corecensus.epidemiology.hostscan import ScanSettings
from corecensus.epidemiology.onset import CumulativeExposure
from corecensus.epidemiology.params import AnalysisParams
from corecensus.epidemiology.rates import HostRates, PairRates, host_rates, pair_rates
from corecensus.epidemiology.segments import Groups, pair_key
from corecensus.epidemiology.table import CrashTable, ExposureTable
from corecensus.model import ANOMALY_NAMES

__all__ = [
    "RATES_UNAVAILABLE",
    "Candidates",
    "ExposureRates",
    "PairTable",
    "anomaly_counts",
    "candidate_cells",
    "candidate_pairs",
    "cited_rows",
    "excess_pairs",
    "exposure_index",
    "exposure_rates",
    "given_host_cpus",
    "group_pairs",
    "scan_settings",
    "time_order",
    "top_pairs",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B = NDArray[np.bool_]

RATES_UNAVAILABLE = (
    "Rates unavailable: no exposure was given, so no crashes-per-exposure-hour "
    "rates, Poisson excess tests or dispersion tests were computed; host shares of "
    "crashes stand in for them."
)


def exposure_index(
    crashes: CrashTable, exposure: ExposureTable | None
) -> tuple[ExposureIndex | None, str | None]:
    """The exposure aligned with the crashes, or ``None`` and the note saying rates are
    unavailable (no exposure, or none with positive hours)."""
    if exposure is None or len(exposure) == 0 or not float(exposure.hours.sum()) > 0:
        return None, RATES_UNAVAILABLE
    return build_exposure_index(crashes, exposure), None


@dataclass(frozen=True, slots=True, eq=False)
class PairTable:
    """Crashes grouped by (population, host) pair: ``groups`` over the key
    ``population * n_hosts + host`` (so pairs are sorted by population, then host), each pair's
    ``pop`` and ``host``, and ``by_size``, the pairs sorted by population then largest first."""

    groups: Groups
    pop: I64
    host: I64
    by_size: I64

    @property
    def counts(self) -> I64:
        return self.groups.counts

    def __len__(self) -> int:
        return len(self.groups)


def group_pairs(population: NDArray[np.int32], host: NDArray[np.int32], n_hosts: int) -> PairTable:
    """Group crashes by (population, host); ``n_hosts`` bounds the host codes."""
    width = max(n_hosts, 1)
    groups = Groups.of(pair_key(population, host, width))
    pop = groups.keys // width
    return PairTable(
        groups=groups,
        pop=pop,
        host=groups.keys % width,
        by_size=np.lexsort((-groups.counts, pop)).astype(np.int64),
    )


def given_host_cpus(crashes: CrashTable, n_hosts: int) -> I64 | None:
    """The table's ``host_cpus`` facts over ``n_hosts`` hosts (hosts with exposure only get 0,
    unknown), or ``None`` when the table has none. Never inferred from other hosts: the host
    scan's placement falls back on each host's own crashes (issue 9)."""
    if crashes.host_cpus is None:
        return None
    given = np.zeros(n_hosts, dtype=np.int64)
    given[: len(crashes.host_cpus)] = crashes.host_cpus
    return given


def scan_settings(params: AnalysisParams) -> ScanSettings:
    """The host scan's part of the analysis parameters."""
    return ScanSettings(
        host_alpha=params.host_alpha,
        window_alpha=params.window_alpha,
        stream_alpha=params.stream_alpha,
        anomaly_prior_strength=params.anomaly_prior_strength,
        explain_min_rate=params.explain_min_rate,
        explain_min_hosts=params.explain_min_hosts,
        streaming=params.streaming,
        exact_below=params.host_p_exact_below,
        stream_exact_below=params.stream_p_exact_below,
    )


def time_order(time_us: I64) -> I64:
    """A stable argsort of crash times (ties keep table order)."""
    t_rel = time_us - (int(time_us.min()) if len(time_us) else 0)
    return np.argsort(t_rel, kind="stable").astype(np.int64)


@dataclass(frozen=True, slots=True, eq=False)
class ExposureRates:
    """Rates against exposure: per pair, per host, the cumulative exposure curve the change
    points use, and a note when crashed hosts have no exposure."""

    pairs: PairRates
    hosts: HostRates
    curve: CumulativeExposure
    note: str | None


def exposure_rates(
    index: ExposureIndex,
    exposure: ExposureTable,
    crashes: CrashTable,
    pairs: PairTable,
    n_pops: int,
    params: AnalysisParams,
) -> ExposureRates:
    """Observed against expected crashes per (population, host) pair and per host."""
    rates = pair_rates(
        index,
        pair_pop=pairs.pop,
        pair_host=pairs.host,
        pair_count=pairs.counts,
        crash_pop=crashes.population.codes,
        n_pops=n_pops,
        mid_p=params.mid_p,
    )
    hrates = host_rates(index, crashes.host.codes, mid_p=params.mid_p)
    curve = CumulativeExposure(
        exposure.start_us, exposure.end_us, exposure.hours, index.exposure_service
    )
    n_crash_hosts = len(crashes.host.vocab)
    crashed = np.bincount(crashes.host.codes, minlength=n_crash_hosts) > 0
    unexposed = index.host_hours[:n_crash_hosts] <= 0
    missing = int(np.count_nonzero(crashed & unexposed))
    note = None
    if missing:
        note = (
            f"{missing} host(s) have crashes but no exposure rows; their rates are "
            "unavailable and they are left out of the Poisson tests."
        )
    return ExposureRates(pairs=rates, hosts=hrates, curve=curve, note=note)


def anomaly_counts(
    population: NDArray[np.int32],
    anomaly_mask: NDArray[np.uint16],
    hardware: B,
    n_pops: int,
    where: B | None = None,
) -> I64:
    """Crashes per population (rows) and anomaly class (columns): column 0 counts
    hardware-flavoured crashes, column ``b + 1`` crashes with ``ANOMALY_NAMES[b]``. Only crashes
    where ``where`` holds count, when given."""
    n_bits = len(ANOMALY_NAMES)
    out = np.zeros((n_pops, n_bits + 1), dtype=np.int64)
    out[:, 0] = np.bincount(
        population[hardware if where is None else where & hardware], minlength=n_pops
    )
    for b in range(n_bits):
        has = (anomaly_mask & np.uint16(1 << b)) != 0
        if where is not None:
            has &= where
        if has.any():
            out[:, b + 1] = np.bincount(population[has], minlength=n_pops)
    return out


def top_pairs(pairs: PairTable, n_pops: int) -> I64:
    """Each population's largest pair (ties: the lower host code), ``-1`` for a population
    without crashes."""
    order = pairs.by_size
    first = np.ones(order.size, dtype=bool)
    first[1:] = pairs.pop[order][1:] != pairs.pop[order][:-1]
    top = np.full(n_pops, -1, dtype=np.int64)
    top[pairs.pop[order[first]]] = order[first]
    return top


def excess_pairs(
    pairs: PairTable,
    rates: PairRates | None,
    top_pair: I64,
    pop_crashes: I64,
    params: AnalysisParams,
) -> B:
    """Pairs whose host crashes in excess of its exposure (BH q and shrunken rate ratio, at
    least 2 crashes); without rates, a population's top pair when it holds a dominant share."""
    if rates is not None:
        excess: B = (
            (np.nan_to_num(rates.q_value, nan=1.0) <= params.fdr_q)
            & (np.nan_to_num(rates.rate_ratio, nan=0.0) >= params.excess_rate_ratio)
            & (pairs.counts >= 2)
        )
        return excess
    excess = np.zeros(len(pairs), dtype=bool)
    tp = top_pair[top_pair >= 0]
    dominant = (pairs.counts[tp] >= params.min_crashes) & (
        pairs.counts[tp] >= params.concentration_share * pop_crashes[pairs.pop[tp]]
    )
    excess[tp[dominant]] = True
    return excess


def candidate_pairs(
    pairs: PairTable, top_pair: I64, excess: B, flagged_host: B, max_excess: int
) -> I64:
    """The pairs a population's verdict looks at, sorted (so by population): its top pair, its
    ``max_excess + 1`` largest excess pairs, and its pairs on hosts the scan flagged."""
    is_cand = np.zeros(len(pairs), dtype=bool)
    is_cand[top_pair[top_pair >= 0]] = True
    is_cand |= flagged_host[pairs.host]
    ex_sorted = pairs.by_size[excess[pairs.by_size]]
    if ex_sorted.size:
        ex_first = np.ones(ex_sorted.size, dtype=bool)
        ex_first[1:] = pairs.pop[ex_sorted][1:] != pairs.pop[ex_sorted][:-1]
        starts = np.flatnonzero(ex_first)
        seg = np.cumsum(ex_first) - 1
        rank = np.arange(ex_sorted.size) - starts[seg]
        is_cand[ex_sorted[rank <= max_excess]] = True
    return np.flatnonzero(is_cand).astype(np.int64)


@dataclass(frozen=True, slots=True, eq=False)
class Candidates:
    """Per candidate pair (``pairs``, sorted by population; population *p*'s are
    ``pairs[start[p]:start[p + 1]]``): the modal CPU ``cpu`` (-1 unknown) with ``cpu_count``
    crashes and its concentration p-value ``cpu_p``, hardware-flavoured crashes ``hardware``,
    crashes on the scan's flagged CPU of a flagged host ``on_flagged_cpu``, and the crashes a
    flagged host's flag is evidence for ``evidence`` (on its named cells or with a residual
    anomaly; :func:`~corecensus.epidemiology.fleetscan.evidence_rows`)."""

    pairs: I64
    start: I64
    cpu: I64
    cpu_count: I64
    cpu_p: F64
    hardware: I64
    on_flagged_cpu: I64
    evidence: I64


def candidate_cells(
    cand_pairs: I64,
    pairs: PairTable,
    crashes: CrashTable,
    hardware: B,
    cpus: I64,
    flagged_host: B,
    flagged_cpu: I64,
    n_pops: int,
    *,
    cell: NDArray[np.integer[Any]] | None = None,
    event: B | None = None,
    evidence: I64 | None = None,
) -> Candidates:
    """CPU concentration and anomaly counts of each candidate pair; ``flagged_host`` and
    ``flagged_cpu`` are the host scan's verdict and top CPU (or core) per host. ``cell`` is
    each crash's cell in the host test (:mod:`~corecensus.epidemiology.placement`; default its
    CPU) and ``event`` marks the first crash of each crash loop (default: every crash), so a
    loop's cores count once. ``evidence`` are the rows of the crashes flagged hosts' flags are
    evidence for (default: every crash of a flagged host on its flagged CPU)."""
    where = crashes.cpu.astype(np.int64) if cell is None else cell
    first = np.ones(len(crashes), dtype=bool) if event is None else event
    cand_id = np.full(len(pairs), -1, dtype=np.int64)
    cand_id[cand_pairs] = np.arange(cand_pairs.size)
    crash_cand = cand_id[pairs.groups.inverse]
    sel = crash_cand >= 0
    modal = modal_cells(crash_cand[sel], where[sel], cand_pairs.size, tiebreak=hardware[sel])
    host = crashes.host.codes
    on_flag = sel & flagged_host[host] & (where == flagged_cpu[host])
    counts = np.bincount(pairs.pop[cand_pairs], minlength=n_pops)
    if evidence is None:
        evidence = np.flatnonzero(on_flag)
    in_cand = crash_cand[evidence]
    return Candidates(
        pairs=cand_pairs,
        start=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        cpu=modal.cell,
        cpu_count=modal.top,
        cpu_p=max_cell_pvalue(modal.n, modal.top, cpus[pairs.host[cand_pairs]]),
        hardware=np.bincount(crash_cand[sel & hardware & first], minlength=cand_pairs.size).astype(
            np.int64
        ),
        on_flagged_cpu=np.bincount(crash_cand[on_flag], minlength=cand_pairs.size).astype(np.int64),
        evidence=np.bincount(in_cand[in_cand >= 0], minlength=cand_pairs.size).astype(np.int64),
    )


def cited_rows(pairs: PairTable, cand_pairs: I64, per_pair: int) -> I64:
    """Table rows of the first ``per_pair`` crashes (in table order) of each candidate pair,
    sorted and distinct: every crash a suspect can cite."""
    if per_pair <= 0 or not cand_pairs.size:
        return np.zeros(0, dtype=np.int64)
    lens = np.minimum(pairs.counts[cand_pairs], per_pair)
    firsts = np.repeat(pairs.groups.starts[cand_pairs], lens)
    within = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
    return np.unique(pairs.groups.order[firsts + within]).astype(np.int64)
