"""The per-host test's pieces shared by the whole-window scan and the focused tests
(:mod:`~corecensus.epidemiology.hostscan`, :mod:`~corecensus.epidemiology.hostfocus`): each
host's (or segment's) busiest cell, the exact null laws of its residual anomaly count, and the
stream (the same test re-run after every crash, in time order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from corecensus.epidemiology.hosttest import (
    count_reach,
    host_pvalues,
    lower_bounds,
    poisson_binomial_prefixes,
    statistic,
)
from corecensus.epidemiology.segments import (
    Groups,
    pair_key,
    radix_argsort,
    segment_cummax,
    segment_cumsum,
    segment_rank,
    weighted_count,
)

__all__ = ["Stream", "TopCells", "anomaly_cap", "anomaly_laws", "modal_top_cells"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B = NDArray[np.bool_]


def anomaly_cap(h: I64, a: F64, n_hosts: int) -> int:
    """Anomaly counts above this are folded into it in the null laws (conservative): 40, or
    more for hosts expecting many (their mean plus 8 standard deviations plus 10)."""
    lam = float(weighted_count(h, a, n_hosts).max()) if h.size else 0.0
    return max(40, int(count_reach(lam)))


def anomaly_laws(h: I64, a: F64, n_hosts: int, cap: int) -> F64:
    """Per host, the exact null law of its residual anomaly count (Poisson-binomial over its
    crashes' probabilities ``a``), as rows of length ``cap + 1``."""
    laws = np.zeros((n_hosts, cap + 1), dtype=np.float64)
    laws[:, 0] = 1.0
    some = a > 0
    if not some.any():
        return laws
    hs = h[some]
    order = radix_argsort(hs)
    hs = hs[order]
    new = np.ones(hs.size, dtype=bool)
    new[1:] = hs[1:] != hs[:-1]
    starts = np.flatnonzero(new).astype(np.int64)
    laws[hs[starts]] = poisson_binomial_prefixes(a[some][order], starts, cap=cap)
    return laws


@dataclass(frozen=True, slots=True, eq=False)
class TopCells:
    n: I64  # crashes with a known CPU
    top: I64  # crashes on the busiest CPU
    cell: I64  # that CPU (-1 none)
    anomalous: I64  # residual anomalous crashes on it
    second: I64  # the busiest other CPU (the lowest among ties; -1 none)
    second_count: I64  # crashes on it
    # the (host, cell) groups of the crashes with a known cell (keys host * width + cell),
    # for callers that count within them (None when no crash has a cell)
    groups: Groups | None = None
    width: int = 1


def modal_top_cells(
    h: I64,
    c: I64,
    resid: B,
    n_hosts: int,
    anomalous: I64,
    lam: F64,
    lam_u: F64,
    cpus: I64,
) -> TopCells:
    """Per host, the busiest CPU and the residual anomalies on it, and the runner-up.

    When several CPUs tie for busiest, the one with the smallest statistic (the most extreme)
    is taken, then the lowest CPU index; the test accounts for the choice (hosttest's tie
    factor).
    """
    known = c >= 0
    n = np.bincount(h[known], minlength=n_hosts).astype(np.int64)
    top = np.zeros(n_hosts, dtype=np.int64)
    cell = np.full(n_hosts, -1, dtype=np.int64)
    z = np.zeros(n_hosts, dtype=np.int64)
    second = np.full(n_hosts, -1, dtype=np.int64)
    second_count = np.zeros(n_hosts, dtype=np.int64)
    if not known.any():
        return TopCells(n, top, cell, z, second, second_count)
    width = int(c[known].max()) + 1
    g = Groups.of(pair_key(h[known], c[known], width))
    g_host = g.keys // width
    g_z = g.count_where(resid[known])
    np.maximum.at(top, g_host, g.counts)
    tied = g.counts == top[g_host]
    gh = g_host
    score = statistic(n[gh], g.counts, g_z, anomalous[gh] - g_z, lam[gh], lam_u[gh], cpus[gh]).score
    score = np.where(tied, score, np.inf)
    order = np.lexsort((g.keys % width, score, g_host))
    first = np.ones(order.size, dtype=bool)
    first[1:] = g_host[order][1:] != g_host[order][:-1]
    lead = order[first]
    hosts = g_host[lead]
    cell[hosts] = g.keys[lead] % width
    z[hosts] = g_z[lead]
    rest = np.ones(g.counts.size, dtype=bool)
    rest[lead] = False
    np.maximum.at(second_count, g_host[rest], g.counts[rest])
    runner = rest & (g.counts == second_count[g_host]) & (g.counts > 0)
    second_cell = np.full(n_hosts, width, dtype=np.int64)
    np.minimum.at(second_cell, g_host[runner], g.keys[runner] % width)
    second[:] = np.where(second_cell < width, second_cell, -1)
    return TopCells(n, top, cell, z, second, second_count, g, width)


@dataclass(frozen=True, slots=True, eq=False)
class Stream:
    """Outputs of the streaming pass, filled in place (per host)."""

    first_alarm: I64
    alarm_crashes: I64
    min_p: F64

    def run(
        self,
        *,
        h: I64,
        c: I64,
        t: I64,
        time_order: I64,
        resid: B,
        lam: F64,
        cpus: I64,
        exact_level: float,
        alpha: float,
    ) -> None:
        """Re-run the test after every crash of each host, in time order: looks whose lower
        bound exceeds ``exact_level`` are left out, alarms at ``alpha``."""
        n = h.size
        # order by (host, time): a stable sort by host of the time order
        order = time_order[radix_argsort(h[time_order])]
        hs = h[order]
        new = np.ones(n, dtype=bool)
        new[1:] = hs[1:] != hs[:-1]
        starts = np.flatnonzero(new).astype(np.int64)

        known = c[order] >= 0
        n_run = segment_cumsum(known.astype(np.int64), starts)
        # running count of each crash's own CPU cell, in time order: a stable sort by cell
        # keeps the time order inside each cell
        width = int(c.max()) + 2
        cell = pair_key(hs, np.where(known, c[order] + 1, 0), width)
        by_cell = radix_argsort(cell)
        cs = cell[by_cell]
        cnew = np.ones(n, dtype=bool)
        cnew[1:] = cs[1:] != cs[:-1]
        cell_count = np.empty(n, dtype=np.int64)
        cell_count[by_cell] = segment_rank(n, np.flatnonzero(cnew).astype(np.int64)) + 1
        cell_count[~known] = 0
        m_run = segment_cummax(cell_count, starts)
        # residual anomalies so far and the Poisson-equivalent null means, with a known CPU
        # and without
        r_known = resid[order] & known
        lam_o = lam[order]
        z_run = segment_cumsum(resid[order].astype(np.int64), starts)
        # running residual anomalies of each crash's own CPU cell
        cell_starts = np.flatnonzero(cnew).astype(np.int64)
        cz = np.empty(n, dtype=np.int64)
        cz[by_cell] = segment_cumsum(r_known[by_cell].astype(np.int64), cell_starts)

        # The statistic can only fall where a CPU cell reaches the running maximum or a
        # residual anomaly arrives, so it is evaluated at those crashes only. The busiest CPU
        # is the cell that last reached the running maximum (the crash's own at a modal crash;
        # its count and anomalies cannot have changed since, or that crash would be modal).
        # When CPUs tie it is one of them, so its statistic is at least the full test's (the
        # most extreme tied CPU): the p-value can only be larger, still valid.
        modal = known & (cell_count == m_run) & (m_run >= 2)
        idx = np.flatnonzero(modal | resid[order])
        if not idx.size:
            return
        pos = np.arange(n, dtype=np.int64)
        at_max = known & (cell_count == m_run)
        last = np.maximum.accumulate(np.where(at_max, pos, -1))
        has = last >= starts[np.searchsorted(starts, pos, side="right") - 1]
        k_top = np.where(has, cz[np.maximum(last, 0)], 0)
        # Looks whose p-value is surely above the exact level cannot alarm: they keep their
        # lower bound, and only the rest get anomaly laws (one row of cap + 1 per look, which
        # for every look of a 10-million-crash fleet would not fit in memory).
        lam_k = segment_cumsum(np.where(known, lam_o, 0.0), starts)
        lam_u = segment_cumsum(np.where(known, 0.0, lam_o), starts)
        score = statistic(
            n_run[idx],
            m_run[idx],
            k_top[idx],
            z_run[idx] - k_top[idx],
            lam_k[idx],
            lam_u[idx],
            cpus[hs[idx]],
        ).score
        bound = np.where(score < 1.0, lower_bounds(n_run[idx], score, cpus[hs[idx]]), 1.0)
        idx = idx[bound <= exact_level]  # the others cannot lower min_p below it
        if not idx.size:
            return
        cap = anomaly_cap(h, lam, int(h.max()) + 1)
        # The laws are needed up to each host's last remaining look only: the recursion runs
        # over those prefixes, not over every crash of every host.
        seg = np.searchsorted(starts, idx, side="right") - 1
        last = np.full(starts.size, -1, dtype=np.int64)
        np.maximum.at(last, seg, idx)
        segs = np.flatnonzero(last >= 0)
        lengths = last[segs] - starts[segs] + 1
        sub_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        positions = np.repeat(starts[segs] - sub_starts, lengths) + np.arange(int(lengths.sum()))
        look = np.zeros(n, dtype=bool)
        look[idx] = True
        record = look[positions]
        a_known = np.where(known, lam_o, 0.0)[positions]
        a_unknown = np.where(known, 0.0, lam_o)[positions]
        _, p = host_pvalues(
            n_run[idx],
            m_run[idx],
            k_top[idx],
            z_run[idx] - k_top[idx],
            poisson_binomial_prefixes(a_known, sub_starts, record=record, cap=cap),
            poisson_binomial_prefixes(a_unknown, sub_starts, record=record, cap=cap),
            cpus[hs[idx]],
        )
        np.minimum.at(self.min_p, hs[idx], p)
        hit = idx[p <= alpha]
        if not hit.size:
            return
        hosts_hit, first = np.unique(hs[hit], return_index=True)
        pos = hit[first]
        self.first_alarm[hosts_hit] = t[order][pos]
        rank = pos - starts[np.searchsorted(starts, pos, side="right") - 1]
        self.alarm_crashes[hosts_hit] = rank + 1
