"""The per-host test's pieces shared by the whole-window scan and the focused tests
(:mod:`~corecensus.epidemiology.hostscan`, :mod:`~corecensus.epidemiology.hostfocus`): each
host's (or segment's) busiest cell, the exact null laws of its residual anomaly count, and the
stream (the same test re-run after every crash, in time order; it lives in
:mod:`~corecensus.epidemiology.hoststream`, which walks the crashes a chunk of hosts at a time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from corecensus.epidemiology.hoststream import Stream, anomaly_cap
from corecensus.epidemiology.hosttest import (
    poisson_binomial_prefixes,
    statistic,
)
from corecensus.epidemiology.segments import (
    Groups,
    pair_key,
    radix_argsort,
)

__all__ = ["Stream", "TopCells", "anomaly_cap", "anomaly_laws", "modal_top_cells"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B = NDArray[np.bool_]


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
    # The pair test's two cells, chosen from the counts alone (busiest first, the lowest cell
    # among ties; hosttest.pair_pvalues relies on it), and the residual anomalies on them.
    # Their sum is top + second_count.
    pair: tuple[I64, I64]
    pair_anomalous: I64
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
    pair = (cell.copy(), second.copy())
    pair_z = np.zeros(n_hosts, dtype=np.int64)
    if not known.any():
        return TopCells(n, top, cell, z, second, second_count, pair, pair_z)
    width = int(c[known].max()) + 1
    g = Groups.of(pair_key(h[known], c[known], width))
    g_host = g.keys // width
    g_z = g.count_where(resid[known])
    np.maximum.at(top, g_host, g.counts)
    tied = g.counts == top[g_host]
    # the statistic of the cells tied for busiest only: the others are never chosen (inf)
    score = np.full(g.counts.size, np.inf)
    at = np.flatnonzero(tied)
    gh, g_at, z_at = g_host[at], g.counts[at], g_z[at]
    score[at] = statistic(
        n[gh], g_at, z_at, anomalous[gh] - z_at, lam[gh], lam_u[gh], cpus[gh]
    ).score
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
    # the pair: per host the first two groups by count (descending), then cell (keys ascend)
    by_count = np.lexsort((g.keys, -g.counts, g_host))
    rank = np.arange(by_count.size) - np.searchsorted(g_host[by_count], g_host[by_count])
    for r, out in ((0, pair[0]), (1, pair[1])):
        at = by_count[rank == r]
        out[g_host[at]] = g.keys[at] % width
        np.add.at(pair_z, g_host[at], g_z[at])
    return TopCells(n, top, cell, z, second, second_count, pair, pair_z, g, width)
