"""The per-host test as a stream: re-run after every crash of each host, in time order.

The statistic can only fall where a CPU cell reaches the host's running maximum or a residual
anomaly arrives, so it is evaluated at those crashes only (the *looks*); looks whose lower
bound puts them above the exact level cannot alarm and keep it; the rest get exact p-values
(:mod:`~corecensus.epidemiology.hosttest`). The first look at or below ``alpha`` is the alarm.

Every running count is a host's own, so the crashes are walked a chunk of hosts at a time
(:func:`~corecensus.epidemiology.segments.chunk_ranges`): at ten million crashes the two dozen
per-crash arrays of the whole fleet at once held 1.7 GB. The running sums of expected
anomalies are kept as one sum over the whole (host, time) order minus its value where each host
begins, carried from chunk to chunk, so every figure is the one the whole table at once gives,
to the bit.
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
    carried_segment_cumsum,
    chunk_ranges,
    pair_key,
    radix_argsort,
    segment_cummax,
    segment_cumsum,
    segment_rank,
    weighted_count,
)

__all__ = ["Stream", "anomaly_cap"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B = NDArray[np.bool_]

# The stream's looks run the (m, z, k, o) grid up to this many crashes and the two-factor test
# above (each look stays a valid test): the end-of-window and windowed tests run the grid up
# to hosttest.GRID_MAX_N (160), but a host passes through every n in its stream, and at 1e6
# crashes (about 100 per host) the grid there cost a quarter more time and 120 MiB more.
STREAM_GRID_MAX_N = 60


def anomaly_cap(h: I64, a: F64, n_hosts: int) -> int:
    """Anomaly counts above this are folded into it in the null laws (conservative): 40, or
    more for hosts expecting many (their mean plus 8 standard deviations plus 10)."""
    lam = float(weighted_count(h, a, n_hosts).max()) if h.size else 0.0
    return max(40, int(count_reach(lam)))


@dataclass(frozen=True, slots=True, eq=False)
class _Looks:
    """The looks of the stream: positions in the (host, time) order and the test's inputs."""

    pos: I64
    host: I64
    n: I64  # crashes with a known CPU so far
    m: I64  # on the busiest CPU so far
    k: I64  # residual anomalies on it
    z: I64  # residual anomalies so far
    lam_k: F64  # expected anomalies so far, with a known CPU
    lam_u: F64  # and without

    def __getitem__(self, keep: NDArray[np.bool_]) -> _Looks:
        return _Looks(*(getattr(self, f)[keep] for f in _LOOK_FIELDS))

    @classmethod
    def concat(cls, parts: list[_Looks]) -> _Looks:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in _LOOK_FIELDS))


_LOOK_FIELDS = ("pos", "host", "n", "m", "k", "z", "lam_k", "lam_u")


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
        if not n:
            return
        # order by (host, time): a stable sort by host of the time order
        order = time_order[radix_argsort(h[time_order])]
        per_host = np.bincount(h)
        sizes = per_host[per_host > 0].astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        width = int(c.max()) + 2
        parts: list[_Looks] = []
        before_k = before_u = 0.0
        for s_lo, s_hi in chunk_ranges(sizes):
            lo = int(starts[s_lo])
            hi = int(starts[s_hi]) if s_hi < starts.size else n
            looks, before_k, before_u = _chunk_looks(
                order[lo:hi], starts[s_lo:s_hi] - lo, h, c, resid, lam, width, before_k, before_u
            )
            # Looks whose p-value is surely above the exact level cannot alarm: they keep
            # their lower bound, and only the rest get anomaly laws (one row of cap + 1 per
            # look, which for every look of a 10-million-crash fleet would not fit in
            # memory). Both figures are each look's own, so they are taken chunk by chunk.
            stat = statistic(
                looks.n,
                looks.m,
                looks.k,
                looks.z - looks.k,
                looks.lam_k,
                looks.lam_u,
                cpus[looks.host],
            )
            score = stat.score
            del stat
            bound = np.where(
                score < 1.0,
                lower_bounds(looks.n, score, cpus[looks.host], above=exact_level),
                1.0,
            )
            looks = looks[bound <= exact_level]  # the others cannot lower min_p below it
            parts.append(_Looks(looks.pos + lo, *(getattr(looks, f) for f in _LOOK_FIELDS[1:])))
        looks = _Looks.concat(parts)
        if not looks.pos.size:
            return
        idx = looks.pos
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
        rows = order[positions]
        known = c[rows] >= 0
        a_known = np.where(known, lam[rows], 0.0)
        a_unknown = np.where(known, 0.0, lam[rows])
        look_time = t[order[idx]]
        del rows, known, order  # the laws and p-values below are the step's peak (memory)
        _, p = host_pvalues(
            looks.n,
            looks.m,
            looks.k,
            looks.z - looks.k,
            poisson_binomial_prefixes(a_known, sub_starts, record=record, cap=cap),
            poisson_binomial_prefixes(a_unknown, sub_starts, record=record, cap=cap),
            cpus[looks.host],
            grid_max_n=STREAM_GRID_MAX_N,
        )
        np.minimum.at(self.min_p, looks.host, p)
        alarm = p <= alpha
        if not alarm.any():
            return
        hosts_hit, first = np.unique(looks.host[alarm], return_index=True)
        pos = idx[alarm][first]
        self.first_alarm[hosts_hit] = look_time[alarm][first]
        rank = pos - starts[np.searchsorted(starts, pos, side="right") - 1]
        self.alarm_crashes[hosts_hit] = rank + 1


