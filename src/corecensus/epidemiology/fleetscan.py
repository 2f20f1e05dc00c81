"""The host scan as fleets need it: placement, crash loops, then the per-host test, then what
an operator must know about each flagged host (every significant CPU or core, when its faulty
crashes started and stopped, what changed around those times).

Steps (issue 9):

1. :func:`~corecensus.epidemiology.placement.place_crashes` — each crash's cell (CPU, or
   physical core) and each host's number of cells, from the host's own facts;
2. :func:`~corecensus.epidemiology.loops.find_bursts` — crash loops fold into one event;
3. :func:`~corecensus.epidemiology.hostscan.scan_hosts` on the events;
4. per flagged host: every significant cell, step-down from the busiest (its pile-up among the
   cells left and its anomalies, the first at ``cpu_alpha``, the others at ``NAME_ALPHA``: a
   host with two bad CPUs names both; at
   core level, every logical CPU seen on the core), and the
   suspect crashes' first and last times. Whether they have *stopped* (a rescreen, not a
   denylist), measured in the host's observed time and with the microcode and kernel changes
   its crashes and exposure show, is :mod:`~corecensus.epidemiology.timeline`'s. A host
   flagged in a time window
   (:mod:`~corecensus.epidemiology.hostfocus`) has its cells named from that window's
   crashes, its timeline from all of them; one flagged by its two busiest cells names both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from corecensus.epidemiology.concentration import max_cell_pvalue
from corecensus.epidemiology.hostfocus import PAIR, WINDOW, WINDOW_PAIR, FocusScan
from corecensus.epidemiology.hostscan import HostScan, ScanSettings, scan_hosts
from corecensus.epidemiology.loops import Bursts, find_bursts
from corecensus.epidemiology.params import AnalysisParams
from corecensus.epidemiology.placement import Placement, place_crashes
from corecensus.epidemiology.poisson import poisson_upper
from corecensus.epidemiology.table import CrashTable, ExposureTable
from corecensus.epidemiology.timeline import (
    STOP_ALPHA,
    STOP_ALPHA_CHANGED,
    HostRecord,
    change_words,
    host_records,
    stop_test,
)

__all__ = [
    "NAME_ALPHA",
    "STOP_ALPHA",
    "STOP_ALPHA_CHANGED",
    "FleetScan",
    "HostDetail",
    "SuspectCell",
    "evidence_rows",
    "scan_fleet",
]

I64 = NDArray[np.int64]
B = NDArray[np.bool_]


# The level for every cell after the first on a flagged host (the step-down's later steps).
# The host is already flagged and its first cell named; what a later step can get wrong is a
# healthy CPU named beside a bad one, at most 1 % of flagged hosts (Holm's closed-testing
# argument, the max over the cells left as each step's test), and it costs a screen of a
# healthy CPU. At cpu_alpha (1e-3) the production simulator's hosts with two bad CPUs had
# both named in 35 of 72 (issue 9): a second bad CPU holds 2-4 crashes.
NAME_ALPHA = 0.01


@dataclass(frozen=True, slots=True)
class SuspectCell:
    """A significant CPU (or physical core, then ``cpus`` are the logical CPUs seen on it)."""

    cell: int
    crashes: int
    p_value: float
    cpus: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class HostDetail:
    """What the report says about one flagged host beyond its p-value."""

    cells: tuple[SuspectCell, ...]
    core_level: bool
    first_us: int | None
    last_us: int | None
    suspect_crashes: int
    stopped: bool
    stop_p: float | None
    changes: tuple[str, ...]
    facts: tuple[str, ...]
    stop_changes: tuple[str, ...] = ()  # the changes after the last suspect crash
    # no suspect crash after the first change after the last one: its time and probability
    stop_change_us: int | None = None
    stop_change_p: float | None = None


@dataclass(frozen=True, slots=True, eq=False)
class FleetScan:
    scan: HostScan
    placement: Placement
    bursts: Bursts
    cell: NDArray[
        np.int32
    ]  # per crash: its cell when it is an event, else -1 (what CPU tests may count)
    details: dict[int, HostDetail]
    end_us: int
    pop_events: I64  # per population: crashes after folding loops (events)
    # rows of the crashes a flagged host's flag is evidence for (:func:`evidence_rows`)
    evidence: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def scan_fleet(
    crashes: CrashTable,
    *,
    hardware: B,
    n_hosts: int,
    host_cpus: I64 | None,
    params: AnalysisParams,
    settings: ScanSettings,
    time_order: I64 | None = None,
    exposure: ExposureTable | None = None,
    exposure_host: NDArray[np.integer] | None = None,
) -> FleetScan:
    """Run steps 1-4 of the module docstring. ``exposure`` (with each row's host in the
    crashes' host codes, ``exposure_host``) is the hosts' own record of when they ran and on
    which microcode and kernel, for the timelines of flagged hosts."""
    placement = place_crashes(
        host=crashes.host.codes,
        cpu=crashes.cpu,
        service=crashes.service.codes,
        n_hosts=n_hosts,
        host_cpus=host_cpus,
        cpus_allowed=None if crashes.cpus_allowed is None else crashes.cpus_allowed.codes,
        cpus_allowed_sets=() if crashes.cpus_allowed is None else crashes.cpus_allowed.vocab,
        cpu_core=crashes.cpu_core,
        default_cpus=params.default_cpus,
    )
    bursts = find_bursts(
        host=crashes.host.codes,
        service=crashes.service.codes,
        population=crashes.population.codes,
        time_us=crashes.time_us,
        cpu=crashes.cpu,
        gap_us=int(params.loop_gap_s * 1_000_000),
        min_crashes=params.loop_min_crashes,
        time_order=time_order,
    )
    ev = bursts.event
    # int32 codes as they are (the scan builds its int64 pair keys): ten million crashes
    h = crashes.host.codes[ev]
    pop = crashes.population.codes[ev]
    ev_order = None
    if time_order is not None:
        # the events' stable time order is the table's, restricted to them (ties stay in
        # table order), so the host scan need not sort them again
        ev_order = (np.cumsum(ev) - 1)[time_order[ev[time_order]]]
    del time_order  # not held through the stream (the caller keeps none: memory at 1e7)
    scan = scan_hosts(
        host=h,
        cpu=placement.cell[ev],
        time_us=crashes.time_us[ev],
        hardware=hardware[ev],
        population=pop,
        n_hosts=n_hosts,
        cpus=placement.cells,
        settings=settings,
        time_order=ev_order,
        service=crashes.service.codes[ev],
    )
    cell = np.where(ev, placement.cell, -1)
    # a pile-up the second look set aside is no CPU evidence (pileups.py)
    cell[np.flatnonzero(ev)[scan.set_aside_events]] = -1
    end_us = int(crashes.time_us.max()) if len(crashes) else 0
    flagged = np.flatnonzero(scan.flagged).tolist()
    records: dict[int, HostRecord] = {}
    if exposure is not None and exposure_host is not None:
        records = host_records(exposure, exposure_host, flagged)
    details = {
        hh: _detail(hh, crashes, cell, placement, scan, params, end_us, records.get(hh))
        for hh in flagged
    }
    return FleetScan(
        scan=scan,
        placement=placement,
        bursts=bursts,
        cell=cell,
        details=details,
        end_us=end_us,
        pop_events=np.bincount(pop, minlength=len(crashes.population.vocab)).astype(np.int64),
        evidence=evidence_rows(
            crashes.host.codes,
            cell,
            scan.flagged,
            details,
            np.flatnonzero(ev)[scan.residual_events],
        ),
    )


def evidence_rows(
    host: NDArray[np.integer],
    cell: NDArray[np.int32],
    flagged: B,
    details: dict[int, HostDetail],
    resid: I64,
) -> I64:
    """The crashes (rows, sorted) a flagged host's flag is evidence for: its events on the
    cells its report names (``details``; ``cell`` is -1 off the events and for crashes the
    second look set aside) and its events with a residual anomaly (``resid``, rows). Its other
    crashes are what any host runs: a software bug that also crashes on a flagged host crashes
    there as it does elsewhere, on all its CPUs and without unexplained anomalies."""
    keys = [(h, s.cell) for h, d in details.items() for s in d.cells]
    if not keys:
        return np.unique(resid).astype(np.int64)
    # the flagged hosts' crashes only (a few per 10,000 hosts), not ten million keys
    rows = np.flatnonzero(flagged[host] & (cell >= 0))
    width = max(int(cell[rows].max(initial=0)), *(v for _, v in keys)) + 1
    named = np.array([h * width + v for h, v in keys], dtype=np.int64)
    key = np.asarray(host[rows], dtype=np.int64) * width + np.asarray(cell[rows], dtype=np.int64)
    on = rows[np.isin(key, named)]
    return np.union1d(on, resid).astype(np.int64)


def _detail(
    h: int,
    crashes: CrashTable,
    cell: NDArray[np.int32],
    placement: Placement,
    scan: HostScan,
    params: AnalysisParams,
    end_us: int,
    record: HostRecord | None,
) -> HostDetail:
    """One flagged host's significant cells, timeline and facts (a loop per flagged host: few)."""
    everything = mine = np.flatnonzero(crashes.host.codes == h)
    focus = scan.focus
    by_focus = bool(scan.p_value[h] > params.host_alpha)
    window = by_focus and int(focus.test[h]) in (WINDOW, WINDOW_PAIR)
    if window:  # flagged in a time window: its cells are named from that window's crashes
        t_h = crashes.time_us[mine]
        mine = mine[(t_h >= focus.window_start_us[h]) & (t_h < focus.window_end_us[h])]
    cells_h = cell[mine]
    n = int(np.count_nonzero(cells_h >= 0))
    core = bool(placement.core_level[h])
    hw = (crashes.anomaly_mask[mine] & np.uint16(params.hardware_mask)) != 0
    values, counts = np.unique(cells_h[cells_h >= 0], return_counts=True)
    anomalous = np.array([int(np.count_nonzero(hw & (cells_h == v))) for v in values.tolist()])
    rate = float(scan.expected_anomalous[h]) / max(int(scan.crashes[h]), 1)
    # Step-down over cells, busiest first (then the most anomalous): each against the cells
    # left once the ones before it are named (Holm's order; Holm 1979, "A simple sequentially
    # rejective multiple test procedure", Scand. J. Statist. 6:65-70), its pile-up and its
    # anomalies combined as x (1 - ln x) (Fisher's two-term form), named at cpu_alpha, every
    # cell after the first at NAME_ALPHA.
    order = np.lexsort((values, -anomalous, -counts))
    suspects: list[SuspectCell] = []
    n_left, c_left = n, int(placement.cells[h])
    for j in order.tolist():
        v, k, z = int(values[j]), int(counts[j]), int(anomalous[j])
        s_p = float(max_cell_pvalue(float(n_left), float(k), c_left))
        g_p = float(poisson_upper(z, k * rate))
        x = s_p * g_p
        combined = x * (1.0 - np.log(x)) if x > 0 else 0.0
        top_cell = int(focus.cell[h]) if window else int(scan.top_cpu[h])
        top_p = float(max_cell_pvalue(float(n), float(k), c_left)) if window else scan.p_cpu[h]
        top = not suspects and v == top_cell and top_p <= params.cpu_alpha
        level = NAME_ALPHA if suspects else params.cpu_alpha
        if not (top or combined <= level) or k < 2:
            break
        on = mine[cells_h == v]
        cpus = tuple(sorted({int(x) for x in crashes.cpu[on] if x >= 0})) if core else (v,)
        p_named = min(combined, float(top_p)) if top else combined
        suspects.append(SuspectCell(cell=v, crashes=k, p_value=p_named, cpus=cpus))
        n_left -= k
        c_left = max(c_left - 1, 1)
    if _pair_named(h, scan, params, by_focus, _pair_least(h, crashes, cell, everything, focus)):
        # the two busiest cells together passed their own test: at least one of them is bad,
        # screen both
        for v in (int(focus.pair_cells[0][h]), int(focus.pair_cells[1][h])):
            if v < 0 or any(x.cell == v for x in suspects):
                continue
            on = mine[cells_h == v]
            cpus = tuple(sorted({int(x) for x in crashes.cpu[on] if x >= 0})) if core else (v,)
            suspects.append(
                SuspectCell(cell=v, crashes=int(on.size), p_value=float(focus.raw_p[h]), cpus=cpus)
            )
    # the suspect crashes: events on a named cell, else (anomaly-only evidence) anomalous ones;
    # over the whole data even when a window flagged the host (a fault that goes on after the
    # window has not stopped)
    named = np.isin(cell[everything], [s.cell for s in suspects])
    if not named.any():
        named = (crashes.anomaly_mask[everything] & np.uint16(params.hardware_mask)) != 0
    times = np.sort(crashes.time_us[everything][named])
    facts = _facts(h, placement)
    if scan.set_aside[h]:
        facts += (
            f"{int(scan.set_aside[h])} crash(es) behind the pile-up were set aside in a second "
            "look (one job started at one time of day on a CPU, or a CPU index busier on many other "
            "hosts, for all crashes or for their population and service, without anomalies): "
            "their CPU left out, the host still flagged on the rest.",
        )
    if not times.size:
        return HostDetail(tuple(suspects), core, None, None, 0, False, None, (), facts)
    first, last = int(times[0]), int(times[-1])
    test = stop_test(times, crashes, everything, end_us, record)
    changes = [change_words(c, first, last, test.stopped) for c in test.changes]
    after = [c.time_us for c in test.changes if c.time_us > last]
    if test.p_value is not None:
        facts += (f"Quiet stretch measured in {test.clock}.",)
    return HostDetail(
        cells=tuple(suspects),
        core_level=core,
        first_us=first,
        last_us=last,
        suspect_crashes=int(times.size),
        stopped=test.stopped,
        stop_p=test.p_value,
        changes=tuple(changes),
        facts=facts,
        stop_changes=tuple(
            w for c, w in zip(test.changes, changes, strict=True) if c.time_us > last
        ),
        stop_change_us=min(after) if after else None,
        stop_change_p=test.p_change,
    )


def _pair_least(
    h: int, crashes: CrashTable, cell: NDArray[np.int32], rows: I64, focus: FocusScan
) -> int:
    """The fewer crashes of the pair test's two cells, among that test's crashes (the whole
    data's, or its window's)."""
    if int(focus.test[h]) == WINDOW_PAIR:
        t = crashes.time_us[rows]
        rows = rows[(t >= focus.window_start_us[h]) & (t < focus.window_end_us[h])]
    pair = (int(focus.pair_cells[0][h]), int(focus.pair_cells[1][h]))
    return min(int(np.count_nonzero(cell[rows] == v)) for v in pair)


def _pair_named(h: int, scan: HostScan, params: AnalysisParams, by_focus: bool, least: int) -> bool:
    """Whether a flagged host's two busiest cells (of the data, or of a window) are named as a
    pair: their test passed its share of ``window_alpha`` and either it flagged the host or,
    when the whole-data test flagged it too, each of the two holds at least 2 of the test's
    crashes (``least``; a CPU with one crash is never named, as in the step-down) and the pair
    test is the more extreme of the two, each against its own level. Two bad CPUs with 2-4
    crashes each hold no single CPU a step-down can name (a host with 2 crashes on each of
    CPUs 17 and 20 of 32, all four anomalous: the busiest alone p = 0.29, the host p = 2.8e-6,
    the pair p = 1.6e-7 against its level 1.25e-5, issue 9). One bad CPU with 14 crashes and
    a runner-up with one makes the pair test more extreme than the one-cell test (its sum
    holds the bad CPU's crashes): the runner-up is not named."""
    focus = scan.focus
    if int(focus.test[h]) not in (PAIR, WINDOW_PAIR):
        return False
    if float(focus.p_value[h]) > params.window_alpha:
        return False
    if by_focus:
        return True
    stronger = float(focus.p_value[h]) / params.window_alpha < (
        float(scan.p_value[h]) / params.host_alpha
    )
    return least >= 2 and stronger


def _facts(h: int, placement: Placement) -> tuple[str, ...]:
    """How the host's cells were counted, and which crashes lost their CPU (evidence)."""
    level = "physical cores" if placement.core_level[h] else "CPUs"
    source = int(placement.cells_source[h])
    cells = int(placement.cells[h])
    why = {
        0: "the crashing processes' allowed CPU set (Cpus_allowed_list)",
        1: "the host's online CPU count (no allowed-CPU set was recorded)",
        2: "the largest CPU index seen on this host plus one, a lower bound (no host facts; "
        "conservative)",
        3: "the default_cpus parameter (no host facts)",
        4: "one NUMA half of the host, where a service's crashes all sit (no allowed-CPU set "
        "was recorded; inferred)",
    }.get(source, "no crash with a CPU")
    out = [f"Null law uniform over {cells} {level}, from {why}."]
    if placement.core_level[h]:
        out.append(
            "Physical cores known: tested at core level, each allowed set of a CPUs as "
            "floor(a / 2) cores (two SMT threads per core at most), conservative."
        )
    for count, words in (
        (int(placement.pinned[h]), "were pinned to one CPU (no evidence about that CPU)"),
        (
            int(placement.inferred[h]),
            "belong to a service confined to a few CPUs (pinned, or in a cpuset where other "
            "hosts report its allowed set; inferred)",
        ),
        (int(placement.other_sets[h]), "ran under another allowed CPU set than most"),
    ):
        if count:
            out.append(f"{count} crash(es) {words}: their CPU is left out, their anomalies kept.")
    return tuple(out)
