"""Focused host tests beyond the whole-window busiest-CPU test (issue 9): windows in time, and
the two busiest CPUs together.

The whole-window test (:mod:`~corecensus.epidemiology.hostscan`) dilutes two kinds of faults:

* **A fault that started late on a busy host** — months of healthy crashes bury a week of
  faulty ones. Each host is also tested in a fixed dyadic set of time windows over the data's
  span (levels ``1..WINDOW_LEVELS``: windows of half, then a quarter of the span, each level
  overlapping by half, so 3 + 7 = 10 windows), with the same exact test on the window's
  crashes only. The stream is re-run inside each window from its start (a stream that forgets
  what came before the window), for the first alarm.
* **Two bad CPUs on one host** — each holds half the faulty crashes, so neither stands out
  alone. The two busiest cells' sum is tested against its union bound over pairs, with the
  anomalies on the pair and elsewhere (:func:`~corecensus.epidemiology.hosttest.pair_pvalues`),
  on the whole data and in each window (two bad CPUs that started late on a busy host).

**Multiplicity.** These are more tests of the same host, so they share one extra per-host
false-alarm budget, ``window_alpha``, by Bonferroni with fixed weights: ``PAIR_SHARE`` to the
whole-data pair test, ``WINDOW_SHARE`` equally to the windows' one-cell tests and
``WINDOW_PAIR_SHARE`` equally to the windows' pair tests. The window set depends only on the span of the
crash times, which the conditional null (given each host's crashes and their times) holds
fixed, so the family is fixed before the CPUs and anomalies are looked at. The host's
false-alarm probability is then at most ``host_alpha + window_alpha``.

**Windows that cannot add anything** (Tarone 1990, "A modified Bonferroni method for discrete
data", Biometrics 46:515-522: only tests that can reject need a share). A window with fewer
than ``MIN_WINDOW_CRASHES`` crashes with a known CPU (two crashes on one of 32 CPUs happen 3 %
of the time: no pile-up to see), one that holds every crash of the host (it *is* the
whole-data test, already in the family at a larger level) and a second window with the same
crashes as another (the same test twice) are not tested; each kind's share is split equally
over the host's remaining *distinct* windows instead of over all ten. Which windows remain
depends only on the crash times and on which crashes have a CPU, which the null holds fixed,
so the shares still sum to at most ``window_alpha``. A host whose crashes are few and late
(5 faulty crashes in the last ten days of a month) has 3 or 4 such windows, not 10.

**Which hosts.** Only hosts whose whole-window p-value is at most ``exact_level`` (1 %), whose
pair test can reach it, or one of whose windows has its busiest cell or two busiest cells
alone at most ``SCREEN_LEVEL`` get the focused tests: skipping a test is
reporting p = 1 for it, which is conservative (the family stays valid, it only loses power
where a window would need to be about a thousand times more extreme than the whole), and the
rest of the fleet costs nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from corecensus.epidemiology.concentration import max_cell_pvalue
from corecensus.epidemiology.hostlooks import (
    Stream,
    TopCells,
    anomaly_cap,
    anomaly_laws,
    modal_top_cells,
)
from corecensus.epidemiology.hosttest import (
    host_pvalues,
    lower_bounds,
    pair_cell_pvalue,
    pair_pvalues,
    statistic,
)
from corecensus.epidemiology.segments import radix_argsort, weighted_count

__all__ = [
    "MIN_WINDOW_CRASHES",
    "NONE",
    "PAIR",
    "PAIR_SHARE",
    "WINDOW",
    "WINDOW_LEVELS",
    "WINDOW_PAIR",
    "WINDOW_PAIR_SHARE",
    "WINDOW_SHARE",
    "FocusScan",
    "distinct_windows",
    "dyadic_windows",
    "focus_tests",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B = NDArray[np.bool_]

WINDOW_LEVELS = 2
# Bonferroni shares of window_alpha: the pair test on the whole data, the one-cell test in
# each window (equally), the pair test in each window (equally).
PAIR_SHARE = 0.25
WINDOW_SHARE = 0.5
WINDOW_PAIR_SHARE = 1.0 - PAIR_SHARE - WINDOW_SHARE
# The screen for windows of hosts whose whole-window p-value is above 1 %: some window's
# busiest cell alone at most this (a late fault on a busy host: the whole window hides it).
SCREEN_LEVEL = 1e-3
# A window with fewer crashes with a known cell than this is not tested (module docstring).
MIN_WINDOW_CRASHES = 3

# what the focus says flagged a host
NONE, PAIR, WINDOW, WINDOW_PAIR = 0, 1, 2, 3


@dataclass(frozen=True, slots=True, eq=False)
class FocusScan:
    """Per host. ``p_value`` is the Bonferroni-adjusted p-value of the focused family (the
    smallest of each test's p-value divided by its share of ``window_alpha``; 1 when none
    ran); ``test`` what gave it (``PAIR``, ``WINDOW``, ``WINDOW_PAIR`` or ``NONE``); ``raw_p``
    that test's own p-value; ``window_start_us``/``window_end_us`` its window (-1 for the
    whole-data pair test); ``cell``/``cell_count`` the window's busiest cell and its count,
    ``window_crashes`` the window's crashes with a known cell; ``second``/``second_count`` the
    second busiest cell of the whole data; ``pair_cells`` the pair test's two cells (of its
    window for ``WINDOW_PAIR``), ``pair_count`` the crashes on them; ``first_alarm_us`` the
    earliest alarm of the windowed streams (-1 none); ``windows`` the number of windows;
    ``share`` the best test's share of ``window_alpha`` and ``tested`` how many distinct
    windows its kind was split over (0 for the whole-data pair test)."""

    p_value: F64
    test: I64
    raw_p: F64
    window_start_us: I64
    window_end_us: I64
    cell: I64
    cell_count: I64
    window_crashes: I64
    second: I64
    second_count: I64
    pair_cells: tuple[I64, I64]
    pair_count: I64
    first_alarm_us: I64
    windows: int
    share: F64
    tested: I64

    @staticmethod
    def empty(n_hosts: int, windows: int) -> FocusScan:
        minus = np.full(n_hosts, -1, dtype=np.int64)
        return FocusScan(
            p_value=np.ones(n_hosts),
            test=np.zeros(n_hosts, dtype=np.int64),
            raw_p=np.ones(n_hosts),
            window_start_us=minus.copy(),
            window_end_us=minus.copy(),
            cell=minus.copy(),
            cell_count=np.zeros(n_hosts, dtype=np.int64),
            window_crashes=np.zeros(n_hosts, dtype=np.int64),
            second=minus.copy(),
            second_count=np.zeros(n_hosts, dtype=np.int64),
            pair_cells=(minus.copy(), minus.copy()),
            pair_count=np.zeros(n_hosts, dtype=np.int64),
            first_alarm_us=minus.copy(),
            windows=windows,
            share=np.ones(n_hosts),
            tested=np.zeros(n_hosts, dtype=np.int64),
        )


def dyadic_windows(t0: int, t1: int, levels: int = WINDOW_LEVELS) -> tuple[I64, I64]:
    """Start and end times (µs, end exclusive except the last) of the dyadic windows over
    ``[t0, t1]``: at level ``j`` windows of ``span / 2**j`` starting every half window."""
    starts: list[int] = []
    ends: list[int] = []
    span = max(int(t1) - int(t0), 1)
    for j in range(1, levels + 1):
        length = span / 2**j
        for k in range(2 ** (j + 1) - 1):
            # floor, not int(): int() rounds toward zero, so before the epoch a window would
            # start after t0 and its crashes fall outside every slot (the same for t >= 0)
            lo = math.floor(t0 + k * length / 2)
            starts.append(lo)
            ends.append(math.floor(t0 + k * length / 2 + length))
    # each level's last window holds the last crash
    ends = [int(t1) + 1 if e >= int(t1) else e for e in ends]
    return np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)


def focus_tests(
    *,
    h: I64,
    c: I64,
    t: I64,
    resid: B,
    ez: F64,
    cpus: I64,
    cells: TopCells,
    anomalous: I64,
    lam_known: F64,
    lam_unknown: F64,
    candidates: B,
    window_alpha: float,
    exact_level: float,
    streaming: bool,
    span: tuple[int, int] | None = None,
) -> FocusScan:
    """The focused family (module docstring) for the events ``h`` (host), ``c`` (cell, -1
    unknown), ``t`` (µs), ``resid`` (residual hardware-flavoured anomaly), ``ez`` (its null
    probability); ``cpus`` cells per host, ``cells`` the whole window's busiest cells per
    host, ``anomalous`` its residual anomalies and ``lam_known``/``lam_unknown`` their null
    expectation among crashes with and without a cell; ``candidates`` the hosts whose
    whole-window p-value is at most ``exact_level``; ``span`` the data's first and last times
    (default: the events'), which the windows divide."""
    n_hosts = cpus.size
    if not h.size or window_alpha <= 0.0:
        return FocusScan.empty(n_hosts, 0)
    t0, t1 = (int(t.min()), int(t.max())) if span is None else span
    starts, ends = dyadic_windows(t0, t1, WINDOW_LEVELS)
    out = FocusScan.empty(n_hosts, int(starts.size))
    out.second[:] = cells.second
    out.second_count[:] = cells.second_count
    pair_x = cells.top + cells.second_count
    pair_k = cells.pair_anomalous
    pair_live = _pair_screen(
        cells.n, pair_x, pair_k, anomalous - pair_k, lam_known, lam_unknown, cpus, exact_level
    )
    crowded = _window_screen(c, t, cells, starts, ends, t0, cpus, SCREEN_LEVEL)
    cand = candidates | pair_live | crowded
    mine = cand[h]
    if not mine.any():
        return out
    hs, cs, ts, rs, es = h[mine], c[mine], t[mine], resid[mine], ez[mine]
    cap = anomaly_cap(hs, es, n_hosts)

    # the two busiest cells, whole window
    pair_hosts = np.flatnonzero(pair_live)
    if pair_hosts.size:
        known_h = cs >= 0
        p2 = pair_pvalues(
            cells.n[pair_hosts],
            pair_x[pair_hosts],
            pair_k[pair_hosts],
            (anomalous - pair_k)[pair_hosts],
            anomaly_laws(hs, np.where(known_h, es, 0.0), n_hosts, cap)[pair_hosts],
            anomaly_laws(hs, np.where(known_h, 0.0, es), n_hosts, cap)[pair_hosts],
            cpus[pair_hosts],
            exact_below=exact_level,
        )
        better = _keep_best(out, pair_hosts, p2, np.full(p2.size, PAIR_SHARE), PAIR)
        _keep_pair(out, pair_hosts[better], cells, pair_hosts[better], pair_x)

    # the windows
    n_win = int(starts.size)
    level = window_alpha * WINDOW_SHARE / n_win  # the windowed streams' level (all ten)
    host_list = np.flatnonzero(cand)
    slot = np.full(n_hosts, -1, dtype=np.int64)
    slot[host_list] = np.arange(host_list.size)
    seg_parts, idx_parts = [], []
    for w in range(n_win):
        inside = np.flatnonzero((ts >= starts[w]) & (ts < ends[w]))
        seg_parts.append(slot[hs[inside]] * n_win + w)
        idx_parts.append(inside)
    seg = np.concatenate(seg_parts)
    idx = np.concatenate(idx_parts)
    n_seg = host_list.size * n_win
    seg_cpus = np.repeat(cpus[host_list], n_win)
    sc, sr, se = cs[idx], rs[idx], es[idx]
    known = sc >= 0
    z_seg = np.bincount(seg[sr], minlength=n_seg).astype(np.int64)
    lam_k = weighted_count(seg[known], se[known], n_seg)
    lam_u = weighted_count(seg[~known], se[~known], n_seg)
    top = modal_top_cells(seg, sc, sr, n_seg, z_seg, lam_k, lam_u, seg_cpus)
    # which windows are tested, and each kind's share split over the host's distinct ones
    ts_idx = ts[idx]
    host_total = np.bincount(slot[hs], minlength=host_list.size)
    tested, distinct = distinct_windows(seg, ts_idx, top.n, host_total, n_win)
    tested2 = tested & (seg_cpus >= 4)
    _, distinct2 = distinct_windows(seg, ts_idx, np.where(tested2, top.n, 0), host_total, n_win)
    win_share = WINDOW_SHARE / np.maximum(np.repeat(distinct, n_win), 1)
    pair_share = WINDOW_PAIR_SHARE / np.maximum(np.repeat(distinct2, n_win), 1)
    elsewhere = z_seg - top.anomalous
    score = statistic(top.n, top.top, top.anomalous, elsewhere, lam_k, lam_u, seg_cpus).score
    live = tested & (score < 1.0)
    share = window_alpha * win_share[live]
    live[live] = lower_bounds(top.n[live], score[live], seg_cpus[live], above=share) <= share
    need = np.flatnonzero(live)
    if need.size:
        take = live[seg]
        p_w = host_pvalues(
            top.n[need],
            top.top[need],
            top.anomalous[need],
            elsewhere[need],
            anomaly_laws(seg[take], np.where(known, se, 0.0)[take], n_seg, cap)[need],
            anomaly_laws(seg[take], np.where(known, 0.0, se)[take], n_seg, cap)[need],
            seg_cpus[need],
            exact_below=float(window_alpha * win_share[need].max()),
        )[1]
        hosts = host_list[need // n_win]
        better = _keep_best(out, hosts, p_w, win_share[need], WINDOW, distinct[need // n_win])
        _keep_window(out, hosts[better], need[better] % n_win, starts, ends, top, need[better])

    # the two busiest cells in each window
    seg_x = top.top + top.second_count
    seg_k = top.pair_anomalous
    live2 = _pair_screen(
        top.n, seg_x, seg_k, z_seg - seg_k, lam_k, lam_u, seg_cpus, window_alpha * pair_share
    )
    live2 &= tested2
    need2 = np.flatnonzero(live2)
    if need2.size:
        take = live2[seg]
        p_wp = pair_pvalues(
            top.n[need2],
            seg_x[need2],
            seg_k[need2],
            (z_seg - seg_k)[need2],
            anomaly_laws(seg[take], np.where(known, se, 0.0)[take], n_seg, cap)[need2],
            anomaly_laws(seg[take], np.where(known, 0.0, se)[take], n_seg, cap)[need2],
            seg_cpus[need2],
            exact_below=float(window_alpha * pair_share[need2].max()),
        )
        hosts = host_list[need2 // n_win]
        better = _keep_best(
            out, hosts, p_wp, pair_share[need2], WINDOW_PAIR, distinct2[need2 // n_win]
        )
        segs = need2[better]
        _keep_window(out, hosts[better], segs % n_win, starts, ends, top, segs)
        _keep_pair(out, hosts[better], top, segs, seg_x)

    if streaming:  # the stream inside each window, from its start
        first = np.full(n_seg, -1, dtype=np.int64)
        stream = Stream(
            first_alarm=first,
            alarm_crashes=np.zeros(n_seg, dtype=np.int64),
            min_p=np.ones(n_seg),
        )
        ts_seg = ts_idx
        stream.run(
            h=seg,
            c=sc,
            t=ts_seg,
            time_order=radix_argsort(ts_seg - ts_seg.min()) if ts_seg.size else seg,
            resid=sr,
            lam=se,
            cpus=seg_cpus,
            exact_level=level,
            alpha=level,
        )
        hit = np.flatnonzero(first >= 0)
        if hit.size:
            hosts = host_list[hit // n_win]
            order = np.argsort(first[hit], kind="stable")
            hosts_o = hosts[order]
            uniq, at = np.unique(hosts_o, return_index=True)
            out.first_alarm_us[uniq] = first[hit][order][at]
    return out


def distinct_windows(seg: I64, t: I64, known: I64, host_total: I64, n_win: int) -> tuple[B, I64]:
    """Which (host slot, window) segments are tested and, per host slot, how many distinct
    crash sets they hold (module docstring): ``seg`` each crash's segment (``slot * n_win +
    window``), ``t`` its time, ``known`` per segment its crashes with a known cell (0 where a
    kind does not apply), ``host_total`` per slot all its crashes. Windows are time
    intervals, so two of a host hold the same crashes exactly when they agree on the count,
    the first and the last time."""
    n_seg = known.size
    count = np.bincount(seg, minlength=n_seg)
    first = np.full(n_seg, np.iinfo(np.int64).max, dtype=np.int64)
    last = np.full(n_seg, np.iinfo(np.int64).min, dtype=np.int64)
    np.minimum.at(first, seg, t)
    np.maximum.at(last, seg, t)
    slot = np.arange(n_seg) // max(n_win, 1)
    tested: B = (known >= MIN_WINDOW_CRASHES) & (count < host_total[slot])
    rows = np.flatnonzero(tested)
    keys = np.stack([slot[rows], count[rows], first[rows], last[rows]], axis=1)
    uniq = np.unique(keys, axis=0) if rows.size else keys
    distinct = np.bincount(uniq[:, 0], minlength=host_total.size).astype(np.int64)
    return tested, distinct


def _pair_screen(
    n: I64, x: I64, k: I64, o: I64, lam: F64, lam_u: F64, cpus: I64, level: float | F64
) -> B:
    """Where the pair test can reach ``level``: its lower bound (the union law's mass where
    ``s2`` alone is as extreme, :func:`~corecensus.epidemiology.hosttest.lower_bounds`) is at
    most it. Elsewhere its p-value counts as 1 (conservative)."""
    score = statistic(n, x, k, o, lam, lam_u, cpus, cells=2).score
    live: B = (cpus >= 4) & (x >= 3) & (score < 1.0)
    bound = np.broadcast_to(np.asarray(level, dtype=np.float64), live.shape)
    live[live] = lower_bounds(n[live], score[live], cpus[live], cells=2) <= bound[live]
    return live


def _keep_window(
    out: FocusScan, hosts: I64, w: I64, starts: I64, ends: I64, top: TopCells, segs: I64
) -> None:
    """Record the window (and its busiest cell) of the tests that are now the hosts' best."""
    out.window_start_us[hosts] = starts[w]
    out.window_end_us[hosts] = ends[w]
    out.cell[hosts] = top.cell[segs]
    out.cell_count[hosts] = top.top[segs]
    out.window_crashes[hosts] = top.n[segs]


def _keep_pair(out: FocusScan, hosts: I64, top: TopCells, rows: I64, x: I64) -> None:
    """Record the pair of cells of the pair tests that are now the hosts' best."""
    out.pair_cells[0][hosts] = top.pair[0][rows]
    out.pair_cells[1][hosts] = top.pair[1][rows]
    out.pair_count[hosts] = x[rows]


def _keep_best(
    out: FocusScan,
    hosts: I64,
    raw: F64,
    share: F64,
    test: int,
    tested: I64 | None = None,
) -> B:
    """Keep, per host, the test with the smallest adjusted p-value (``raw / share``); returns
    which of ``hosts`` (one entry per test, hosts may repeat) is now the host's best.
    ``tested``: per entry, how many distinct windows its kind was split over."""
    adjusted = np.minimum(raw / share, 1.0)
    order = np.lexsort((adjusted, hosts))
    first = np.ones(order.size, dtype=bool)
    first[1:] = hosts[order][1:] != hosts[order][:-1]
    lead = order[first]
    better = np.zeros(hosts.size, dtype=bool)
    wins = adjusted[lead] < out.p_value[hosts[lead]]
    lead = lead[wins]
    better[lead] = True
    hl = hosts[lead]
    out.p_value[hl] = adjusted[lead]
    out.raw_p[hl] = raw[lead]
    out.share[hl] = share[lead]
    out.tested[hl] = 0 if tested is None else tested[lead]
    out.test[hl] = test
    if test == PAIR:
        out.window_start_us[hl] = -1
        out.window_end_us[hl] = -1
    return better


def _window_screen(
    c: I64,
    t: I64,
    cells: TopCells,
    starts: I64,
    ends: I64,
    t0: int,
    cpus: I64,
    level: float,
) -> B:
    """Hosts with a window whose busiest cell alone (its largest-cell bound, anomalies left
    out), or its two busiest cells (their union bound over pairs), is at most ``level``: a
    screen only (hosts it leaves out keep p = 1 in the windows,
    conservative), at the cost of one count per (host, cell) and slot of an eighth of the span
    (every dyadic window of levels 1 and 2 is a run of such slots)."""
    out = np.zeros(cpus.size, dtype=bool)
    g = cells.groups
    if g is None or not len(g):
        return out
    slots = 2 ** (WINDOW_LEVELS + 1)
    span = max(int(ends[-1]) - 1 - t0, 1)
    tk = t[c >= 0]
    slot = np.minimum(((tk - t0) * slots) // span, slots - 1)
    per = np.bincount(g.inverse * slots + slot, minlength=len(g) * slots).reshape(len(g), slots)
    lo = np.clip(np.rint((starts - t0) * slots / span), 0, slots).astype(np.int64)
    hi = np.clip(np.rint((ends - 1 - t0) * slots / span), 0, slots).astype(np.int64)
    hi = np.maximum(hi, lo + 1)
    run = np.zeros((len(g), slots + 1), dtype=np.int32)
    np.cumsum(per, axis=1, out=run[:, 1:])
    counts = run[:, hi] - run[:, lo]  # (groups, windows)
    g_host = g.keys // cells.width
    first = np.flatnonzero(np.diff(g_host, prepend=-1))  # keys sorted: hosts contiguous
    hosts = g_host[first]
    top = np.maximum.reduceat(counts, first, axis=0)
    n = np.add.reduceat(counts, first, axis=0)
    c_h = cpus[hosts][:, None]
    s = max_cell_pvalue(n, top, c_h)
    # the two busiest cells of each window (the windowed pair test): the runner-up is the
    # busiest again when it ties, else the busiest of the cells below it
    top_g = np.repeat(top, np.diff(np.append(first, len(g))), axis=0)
    ties = np.add.reduceat((counts == top_g).astype(np.int32), first, axis=0)
    below = np.maximum.reduceat(np.where(counts < top_g, counts, 0), first, axis=0)
    s2 = pair_cell_pvalue(n, top + np.where(ties >= 2, top, below), c_h)
    out[hosts] = ((s <= level) | (s2 <= level)).any(axis=1)
    return out