def _chunk_looks(
    order: I64,
    starts: I64,
    h: I64,
    c: I64,
    resid: B,
    lam: F64,
    width: int,
    before_k: float,
    before_u: float,
) -> tuple[_Looks, float, float]:
    """The looks among the crashes ``order`` (whole hosts, in (host, time) order, beginning at
    ``starts``), with positions in the chunk; and the running sums at its end."""
    n = order.size
    hs = h[order].astype(np.int64, copy=False)
    co = c[order]
    known = co >= 0
    n_run = segment_cumsum(known.astype(np.int64), starts)
    # running count of each crash's own CPU cell, in time order: a stable sort by cell
    # keeps the time order inside each cell
    cell = pair_key(hs, np.where(known, co + 1, 0), width)
    by_cell = radix_argsort(cell)
    cs = cell[by_cell]
    cnew = np.ones(n, dtype=bool)
    cnew[1:] = cs[1:] != cs[:-1]
    del cell, cs
    cell_count = np.empty(n, dtype=np.int64)
    cell_count[by_cell] = segment_rank(n, np.flatnonzero(cnew).astype(np.int64)) + 1
    cell_count[~known] = 0
    m_run = segment_cummax(cell_count, starts)
    # residual anomalies so far and the Poisson-equivalent null means, with a known CPU
    # and without
    ro = resid[order]
    r_known = ro & known
    lam_o = lam[order]
    z_run = segment_cumsum(ro.astype(np.int64), starts)
    # running residual anomalies of each crash's own CPU cell
    cell_starts = np.flatnonzero(cnew).astype(np.int64)
    cz = np.empty(n, dtype=np.int64)
    cz[by_cell] = segment_cumsum(r_known[by_cell].astype(np.int64), cell_starts)
    del by_cell, cnew, cell_starts, r_known
    lam_k, before_k = carried_segment_cumsum(np.where(known, lam_o, 0.0), starts, before_k)
    lam_u, before_u = carried_segment_cumsum(np.where(known, 0.0, lam_o), starts, before_u)

    # The busiest CPU is the cell that last reached the running maximum (the crash's own at a
    # modal crash; its count and anomalies cannot have changed since, or that crash would be
    # modal). When CPUs tie it is one of them, so its statistic is at least the full test's
    # (the most extreme tied CPU): the p-value can only be larger, still valid.
    at_max = known & (cell_count == m_run)
    idx = np.flatnonzero((at_max & (m_run >= 2)) | ro)
    pos = np.arange(n, dtype=np.int64)
    last = np.maximum.accumulate(np.where(at_max, pos, -1))[idx]
    has = last >= starts[np.searchsorted(starts, idx, side="right") - 1]
    k_top = np.where(has, cz[np.maximum(last, 0)], 0)
    looks = _Looks(
        pos=idx,
        host=hs[idx],
        n=n_run[idx],
        m=m_run[idx],
        k=k_top,
        z=z_run[idx],
        lam_k=lam_k[idx],
        lam_u=lam_u[idx],
    )
    return looks, before_k, before_u
