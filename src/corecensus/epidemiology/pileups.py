"""Pile-ups on one CPU that are not the silicon, and the second look that sets them aside
(issue 9).

The host test's null is that a healthy host's crashes land on its CPUs uniformly and
independently. Two things real schedulers do break it on healthy hosts, and each looked like a
bad core to ``bench/fleet_adversary.py``:

* **One (population, service) on one CPU.** A nightly cron job that dies at start is started
  by the idle host's scheduler on the same CPU most nights: 20 crashes of one population of one
  service on one CPU, no anomalies (41 false flags in the adversary's first run). A defective
  core crashes *whatever* runs on it; a pile-up made of one population of one service is the
  scheduler placing one job, not a core failing.
* **A CPU index busier on many hosts.** IRQ affinity makes ordinary crashes 1.5-3x likelier on
  CPU 0, a thread-per-core database's shard 0 does 3-5x the work of the others (30 false flags).
  A defect sits at a random index; an index that holds the pile-up on many more hosts than
  chance is the platform's, or the service's when it is so for one (population, service)
  only (shard 0 on the first CPU of a NUMA socket: CPU 32 of a 128-CPU host).

**The second look.** For each flagged host, the crashes behind its pile-up cells (the busiest
cell of the whole data, and the window's cell or the pair's cells when a focused test flagged
it) are examined, in this order:

1. **Busy index.** When the cell's index is busy on the other hosts (:func:`busy_indices`,
   leave-one-host-out; CPU 0 at a lower bar, :data:`BUSY_CPU0_LEVEL`) and its residual
   anomalies are unremarkable (Poisson tail at their null expectation above
   :data:`BUSY_ANOMALY_LEVEL`), the whole cell is set aside and the host tested on one cell
   fewer. Otherwise, with the cell's anomalies still unremarkable, each (population, service)
   with at least 2 crashes on the cell whose index the other hosts show busy *for that group*
   (:func:`group_busy`: any index, the group's indices sharing :data:`BUSY_GROUP_LEVEL`; a
   thread-per-core service's shard 0 on its socket's first CPU) has its crashes there set
   aside.
2. **One job.** Otherwise, when the (population, service) with the most crashes on the cell
   holds at least half of them (and at least two), at least :data:`JOB_SHARE` of those come
   within :data:`JOB_WINDOW_US` of the time of day (a job a timer starts) and their residual
   anomalies are unremarkable (tail above :data:`GROUP_ANOMALY_LEVEL`), its crashes on that
   cell are set aside (its others keep their CPUs).

Set aside means the crash's CPU is left out (it becomes an unknown-CPU crash, its anomalies
still count), as for a pinned crash. The host's whole test family is run again on that; its
p-values are the larger of the two looks'.

**Validity.** The final p-values are never smaller than the first look's, whatever rule chose
what to set aside, so every host's false-alarm probability stays within ``host_alpha +
window_alpha``: the second look spends no budget. It can only cost recall, where a faulty core's
pile-up is itself one population of one service at one time of day without anomalies, or sits
at a busy index without anomalies; with anomalies on the cell, crashes from several populations
or at any time of day, the first look's p-value stands
(``tests/epidemiology/test_epi_pileups.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from corecensus.epidemiology.hostfocus import PAIR, WINDOW, WINDOW_PAIR, FocusScan
from corecensus.epidemiology.hostlooks import TopCells
from corecensus.epidemiology.hosttest import HostStatistic
from corecensus.epidemiology.poisson import poisson_upper
from corecensus.epidemiology.segments import pair_key

__all__ = [
    "BUSY_ANOMALY_LEVEL",
    "BUSY_CPU0_LEVEL",
    "BUSY_GROUP_LEVEL",
    "BUSY_INDEX_LEVEL",
    "BUSY_INDEX_RATIO",
    "BUSY_MIN_CRASHES",
    "GROUP_ANOMALY_LEVEL",
    "JOB_MIN_CRASHES",
    "JOB_SHARE",
    "JOB_WINDOW_US",
    "BusyIndices",
    "GroupBusy",
    "Look",
    "SecondLook",
    "busy_indices",
    "group_busy",
    "second_look",
    "set_aside",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B = NDArray[np.bool_]

# A pile-up's own anomalies are remarkable (a fault's, and the second look leaves it alone)
# when their Poisson tail at the null expectation is at most this. A cron job's 14 crashes at
# the fleet's 2.5 % have 0.35 expected: 3 anomalies have a tail of 0.005, 2 of 0.05.
GROUP_ANOMALY_LEVEL = 0.05
# A job the scheduler starts: at least this share of the group's crashes on the cell within
# this span of the time of day (cron, systemd timers). A faulty core's crashes come at any time:
# with crashes uniform over the day, 3 of 3 fall within two hours with probability 0.021, 4 of 4
# with 2.3e-3, 4 of 5 with 0.010, 5 of 6 with 1.3e-3.
JOB_SHARE = 0.75
# ... and at least 3 of them, all when 3 or 4, 4 when 5: 2 crashes fall within two hours of the
# time of day by chance with probability 1/6, and one faulty host of 860 in the production
# simulator's microcode-live lost 2 of its 5 crashes that way.
JOB_MIN_CRASHES = 3
JOB_WINDOW_US = 2 * 3_600_000_000
DAY_US = 86_400_000_000
# The same for a cell at a busy index, stricter: such a cell holds tens of ordinary crashes on
# a busy host, whose anomaly rates are estimates; a fault's anomalies there have tails of 1e-3
# and below.
BUSY_ANOMALY_LEVEL = 0.01
# The fleet check of CPU indices. Under the null each host's busiest cell is uniform over its
# C cells (ties shared equally), so the hosts whose busiest cell is index i number sum 1/C in
# expectation; the index is busy when the other hosts (of at least BUSY_MIN_CRASHES crashes
# with a cell) put it first at least BUSY_INDEX_RATIO times that and its Poisson tail is at
# most BUSY_INDEX_LEVEL. The tail of a sum of independent indicators is below Poisson's.
BUSY_MIN_CRASHES = 5
BUSY_INDEX_LEVEL = 1e-4
# CPU 0 is the one index to suspect a priori: Linux runs there what is not spread (the boot
# CPU, IRQs under the default affinity, housekeeping) and thread-per-core frameworks put shard
# 0 there. Its check runs at this level (the adversary's thread-per-core seed 0: the hosts put
# CPU 0 first 66 times against 43.7, tail 1.5e-3). A wrong "busy" costs only recall on a fault
# there without anomalies.
BUSY_CPU0_LEVEL = 1e-2
BUSY_INDEX_RATIO = 1.25
# The same check within one (population, service) on the other hosts, at any index: a service
# that runs a thread per CPU with shard 0 on the first CPU of its NUMA socket (CPU 32, not 0;
# bench/fleet_adversary.py *recall* seed 4) makes that index busy for its own crashes only,
# too few among all of a fleet's crashes to show in the check above. Each group's check looks
# at every index its hosts have, so its indices share this level (Bonferroni: BUSY_GROUP_LEVEL
# / W for W indices), CPU 0 keeping its own a priori level.
BUSY_GROUP_LEVEL = 1e-2


@dataclass(frozen=True, slots=True, eq=False)
class Look:
    """One look's results: the whole-window test (``cells``, ``stat``, ``p``) and the focused
    family (``focus``), with the residual anomalies per host and their expectation among
    crashes with and without a cell."""

    cells: TopCells
    stat: HostStatistic
    p: F64
    focus: FocusScan
    anomalous: I64
    lam_known: F64
    lam_unknown: F64


@dataclass(frozen=True, slots=True, eq=False)
class BusyIndices:
    """Per cell index: ``observed`` hosts whose busiest cell it is (a host's ties share one),
    ``expected`` their null expectation; per host whether it counts (``counts``), its busiest
    count (``top``), its number of tied busiest cells (``ties``) and of cells (``cpus``)."""

    observed: F64
    expected: F64
    counts: B
    top: I64
    ties: I64
    cpus: I64

    def busy(self, host: int, index: int, crashes: int) -> bool:
        """Is ``index`` busy on the hosts other than ``host`` (leave-one-host-out), ``host``
        having ``crashes`` crashes there?"""
        if index < 0 or index >= self.observed.size:
            return False
        obs, exp = float(self.observed[index]), float(self.expected[index])
        if self.counts[host] and index < self.cpus[host]:
            exp -= 1.0 / float(self.cpus[host])
            if crashes == self.top[host]:
                obs -= 1.0 / float(self.ties[host])
        obs = float(np.floor(obs + 1e-9))
        if exp <= 0.0 or obs < BUSY_INDEX_RATIO * exp:
            return False
        level = BUSY_CPU0_LEVEL if index == 0 else BUSY_INDEX_LEVEL
        return bool(poisson_upper(obs, exp) <= level)


def busy_indices(g_host: I64, g_cell: I64, g_count: I64, cpus: I64) -> BusyIndices:
    """The fleet check of CPU indices (module docstring) from the (host, cell) counts of the
    crashes with a cell (``g_host``, ``g_cell``, ``g_count``, sorted by host) and each host's
    number of cells.
    Hosts with a cell beyond their number of cells (a cpuset away from CPU 0) are left out of
    both sides: their indices do not run from 0."""
    n_hosts = cpus.size
    c = np.maximum(np.asarray(cpus, dtype=np.int64), 1)
    n = np.bincount(g_host, weights=g_count, minlength=n_hosts)
    top = np.zeros(n_hosts, dtype=np.int64)
    high = np.full(n_hosts, -1, dtype=np.int64)
    if g_host.size:
        # keys sorted by host, then cell (segments.Groups): one segment per host
        first = np.flatnonzero(np.diff(g_host, prepend=-1))
        hosts = g_host[first]
        top[hosts] = np.maximum.reduceat(g_count, first)
        high[hosts] = np.maximum.reduceat(g_cell, first)
    usable = (n >= BUSY_MIN_CRASHES) & (high < c)
    tied = (g_count == top[g_host]) & usable[g_host]
    ties = np.bincount(g_host[tied], minlength=n_hosts).astype(np.int64)
    width = int(c[usable].max()) if usable.any() else 0
    observed = np.bincount(g_cell[tied], weights=1.0 / ties[g_host[tied]], minlength=width).astype(
        np.float64
    )
    # each usable host adds 1 / C to every index below its C: a difference array
    steps = np.bincount(c[usable], weights=1.0 / c[usable], minlength=width + 1)
    expected = (steps.sum() - np.cumsum(steps))[:width] + 0.0
    return BusyIndices(observed[:width], expected, usable, top, np.maximum(ties, 1), c)


@dataclass(frozen=True, slots=True, eq=False)
class GroupBusy:
    """The fleet check of CPU indices within (population, service) groups, for the (host,
    group, cell) triples asked about: ``busy`` holds those whose index is busy for the group
    on the other hosts; ``observed``, ``expected`` and ``level`` per triple asked (for the
    report and the tests)."""

    busy: frozenset[tuple[int, int, int]]
    observed: dict[tuple[int, int, int], float]
    expected: dict[tuple[int, int, int], float]
    level: dict[tuple[int, int, int], float]


def group_busy(
    wanted: list[tuple[int, int, int]],
    h: NDArray[Any],
    c: NDArray[Any],
    groups: tuple[NDArray[Any], NDArray[Any]],
    cpus: I64,
) -> GroupBusy:
    """Is each (host, group, cell) of ``wanted`` at an index busy for the group on the other
    hosts? The events ``h``, ``c`` (cell, -1 none) and ``groups`` (population and service
    codes, grouped as :func:`group_codes` does; only the wanted groups' events are read)
    and each host's number of cells. As :func:`busy_indices` within
    the group: the hosts with at least :data:`BUSY_MIN_CRASHES` of its crashes with a cell, none
    beyond their number of cells, put index ``i`` first ``O_i`` times (ties shared) against
    ``E_i = sum 1/C`` over those whose cells reach ``i``; busy when ``O_i >= BUSY_INDEX_RATIO
    E_i`` and its Poisson tail is at most the level: :data:`BUSY_CPU0_LEVEL` for CPU 0,
    ``BUSY_GROUP_LEVEL / W`` for any other, ``W`` the most cells any of those hosts has (the
    indices the check looks at)."""
    if not wanted:
        return GroupBusy(frozenset(), {}, {}, {})
    pop, svc = groups
    wanted_groups = np.unique(np.array([g for _, g, _ in wanted], dtype=np.int64))
    # the wanted populations' events first (one pass over int32 codes), then their groups
    sel = np.flatnonzero((np.asarray(c) >= 0) & np.isin(pop, wanted_groups // _svc_width(svc)))
    code = group_codes(pop[sel], svc[sel], _svc_width(svc))
    keep = np.isin(code, wanted_groups)
    sel, code = sel[keep], code[keep]
    gi = np.searchsorted(wanted_groups, code).astype(np.int64)
    hh = np.asarray(h[sel], dtype=np.int64)
    cc = np.asarray(c[sel], dtype=np.int64)
    n_hosts = cpus.size
    width = int(cc.max(initial=0)) + 1
    # (group, host, cell) counts, sorted: each group's and each (group, host)'s a contiguous run
    u, k = np.unique((gi * n_hosts + hh) * width + cc, return_counts=True)
    seg_key = u // width  # (group, host)
    cell = u % width
    first = np.flatnonzero(np.diff(seg_key, prepend=-1))
    s_key = seg_key[first]
    s_group, s_host = s_key // n_hosts, s_key % n_hosts
    s_n = np.add.reduceat(k, first) if first.size else k
    s_top = np.maximum.reduceat(k, first) if first.size else k
    s_high = np.maximum.reduceat(cell, first) if first.size else cell
    s_c = np.maximum(cpus[s_host], 1)
    usable = (s_n >= BUSY_MIN_CRASHES) & (s_high < s_c)
    seg = np.repeat(np.arange(first.size), np.diff(np.r_[first, u.size]))
    tied = (k == s_top[seg]) & usable[seg]
    ties = np.maximum(np.bincount(seg[tied], minlength=first.size), 1)
    out: set[tuple[int, int, int]] = set()
    obs_d: dict[tuple[int, int, int], float] = {}
    exp_d: dict[tuple[int, int, int], float] = {}
    lvl_d: dict[tuple[int, int, int], float] = {}
    for host, g, v in wanted:
        j = int(np.searchsorted(wanted_groups, g))
        a, b = np.searchsorted(s_group, [j, j + 1])  # the group's (group, host) runs
        mine = usable[a:b] & (s_host[a:b] != host)
        if not mine.any():
            continue
        lo, hi = int(first[a]), int(first[b]) if b < first.size else u.size
        at = tied[lo:hi] & (cell[lo:hi] == v) & mine[seg[lo:hi] - a]
        obs = float(np.floor((1.0 / ties[seg[lo:hi][at]]).sum() + 1e-9))
        c_mine = s_c[a:b][mine]
        exp = float((1.0 / c_mine[c_mine > v]).sum())
        level = BUSY_CPU0_LEVEL if v == 0 else BUSY_GROUP_LEVEL / float(c_mine.max())
        key = (host, g, v)
        obs_d[key], exp_d[key], lvl_d[key] = obs, exp, level
        if exp > 0.0 and obs >= BUSY_INDEX_RATIO * exp and poisson_upper(obs, exp) <= level:
            out.add(key)
    return GroupBusy(frozenset(out), obs_d, exp_d, lvl_d)


def _svc_width(svc: NDArray[Any]) -> int:
    return int(svc.max(initial=-1)) + 2


def group_codes(pop: NDArray[Any], svc: NDArray[Any], width: int) -> I64:
    """The (population, service) group code of each event (service -1 unknown is a group of its
    own); ``width`` is the largest service code + 2."""
    return pair_key(pop, np.asarray(svc, dtype=np.int64) + 1, width)


def set_aside(
    *,
    idx: I64,
    c: NDArray[np.integer],
    group: I64,
    resid: B,
    ez: F64,
    t: I64,
    host: int,
    cells: list[int],
    busy: BusyIndices,
    busy_groups: frozenset[tuple[int, int, int]] = frozenset(),
) -> tuple[I64, int]:
    """One flagged host's crashes to set aside (module docstring) and how many of its cells
    go with them. ``idx`` are the host's crashes (indices into ``c``, ``resid``, ``ez``,
    ``t``), ``group`` their (population, service) codes, ``cells`` the host's pile-up cells,
    ``busy_groups`` the (host, group, cell) triples at an index busy for the group
    (:func:`group_busy`)."""
    cc = np.asarray(c[idx], dtype=np.int64)
    out: list[I64] = []
    dropped = 0
    for v in dict.fromkeys(x for x in cells if x >= 0):
        here = cc == v
        on = idx[here]
        if on.size < 2:
            continue
        plain = _unremarkable(resid[on], ez[on], BUSY_ANOMALY_LEVEL)
        if plain and busy.busy(host, v, int(on.size)):
            out.append(on)
            dropped += 1
            continue
        g, k = np.unique(group[here], return_counts=True)
        # a group at an index busy for it on the other hosts, the cell's anomalies (all its
        # groups': a fault's crashes spread over groups) unremarkable
        for gg, kk in zip(g.tolist(), k.tolist(), strict=True):
            if plain and kk >= 2 and (host, gg, v) in busy_groups:
                out.append(on[group[here] == gg])
        j = int(np.argmax(k))
        if k[j] < 2 or 2 * k[j] < on.size:
            continue
        mine = on[group[here] == g[j]]
        if _same_time_of_day(t[mine]) and _unremarkable(resid[mine], ez[mine], GROUP_ANOMALY_LEVEL):
            out.append(mine)
    if not out:
        return np.zeros(0, dtype=np.int64), 0
    return np.unique(np.concatenate(out)), dropped


def _same_time_of_day(t: I64) -> bool:
    """At least :data:`JOB_SHARE` of the crashes (and at least :data:`JOB_MIN_CRASHES`, all of 3
    or 4, 4 of 5) within :data:`JOB_WINDOW_US` of each other in the time of day (circular): a
    job a timer starts."""
    k = t.size
    if k < JOB_MIN_CRASHES:
        return False
    tod = np.sort(np.asarray(t, dtype=np.int64) % DAY_US)
    both = np.concatenate([tod, tod + DAY_US])
    within = np.searchsorted(both, tod + JOB_WINDOW_US, side="left") - np.arange(k)
    return bool(within.max(initial=0) >= max(np.ceil(JOB_SHARE * k), min(k, 4)))


def _unremarkable(resid: B, ez: F64, level: float) -> bool:
    """Residual anomalies no more than chance at ``level``."""
    z = int(np.count_nonzero(resid))
    if z == 0:
        return True
    return bool(poisson_upper(z, float(ez.sum())) > level)


@dataclass(frozen=True, slots=True, eq=False)
class SecondLook:
    """The second look's result: the whole-window test's parts and the focused family, per
    host from the second look where it set crashes aside (``touched``) with the larger of the
    two looks' p-values, else the first look's; the cells per host it tested on, and the
    events it set aside (indices)."""

    cells: TopCells
    stat: HostStatistic
    p: F64
    focus: FocusScan
    cpus: I64
    aside: I64
    events: I64


def second_look(
    first: Look,
    flagged: B,
    h: NDArray[Any],
    c: NDArray[Any],
    t: I64,
    resid: B,
    ez: F64,
    groups: tuple[NDArray[Any], NDArray[Any]],
    cpus: I64,
    retest: Callable[[NDArray[Any], I64, I64, B, F64, I64], Look],
) -> SecondLook:
    """The second look (module docstring) at the ``flagged`` hosts of the ``first`` look on
    the events ``h``, ``c``, ``t`` (host, cell, µs), ``resid``, ``ez`` (residual anomaly, its
    null probability), ``groups`` (population and service codes); ``retest(h, c, t, resid,
    ez, cpus)`` runs the host tests on a subset of the events (without streams)."""
    n_hosts = cpus.size
    aside = np.zeros(n_hosts, dtype=np.int64)
    none = SecondLook(
        first.cells, first.stat, first.p, first.focus, cpus, aside, np.zeros(0, np.int64)
    )
    g = first.cells.groups
    if g is None:  # no crash with a cell: nothing piles up
        return none
    width = first.cells.width
    busy = busy_indices(g.keys // width, g.keys % width, g.counts, cpus)
    focus = first.focus
    mine = np.flatnonzero(flagged[h])
    mine = mine[np.argsort(h[mine], kind="stable")]
    pop, svc = groups
    group = group_codes(pop[mine], svc[mine], _svc_width(svc))
    bounds = np.flatnonzero(np.diff(h[mine], prepend=-1, append=n_hosts + 1))
    spans = list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
    pile: list[list[int]] = []
    wanted: list[tuple[int, int, int]] = []
    for lo, hi in spans:
        hh = int(h[mine[lo]])
        cells = [int(first.cells.cell[hh])]
        if focus.test[hh] == WINDOW:
            cells.append(int(focus.cell[hh]))
        elif focus.test[hh] in (PAIR, WINDOW_PAIR):
            cells += [int(focus.pair_cells[0][hh]), int(focus.pair_cells[1][hh])]
        pile.append(cells)
        # the groups with at least 2 crashes on a pile-up cell: asked of the fleet at once
        cc = np.asarray(c[mine[lo:hi]], dtype=np.int64)
        for v in dict.fromkeys(x for x in cells if x >= 0):
            gv, kv = np.unique(group[lo:hi][cc == v], return_counts=True)
            wanted += [(hh, int(x), v) for x in gv[kv >= 2].tolist()]
    by_group = group_busy(wanted, h, c, groups, cpus).busy
    cpus2 = cpus.copy()
    parts: list[I64] = []
    for (lo, hi), cells in zip(spans, pile, strict=True):
        idx = mine[lo:hi]
        hh = int(h[idx[0]])
        out, dropped = set_aside(
            idx=idx,
            c=c,
            group=group[lo:hi],
            resid=resid,
            ez=ez,
            t=t,
            host=hh,
            cells=cells,
            busy=busy,
            busy_groups=by_group,
        )
        if out.size:
            parts.append(out)
            aside[hh] = out.size
            cpus2[hh] = max(int(cpus[hh]) - dropped, 1)
    if not parts:
        return none
    events = np.sort(np.concatenate(parts))
    touched = aside > 0
    sub = np.flatnonzero(touched[h])
    c2 = np.array(c[sub], dtype=np.int64)
    c2[np.isin(sub, events)] = -1
    again = retest(h[sub], c2, t[sub], resid[sub], ez[sub], cpus2)
    p = np.where(touched, np.maximum(first.p, again.p), first.p)
    merged = _per_host(touched, again.focus, focus)
    p_focus = np.where(touched, np.maximum(focus.p_value, again.focus.p_value), focus.p_value)
    # the windowed streams ran on the first look only: their alarms stand
    merged = replace(merged, p_value=p_focus, first_alarm_us=focus.first_alarm_us)
    return SecondLook(
        cells=replace(_per_host(touched, again.cells, first.cells), groups=None),
        stat=_per_host(touched, again.stat, first.stat),
        p=p,
        focus=merged,
        cpus=cpus2,
        aside=aside,
        events=events,
    )


def _per_host(touched: B, a: Any, b: Any) -> Any:
    """A per-host record (dataclass of per-host arrays, or tuples of them) from ``a`` where
    ``touched``, else from ``b``; other fields from ``b``."""
    out: dict[str, Any] = {}
    for f in fields(b):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(y, np.ndarray) and y.shape == touched.shape:
            out[f.name] = np.where(touched, x, y)
        elif isinstance(y, tuple) and all(isinstance(v, np.ndarray) for v in y):
            out[f.name] = tuple(np.where(touched, u, v) for u, v in zip(x, y, strict=True))
    return replace(b, **out)
