"""Per-host detection of a defective CPU, at the end of the window and as a stream.

A broken core crashes whatever code runs on it, so its crashes (i) pile up on one logical CPU
and (ii) often carry register states software cannot produce (``sp_off_by_8``,
``bit_flip_candidate``, ...; Hochschild et al. 2021, "Cores that don't count", HotOS; Dixit et
al. 2021, "Silent Data Corruptions at Scale", arXiv:2102.11245). Neither signal needs exposure,
and both are *conditional on the host's own crash count*, so a busy host (many processes, a
frail workload) is not suspicious merely for crashing often — the failure of raw or
exposure-adjusted counts, which flag busy hosts.

The two signals, independent under the null given the host's crashes:

1. **CPU concentration** — the largest per-CPU count against uniform over the host's CPUs
   (:mod:`corecensus.epidemiology.concentration`).
2. **Residual hardware-flavoured anomalies** — after *explaining away*: some software bugs
   (wild pointers, memory corruption) produce such anomalies on every host they hit. Each
   crash's anomaly rate is its population's, and its service's within the population, on the
   *other* hosts (leave-one-host-out, empirical Bayes;
   :mod:`~corecensus.epidemiology.anomalyrates`); crashes whose rate elsewhere is at least
   ``explain_min_rate`` on at least ``explain_min_hosts`` other hosts are set aside as
   explained. The rest are anomalous independently with those rates, so the host's anomaly
   count has a Poisson-binomial law.

They are combined into one statistic (anomalies on the busiest CPU and elsewhere, times the CPU
concentration) whose exact null law given the host's crashes gives the p-value
(:mod:`corecensus.epidemiology.hosttest`); a host is flagged when it is at most ``host_alpha``,
its false-alarm probability (``5e-5``: at most 0.5 expected false alarms per 10,000 hosts per
window). The *stream* is the same test run after every crash of the host in time order; the
first crossing is the alarm time. Since the statistic can only cross when the top CPU count or
the anomalous count goes up, it is evaluated at those crashes only. The population anomaly
rates are those of the whole window (a mild look-ahead).

Beyond this whole-window test, a small fixed family of focused tests (time windows, the two
busiest CPUs; :mod:`~corecensus.epidemiology.hostfocus`) shares one more per-host budget,
``window_alpha``: a host is flagged when either crosses. A flagged host then gets a second look
without the crashes behind its pile-up that are not the silicon's (one population of one
service on a CPU, a CPU index busier on many hosts; :mod:`~corecensus.epidemiology.pileups`),
and stays flagged only if both looks cross (its p-values are the larger of the two).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from corecensus.epidemiology.anomalyrates import anomaly_rates
from corecensus.epidemiology.hostfocus import FocusScan, focus_tests
from corecensus.epidemiology.hostlooks import (
    Stream,
    anomaly_cap,
    anomaly_laws,
    modal_top_cells,
)
from corecensus.epidemiology.hosttest import host_pvalues, lower_bounds, statistic
from corecensus.epidemiology.pileups import Look, second_look
from corecensus.epidemiology.segments import weighted_count

__all__ = ["HostScan", "ScanSettings", "scan_hosts"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B = NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class ScanSettings:
    """Knobs of the host scan (copied from :class:`AnalysisParams`)."""

    host_alpha: float = 5e-5
    window_alpha: float = 5e-5
    stream_alpha: float | None = None
    anomaly_prior_strength: float = 50.0
    explain_min_rate: float = 0.2
    explain_min_hosts: int = 3
    streaming: bool = True
    # p-values above this are not computed exactly and reported as 1, a conservative stand-in
    # (see hosttest.lower_bounds); the level is never below the alarm thresholds.
    exact_below: float = 0.01
    # The same for the stream's looks (a host has hundreds at fleet scale): its minimum is
    # exact at or below this level, and only alarms and that minimum are reported.
    stream_exact_below: float = 1e-3

    @property
    def exact_level(self) -> float:
        alarms = (self.host_alpha, self.stream_alpha or 0.0)
        return min(1.0, max(self.exact_below, *alarms))

    @property
    def stream_exact_level(self) -> float:
        alarms = (self.host_alpha, self.stream_alpha or 0.0)
        return min(1.0, max(self.stream_exact_below, *alarms))


@dataclass(frozen=True, slots=True, eq=False)
class HostScan:
    """Per host (index = host code).

    ``p_cpu``/``p_top_anomaly``/``p_anomaly``: the parts of the statistic (CPU concentration,
    anomalies on the busiest CPU, anomalies elsewhere; ``top_expected`` and
    ``expected_anomalous`` are the expectations on that CPU and on the whole host), ``p_value``
    the exact combined p-value. ``anomalous`` residual hardware-flavoured crashes, ``expected_anomalous`` their
    null expectation, ``explained`` crashes set aside as belonging to anomaly-heavy populations
    spread over many hosts. ``first_alarm_us`` is -1 for hosts that never alarmed;
    ``alarm_crashes`` how many of the host's crashes had happened at the first alarm;
    ``min_stream_p`` the smallest p-value the host reached at any time in the window. Both are
    exact at or below ``ScanSettings.exact_level`` (``min_stream_p`` at or below
    ``stream_exact_level``); values their lower bound puts above the level are reported as 1
    or left out of the minimum (``hosttest.lower_bounds``): all a threshold needs. ``focus``
    holds the focused tests (:class:`~corecensus.epidemiology.hostfocus.FocusScan`);
    ``flagged`` is ``p_value <= host_alpha`` or ``focus.p_value <= window_alpha``, and
    ``first_alarm_us`` the earlier of the stream's and the windowed streams' alarms.

    A host the first look flagged gets a second look (:mod:`~corecensus.epidemiology.pileups`):
    ``set_aside`` counts the crashes behind its pile-up whose CPU it left out (one population
    of one service on a CPU, a CPU index busier on many hosts), ``set_aside_events`` lists
    them (indices into the events). Where it set some aside, the per-host fields above are the
    second look's (``cpus`` the cells it tested on) with ``p_value`` and ``focus.p_value`` the
    larger of the two looks', so never smaller than the first look's.

    ``residual_events`` lists the events of flagged hosts with a residual hardware-flavoured
    anomaly (one the host test counted, not explained away by its population elsewhere):
    with the crashes on a flagged host's named cells, what its flag is evidence for
    (:class:`~corecensus.epidemiology.verdict.MadeOfFlaggedHosts`).
    """

    crashes: I64
    known_cpu: I64
    cpus: I64
    top_cpu: I64
    top_count: I64
    p_cpu: F64
    top_anomalous: I64
    top_expected: F64
    p_top_anomaly: F64
    anomalous: I64
    expected_anomalous: F64
    explained: I64
    p_anomaly: F64
    p_value: F64
    flagged: B
    first_alarm_us: I64
    alarm_crashes: I64
    min_stream_p: F64
    fleet_anomaly_rate: float
    focus: FocusScan
    set_aside: I64
    set_aside_events: I64
    residual_events: I64


def scan_hosts(
    *,
    host: NDArray[Any],
    cpu: NDArray[Any],
    time_us: NDArray[Any],
    hardware: B,
    population: NDArray[Any],
    n_hosts: int,
    cpus: I64,
    settings: ScanSettings,
    time_order: I64 | None = None,
    service: NDArray[Any] | None = None,
) -> HostScan:
    """Run the scan on crashes of ``host``, ``population`` and ``service`` (codes, ``-1``
    unknown); ``time_order`` (a stable argsort of ``time_us``) is computed when not given.
    Without ``service`` the anomaly rates are per population and the flagged hosts get no
    second look (:mod:`~corecensus.epidemiology.pileups`, which groups by (population,
    service))."""
    # The (population, service, host) groups serve the anomaly rates only: built for them and
    # dropped with them, so the focused tests and the stream below do not hold their int64
    # arrays per crash (130 MB at ten million crashes).
    expl = anomaly_rates(
        population=population,
        service=service,
        host=host,
        n_hosts=n_hosts,
        hardware=hardware,
        cell=cpu,
        prior_strength=settings.anomaly_prior_strength,
        explain_min_rate=settings.explain_min_rate,
        explain_min_hosts=settings.explain_min_hosts,
    )
    resid, ez = expl.resid, expl.ez

    h = np.asarray(host)  # host codes, as narrow as they came
    c = np.asarray(cpu)  # cells, as narrow as they came
    t = np.asarray(time_us, np.int64)
    crashes = np.bincount(h, minlength=n_hosts).astype(np.int64)
    expected = weighted_count(h, ez, n_hosts)
    explained = np.bincount(h[expl.crash_explained], minlength=n_hosts).astype(np.int64)
    span = (int(t.min()), int(t.max())) if t.size else (0, 0)
    first = _family(h, c, t, resid, ez, cpus, n_hosts, settings, settings.streaming, span)
    cells, stat, p, focus = first.cells, first.stat, first.p, first.focus
    flagged = (p <= settings.host_alpha) | (focus.p_value <= settings.window_alpha)
    aside = np.zeros(n_hosts, dtype=np.int64)
    aside_events = np.zeros(0, dtype=np.int64)
    tested_cpus = cpus
    if flagged.any() and service is not None:
        # flagged hosts only (few): a pile-up that is not the silicon's, set aside
        groups = (np.asarray(population), np.asarray(service))

        def retest(hh: NDArray[Any], cc: I64, tt: I64, rr: B, ee: F64, cp: I64) -> Look:
            return _family(hh, cc, tt, rr, ee, cp, n_hosts, settings, False, span)

        second = second_look(first, flagged, h, c, t, resid, ez, groups, cpus, retest)
        cells, stat, p, focus = second.cells, second.stat, second.p, second.focus
        aside, aside_events, tested_cpus = second.aside, second.events, second.cpus
        flagged = (p <= settings.host_alpha) | (focus.p_value <= settings.window_alpha)
    # the (host, cell) groups served the focused tests' window screen: the stream does not
    # hold their two int64 arrays per crash
    cells = replace(cells, groups=None)
    anomalous = first.anomalous
    del first

    first_alarm = np.full(n_hosts, -1, dtype=np.int64)
    alarm_crashes = np.zeros(n_hosts, dtype=np.int64)
    min_p = p.copy()
    if settings.streaming and h.size:
        stream = Stream(first_alarm=first_alarm, alarm_crashes=alarm_crashes, min_p=min_p)
        if time_order is None:
            time_order = np.argsort(t, kind="stable").astype(np.int64)
        alpha = settings.host_alpha if settings.stream_alpha is None else settings.stream_alpha
        stream.run(
            h=h,
            c=c,
            t=t,
            time_order=time_order,
            resid=resid,
            lam=ez,
            cpus=cpus,
            exact_level=settings.stream_exact_level,
            alpha=alpha,
        )
        _earlier_alarms(first_alarm, alarm_crashes, focus.first_alarm_us, h, t)
    return HostScan(
        crashes=crashes,
        known_cpu=cells.n,
        cpus=tested_cpus,
        top_cpu=cells.cell,
        top_count=cells.top,
        p_cpu=stat.p_cpu,
        top_anomalous=cells.anomalous,
        top_expected=stat.cell_expected,
        p_top_anomaly=stat.p_cell,
        anomalous=anomalous,
        expected_anomalous=expected,
        explained=explained,
        p_anomaly=stat.p_off,
        p_value=p,
        flagged=flagged,
        first_alarm_us=first_alarm,
        alarm_crashes=alarm_crashes,
        min_stream_p=min_p,
        fleet_anomaly_rate=expl.fleet_rate,
        focus=focus,
        set_aside=aside,
        set_aside_events=aside_events,
        residual_events=np.flatnonzero(resid & flagged[h]).astype(np.int64),
    )


def _family(
    h: NDArray[Any],
    c: NDArray[Any],
    t: I64,
    resid: B,
    ez: F64,
    cpus: I64,
    n_hosts: int,
    settings: ScanSettings,
    streaming: bool,
    span: tuple[int, int],
) -> Look:
    """The whole-window test and the focused family on the events ``h``, ``c``, ``t``."""
    known = c >= 0
    anomalous = np.bincount(h[resid], minlength=n_hosts).astype(np.int64)
    lam_known = weighted_count(h[known], ez[known], n_hosts)
    lam_unknown = weighted_count(h[~known], ez[~known], n_hosts)
    cells = modal_top_cells(h, c, resid, n_hosts, anomalous, lam_known, lam_unknown, cpus)
    elsewhere = anomalous - cells.anomalous
    stat = statistic(cells.n, cells.top, cells.anomalous, elsewhere, lam_known, lam_unknown, cpus)
    # Only hosts whose p-value can be at most the exact level get their anomaly laws (the
    # recursion over all their crashes) and the exact computation; the others keep 1.
    p = np.ones(n_hosts, dtype=np.float64)
    live = stat.score < 1.0
    level = settings.exact_level
    live[live] = lower_bounds(cells.n[live], stat.score[live], cpus[live], above=level) <= level
    need = np.flatnonzero(live)
    if need.size:
        mine = live[h]
        cap = anomaly_cap(h, ez, n_hosts)
        _, p[need] = host_pvalues(
            cells.n[need],
            cells.top[need],
            cells.anomalous[need],
            elsewhere[need],
            anomaly_laws(h[mine], np.where(known, ez, 0.0)[mine], n_hosts, cap)[need],
            anomaly_laws(h[mine], np.where(known, 0.0, ez)[mine], n_hosts, cap)[need],
            cpus[need],
            exact_below=settings.exact_level,
        )
    focus = focus_tests(
        h=h,
        c=c,
        t=t,
        resid=resid,
        ez=ez,
        cpus=cpus,
        cells=cells,
        anomalous=anomalous,
        lam_known=lam_known,
        lam_unknown=lam_unknown,
        candidates=p <= settings.exact_level,
        window_alpha=settings.window_alpha,
        exact_level=settings.exact_level,
        streaming=streaming,
        span=span,
    )
    return Look(cells, stat, p, focus, anomalous, lam_known, lam_unknown)


def _earlier_alarms(first: I64, crashes: I64, other: I64, h: I64, t: I64) -> None:
    """Take the windowed streams' alarms where they come first, with the number of the host's
    crashes by then."""
    earlier = (other >= 0) & ((first < 0) | (other < first))
    if not earlier.any():
        return
    first[earlier] = other[earlier]
    at = np.where(earlier, other, -1)[h]
    counted = (at >= 0) & (t <= at)
    crashes[earlier] = np.bincount(h[counted], minlength=first.size)[earlier]
