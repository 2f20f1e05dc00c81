"""The per-host hardware test: CPU concentration and residual anomalies, one exact p-value.

Null hypothesis for one host, *given its crashes* (their number, their populations, hence each
crash's null probability ``a_i`` of a residual hardware-flavoured anomaly, see
:mod:`corecensus.epidemiology.hostscan`): every crash's CPU is uniform over the host's ``C``
CPUs and independent of everything else, and crash ``i`` is anomalous independently with
probability ``a_i``. Observed, over the ``n`` crashes with a known CPU: ``m`` the largest
per-CPU count, ``k`` the residual anomalies on that CPU; ``o`` the residual anomalies elsewhere
(other CPUs and crashes with an unknown CPU).

**Statistic** (smaller is more extreme): Fisher's product of three tails,
``T = s(m) g(k) h(o)``: ``s`` the largest-cell bound
(:func:`~corecensus.epidemiology.concentration.max_cell_pvalue`), ``g`` the Poisson tail of
``k`` at its null mean ``m lam / n`` and ``h`` that of ``o`` at ``(n - m) lam / n + lam_u``
(``lam``, ``lam_u`` the expected anomalies with and without a known CPU). A defective core puts
crashes on one CPU and anomalies mostly there; a fault without a favourite CPU (memory) shows
as anomalies anywhere. Every factor is a score only: the p-value comes from the law of ``T``.

**Exact p-value** ``P(T <= T_obs)`` under the null, summed over the joint law of the counts
instead of treating the three discrete tails as uniform (the discrete analogue of Fisher's
method; Mielke, Johnston & Berry 2004, "Combining probability values from independent
permutation tests: a discrete analog of Fisher's classical method", Psychological Reports
95:449-458):

* ``M`` has the exact largest-cell law (Levin 1981,
  :func:`~corecensus.epidemiology.concentration.max_cell_law`);
* the anomaly counts ``Z`` (known CPU) and ``Zu`` (unknown) are independent of ``M`` and of each
  other, each Poisson-binomial over the crashes' ``a_i`` (:func:`poisson_binomial_prefixes`,
  exact convolution);
* given ``M = m`` and ``Z = z``, the busiest CPU's crashes are a uniformly random ``m``-subset
  of the ``n`` (crash labels are exchangeable under uniform CPUs, and the CPUs are independent
  of the anomaly flags), so ``K`` is hypergeometric ``(n, z, m)`` whatever the ``a_i`` are.
  When ``R`` CPUs tie, the most extreme is taken; a union bound multiplies the conditional
  probability by ``E[R | M = m] <= min(n / m, C b(m) / P(M = m))``, ``b`` the Binomial(n, 1/C)
  pmf (exactly 1 above ``n / 2``).

So the p-value is valid (``P(p <= alpha) <= alpha``) and, apart from ties and the discreteness
of the data, exact. It replaces Fisher's ``x (1 - ln x)`` with a weighted Bonferroni over two
combinations, which treated the discrete p-values as uniform: a host without anomalies has an
anomaly p-value of exactly 1 with probability about 0.9, and Fisher's formula then inflated the
CPU p-value about 15-fold at ``1e-6`` (Fisher's combination of discrete p-values is
conservative; Lancaster 1949, "The combination of probabilities arising from data in discrete
distributions", Biometrika 36:370-382), the Bonferroni weights another 1.1- to 10-fold. On the
simulated null fleets the old p-values put 0.05 false alarms per 10,000 hosts under ``1e-4``
instead of about 1; these put 0.25-0.65 there (most hosts have too few crashes to reach it).

Hosts with more than :data:`~corecensus.epidemiology.concentration.EXACT_MAX_N` crashes with a
known CPU use the union bound as the law of ``M`` (stochastically larger) with the conditional
probability replaced by its running maximum over ``m`` (non-decreasing), which keeps the
p-value valid. Anomaly counts above a cap are folded into it; the conditional probability of
an alarm is non-decreasing in each count, so folding can only raise p.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special

from corecensus.epidemiology.concentration import EXACT_MAX_N, max_cell_law, max_cell_pvalue
from corecensus.epidemiology.poisson import poisson_upper
from corecensus.epidemiology.tails import binomial_upper, per_distinct_counts, unit_probability

__all__ = [
    "GRID_MAX_N",
    "HostStatistic",
    "count_reach",
    "host_pvalues",
    "lower_bounds",
    "pair_cell_pvalue",
    "pair_pvalues",
    "poisson_binomial_prefixes",
    "statistic",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B = NDArray[np.bool_]

# Anomaly counts beyond the Poisson quantile of this tail are folded into a conservative 1.
_Z_TAIL = 1e-15
# Values of the busiest CPU's count with less probability than this are not enumerated.
_M_MASS = 1e-18
# Relative slack so that the observed outcome always counts as "as extreme" (rounding).
_TIE = 1e-9


@dataclass(frozen=True, slots=True, eq=False)
class HostStatistic:
    """The components of the statistic, per evaluation (see the module docstring)."""

    p_cpu: F64  # s(m), the largest-cell bound
    p_cell: F64  # g(k, m): anomalies on the busiest CPU
    p_off: F64  # h(o, m): anomalies elsewhere on the host
    cell_expected: F64  # m lam / n
    off_expected: F64  # (n - m) lam / n + lam_u
    score: F64  # T = s g h


def statistic(
    n: Any, m: Any, k: Any, o: Any, lam: Any, lam_u: Any, cpus: Any, *, cells: int = 1
) -> HostStatistic:
    """``T`` and its parts for observed ``(n, m, k, o)`` (arrays, one entry per evaluation).
    With ``cells=2``, ``m`` is the two busiest cells' sum, ``k`` the anomalies on them and
    ``s`` :func:`pair_cell_pvalue` (the pair test)."""
    nn = np.asarray(n, dtype=np.float64)
    mm = np.asarray(m, dtype=np.float64)
    la = np.asarray(lam, dtype=np.float64)
    s = (max_cell_pvalue if cells == 1 else pair_cell_pvalue)(nn, mm, cpus)
    share = np.where(nn > 0, mm / np.maximum(nn, 1.0), 0.0)
    ec = share * la
    eo = (1.0 - share) * la + np.asarray(lam_u, dtype=np.float64)
    g = poisson_upper(k, ec)
    h = poisson_upper(o, eo)
    return HostStatistic(
        p_cpu=s, p_cell=g, p_off=h, cell_expected=ec, off_expected=eo, score=s * g * h
    )


def host_pvalues(
    n: Any,
    m: Any,
    k: Any,
    o: Any,
    law_z: F64,
    law_u: F64,
    cpus: Any,
    *,
    exact_below: float = 1.0,
    cells: int = 1,
    grid_max_n: int | None = None,
) -> tuple[HostStatistic, F64]:
    """Exact conditional p-values ``P(T <= T_obs)``, one per entry (see the module docstring).

    ``n`` crashes with a known CPU, ``m`` of them on the busiest CPU with ``k`` residual
    anomalies there, ``o`` residual anomalies elsewhere (other CPUs, unknown CPU); ``law_z``
    (entries x counts) the null law of the residual anomalies among the ``n``, ``law_u`` among
    the crashes with an unknown CPU (:func:`poisson_binomial_prefixes`; mass beyond the last
    column folded into it); ``cpus`` the host's CPU count. Entries are grouped by ``n``; a
    group costs O(size x n x z_max^2 x o_max) array operations, in chunks.

    Entries whose :func:`lower_bounds` already exceeds ``exact_below`` get 1 instead of the
    exact value (a valid, conservative p-value): nothing downstream tells p-values above a few
    percent apart, and the exact law is by far the costliest step of ``analyze``.

    With ``cells=2`` it is the pair test (two bad CPUs on one host): ``m`` the two busiest
    cells' sum and ``k`` the residual anomalies on those two cells, the pair chosen from the
    counts alone (lowest cell index among ties), so that given the counts its crashes are a
    uniformly random ``m``-subset and ``K`` is hypergeometric as for one cell. The law of the
    sum is replaced by the union law of :func:`pair_cell_pvalue` (stochastically larger) and
    the conditional probability by its running maximum from 0, which keeps the p-value valid.

    ``grid_max_n`` (default :data:`GRID_MAX_N`, at most it): the most crashes for which the
    grid runs; the two-factor test above (the stream's many looks keep it at 60).
    """
    arrays = [np.atleast_1d(np.asarray(v)) for v in (n, m, k, o, cpus)]
    nn, mm, kk, oo, cc = np.broadcast_arrays(*arrays)
    nn = nn.astype(np.int64)
    cc = np.maximum(cc.astype(np.int64), 1)
    lz = np.atleast_2d(np.asarray(law_z, dtype=np.float64))
    lu = np.atleast_2d(np.asarray(law_u, dtype=np.float64))
    lz = np.broadcast_to(lz, (nn.size, lz.shape[-1]))
    lu = np.broadcast_to(lu, (nn.size, lu.shape[-1]))
    lam = lz @ np.arange(lz.shape[1], dtype=np.float64)
    lam_u = lu @ np.arange(lu.shape[1], dtype=np.float64)
    stat = statistic(nn, mm, kk, oo, lam, lam_u, cc, cells=cells)
    p = np.ones(nn.shape, dtype=np.float64)
    # T = 1 is the largest value T takes: P(T <= 1) = 1
    live = stat.score < 1.0
    if exact_below < 1.0 and live.any():
        where = np.flatnonzero(live)
        bound = lower_bounds(
            nn[where], stat.score[where], cc[where], cells=cells, above=exact_below
        )
        live[where[bound > exact_below]] = False  # p stays 1
    # Group by n, then by how far each row's anomaly laws reach: the grid's cost grows with
    # the cube of that reach, and one busy host must not make every host of its n pay for it.
    z_reach = _round_up(np.minimum(nn, _row_support(lz)))
    u_reach = _round_up(_row_support(lu))
    # (the two-factor test's cost grows only linearly with the reach: one group per n there)
    grid = nn <= min(GRID_MAX_N, GRID_MAX_N if grid_max_n is None else grid_max_n)
    coarse = np.flatnonzero(live & ~grid)
    if coarse.size:
        # all hosts above GRID_MAX_N at once, whatever their n (one group per n cost more
        # than the test itself at ten million crashes)
        pz = _fold(lz[coarse], min(int(z_reach[coarse].max()), lz.shape[1] - 1))
        pu = _fold(lu[coarse], min(int(u_reach[coarse].max()), lu.shape[1] - 1))
        p[coarse] = _coarse_batch(
            nn[coarse], mm[coarse], kk[coarse] + oo[coarse], pz, pu, cc[coarse], cells=cells
        )
    zk, uk = np.where(grid, z_reach, 0), np.where(grid, u_reach, 0)
    key = (nn * (int(zk.max(initial=0)) + 1) + zk) * (int(uk.max(initial=0)) + 1) + uk
    for group in np.unique(key[live & grid]).tolist():
        sel = np.flatnonzero(live & grid & (key == group))
        size, zr, ur = int(nn[sel[0]]), int(z_reach[sel].max()), int(u_reach[sel].max())
        pz = _fold(lz[sel], min(size, zr, lz.shape[1] - 1))
        pu = _fold(lu[sel], min(ur, lu.shape[1] - 1))
        z_max = pz.shape[1] - 1
        o_max = z_max + pu.shape[1] - 1
        step = max(1, _CHUNK // ((size + 1) * (z_max + 1) ** 2 * (o_max + 2)))
        for lo in range(0, sel.size, step):
            part = sel[lo : lo + step]
            sl = slice(lo, lo + step)
            p[part] = _group_pvalues(
                size,
                stat.score[part] * (1.0 + _TIE),
                pz[sl],
                pu[sl],
                cc[part],
                o_max,
                cells,
            )
    return stat, np.clip(p, 0.0, 1.0)


def lower_bounds(
    n: Any, score: Any, cpus: Any, *, cells: int = 1, above: float | F64 | None = None
) -> F64:
    """A lower bound of what :func:`host_pvalues` returns for statistic values ``score``.

    The anomaly factors are at most 1, so ``T <= s(M)`` and ``P(T <= t) >= P(s(M) <= t)``,
    summed over the same law of ``M`` the exact computation uses (exact up to
    ``EXACT_MAX_N`` crashes, the union bound's above): for every ``m`` with ``s(m) <= t`` both
    the grid and the two-factor computation count the whole conditional mass (probability 1,
    the tie factor and the running maximum can only raise it). Costs one table per distinct
    ``(n, cpus)`` pair, so the stream can set aside the many looks that cannot matter before it
    builds their anomaly laws. With ``cells=2`` (the pair test, always on the union law, whose
    running maximum is 1 wherever ``s2(x) <= t``) the bound is the union law's mass there.

    ``above`` (a level, or one per entry) is for callers that only ask whether the bound
    exceeds it: an entry whose cheaper bound (:func:`_spread_bounds`, no largest-cell law)
    surely exceeds it gets that bound instead, so the same entries exceed it, and a host size
    none of whose entries needs the exact law does not compute it (a quarter of them at a
    million crashes, each a few hundred small convolutions).
    """
    nn, cc, t = np.broadcast_arrays(
        np.atleast_1d(np.asarray(n, dtype=np.int64)),
        np.maximum(np.atleast_1d(np.asarray(cpus, dtype=np.int64)), 1),
        np.atleast_1d(np.asarray(score, dtype=np.float64)) * (1.0 + _TIE),
    )
    out = np.zeros(nn.shape, dtype=np.float64)
    if cells == 2:
        out[:] = _union_lower_bounds(nn, t, cc, pair_cell_pvalue)
        return out
    small = np.flatnonzero(nn <= EXACT_MAX_N)
    if small.size:
        width = int(cc.max()) + 1
        key = nn[small] * width + cc[small]
        order = small[np.argsort(key, kind="stable")]
        cuts = np.flatnonzero(np.diff(nn[order] * width + cc[order])) + 1
        level = None if above is None else np.broadcast_to(np.asarray(above), nn.shape)
        for rows in np.split(order, cuts):
            size, c = int(nn[rows[0]]), int(cc[rows[0]])
            # s(m) is non-increasing in m, so the m with s(m) <= t are the last `count` ones
            count = np.searchsorted(_s_rev(size, c), t[rows], side="right")
            need = count > 0  # no m at all: the mass of none, 0 (tail_rev[0])
            if level is not None:
                spread = _spread_bounds(size, c)[count]
                sure = spread > level[rows] + _SURE
                out[rows[sure]] = spread[sure]
                need &= ~sure
            if need.any():
                out[rows[need]] = _tail_rev(size, c)[count[need]]
    big = np.flatnonzero(nn > EXACT_MAX_N)
    if big.size:
        out[big] = _union_lower_bounds(nn[big], t[big], cc[big])
    return out


def _union_lower_bounds(n: I64, t: F64, cpus: I64, score: Any = max_cell_pvalue) -> F64:
    """:func:`lower_bounds` above ``EXACT_MAX_N``, where the law of ``M`` is the union bound's:
    its survival function is ``s`` itself, so the bound is ``s(m*)`` for the smallest ``m*``
    with ``s(m*) <= t`` (0 if there is none), found by bisection for all entries at once
    instead of a table per host size."""
    lo = np.full(n.shape, 2, dtype=np.int64)  # s(0) = s(1) = 1: no evidence
    hi = n + 1  # n + 1: no m qualifies
    active = np.flatnonzero(lo < hi)
    while active.size:  # (the tail evaluated for the entries still searching only)
        a_lo, a_hi = lo[active], hi[active]
        mid = (a_lo + a_hi) // 2
        ok = score(n[active], mid, cpus[active]) <= t[active]
        hi[active] = np.where(ok, mid, a_hi)
        lo[active] = np.where(ok, a_lo, mid + 1)
        active = active[lo[active] < hi[active]]
    found = lo <= n
    value = score(n, np.minimum(lo, n), cpus) * (1.0 - _TIE)
    out: F64 = np.where(found, value, 0.0)
    return out


def pair_cell_pvalue(n: Any, x: Any, cells: Any) -> F64:
    """``P(S2 >= x)`` bound for ``S2`` the two largest cells' sum, ``n`` items uniform over
    ``cells`` cells: the union bound over the ``C (C - 1) / 2`` pairs, each pair's count
    Binomial(n, 2/C). 1 where there is no evidence (``x < 3``, fewer than 4 cells). Each
    distinct triple of counts is evaluated once (:func:`~.tails.per_distinct_counts`)."""
    return per_distinct_counts(_pair_cell_pvalue, n, x, cells)


def _pair_cell_pvalue(n: Any, x: Any, cells: Any) -> F64:
    nn = np.asarray(n, dtype=np.float64)
    xx = np.asarray(x, dtype=np.float64)
    cc = np.maximum(np.asarray(cells, dtype=np.float64), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tail = binomial_upper(xx, nn, np.minimum(1.0, 2.0 / cc))
        p = np.where((xx < 3) | (cc < 4), 1.0, cc * (cc - 1.0) / 2.0 * tail)
    return unit_probability(p)


def pair_pvalues(
    n: Any,
    x: Any,
    k: Any,
    o: Any,
    law_z: F64,
    law_u: F64,
    cpus: Any,
    *,
    exact_below: float = 1.0,
) -> F64:
    """The two busiest cells' test (two bad CPUs on one host, issue 9): ``T = s2(x) g(k)
    h(o)``, ``s2`` :func:`pair_cell_pvalue` of the two busiest cells' sum ``x`` among ``n``
    crashes with a known cell, ``k`` the residual anomalies on those two cells and ``o`` the
    others, as the one-cell test (:func:`host_pvalues` with ``cells=2``: the union law of the
    sum, stochastically larger, with a running maximum, so the p-value is valid). 1 where
    there is no evidence (fewer than 4 cells or 3 crashes on the pair)."""
    arrays = [np.atleast_1d(np.asarray(v)) for v in (n, x, k, o, cpus)]
    nn, xx, kk, oo, cc = np.broadcast_arrays(*arrays)
    out = np.ones(nn.shape, dtype=np.float64)
    live = (cc >= 4) & (xx >= 3)
    if not live.any():
        return out
    sel = np.flatnonzero(live)
    lz = np.atleast_2d(np.asarray(law_z, dtype=np.float64))
    lu = np.atleast_2d(np.asarray(law_u, dtype=np.float64))
    lz = np.broadcast_to(lz, (nn.size, lz.shape[-1]))[sel]
    lu = np.broadcast_to(lu, (nn.size, lu.shape[-1]))[sel]
    _, out[sel] = host_pvalues(
        nn[sel], xx[sel], kk[sel], oo[sel], lz, lu, cc[sel], exact_below=exact_below, cells=2
    )
    return out


@lru_cache(maxsize=8192)
def _pair_grid(n: int, cpus: int) -> F64:
    """:func:`pair_cell_pvalue` for ``x = 0..n``, over a window around the mean pair count
    (below it 1, above it 0: a binomial tail 12 standard deviations plus 40 above the mean)."""
    mean = 2.0 * n / max(cpus, 1)
    lo = max(3, int(mean))
    hi = min(n, int(np.ceil(mean + 12.0 * np.sqrt(mean) + 40.0)))
    out = np.zeros(n + 1, dtype=np.float64)
    out[: min(lo, n + 1)] = 1.0
    if hi >= lo:
        out[lo : hi + 1] = pair_cell_pvalue(float(n), np.arange(lo, hi + 1, dtype=np.float64), cpus)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=8192)
def _s_rev(n: int, cpus: int) -> F64:
    """``s(m)`` for ``m = n .. 0``, non-decreasing (``n <= EXACT_MAX_N``)."""
    s_rev = np.maximum.accumulate(_s_grid(n, cpus)[::-1])  # guards the monotonicity
    s_rev.flags.writeable = False
    return s_rev


@lru_cache(maxsize=8192)
def _tail_rev(n: int, cpus: int) -> F64:
    """``P(M >= n + 1 - j)`` for ``j = 0..n+1`` under the exact law (``n <= EXACT_MAX_N``):
    ``tail_rev[j]`` is the mass of the ``j`` largest m."""
    tail_rev = np.concatenate([[0.0], np.cumsum(_m_law(n, cpus)[0][::-1])])
    tail_rev.flags.writeable = False
    return tail_rev


# How far a cheaper bound must clear a level to decide for the exact one: far beyond the
# exact law's error (~1e-15 per value) and the tails' (~1e-15 relative).
_SURE = 1e-9


@lru_cache(maxsize=8192)
def _spread_bounds(n: int, cpus: int) -> F64:
    """A lower bound of ``_tail_rev(n, cpus)``, entry by entry, without the largest-cell law:
    ``P(M >= m) >= 1 - (1 - P(X >= m))^C``, ``X ~ Binomial(n, 1/C)`` one CPU's count. The
    multinomial counts are negatively associated (Joag-Dev & Proschan 1983, "Negative
    association of random variables with applications", Annals of Statistics 11:286-295), so
    ``P(every count < m) <= P(X < m)^C``."""
    m = np.arange(n, -1, -1, dtype=np.float64)  # m = n .. 0, as tail_rev[1:]
    one = binomial_upper(m, float(n), 1.0 / cpus)
    with np.errstate(divide="ignore"):
        spread = -np.expm1(cpus * np.log1p(-one))
    out = np.concatenate([[0.0], np.clip(spread, 0.0, 1.0)])
    out.flags.writeable = False
    return out


def _union_law(s: F64) -> F64:
    """The law whose survival function is the union bound ``s`` (stochastically larger than the
    largest cell's): what the computation uses above ``EXACT_MAX_N`` crashes."""
    surv = np.minimum(1.0, s)
    surv[:2] = 1.0
    law: F64 = surv - np.append(surv[1:], 0.0)
    return law


# Elements per intermediate array in _group_pvalues (memory ~ 8 bytes each).
_CHUNK = 2_000_000
# Above this many crashes with a known CPU the (m, z, k, o) grid costs too much per evaluation
# (a host with 1,000 crashes has ~30 plausible anomalies); such hosts use the two-factor test.
# It is at most EXACT_MAX_N, so the grid always has the exact largest-cell law. It was 60
# until the production simulator's busy hosts (issue 9): with 60-160 crashes the two-factor
# test counts a bad CPU's 4 anomalies only as 4 of the host's 6 (p 3e-3 instead of 2e-5).
GRID_MAX_N = EXACT_MAX_N


def _coarse_batch(
    n: I64, m: Any, z_obs: Any, pz: F64, pu: F64, cpus: I64, *, cells: int = 1
) -> F64:
    """The two-factor test for hosts with many crashes: ``T' = s(m) H(z)``, ``H`` the exact
    upper tail of the host's total anomaly count ``z`` (known and unknown CPU), its exact null
    law ``sum_m P(M = m) P(H(Z) <= T'_obs / s(m))`` (``M`` and ``Z`` independent). The choice
    of statistic depends on ``n`` only, which the test conditions on, so it stays valid.

    With ``cells=2``, ``m`` is the two busiest cells' sum and ``s`` its union bound
    (:func:`pair_cell_pvalue`), whose law is always the union law (running maximum).

    All entries at once, whatever their ``n``: each entry's law of ``M`` and ``s(m)`` over the
    window where that law lives (:func:`_m_window`), padded to a common width, in chunks."""
    size = n.size
    if size > _COARSE_ROWS:  # bound the (entries x window) tables' memory
        parts = [
            _coarse_batch(
                n[i : i + _COARSE_ROWS],
                np.asarray(m)[i : i + _COARSE_ROWS],
                np.asarray(z_obs)[i : i + _COARSE_ROWS],
                pz[i : i + _COARSE_ROWS],
                pu[i : i + _COARSE_ROWS],
                cpus[i : i + _COARSE_ROWS],
                cells=cells,
            )
            for i in range(0, size, _COARSE_ROWS)
        ]
        joined: F64 = np.concatenate(parts)
        return joined
    total = np.zeros((size, pz.shape[1] + pu.shape[1] - 1), dtype=np.float64)
    for i in range(pz.shape[1]):
        total[:, i : i + pu.shape[1]] += pz[:, i : i + 1] * pu
    tail = np.flip(np.cumsum(np.flip(total, axis=1), axis=1), axis=1)  # P(Z >= j)
    zz = np.minimum(np.asarray(z_obs, dtype=np.int64), tail.shape[1] - 1)
    h_obs = tail[np.arange(size), zz]
    score = max_cell_pvalue if cells == 1 else pair_cell_pvalue
    t_obs = score(n.astype(np.float64), m, cpus) * h_obs * (1.0 + _TIE)
    base = int(cpus.max()) + 1
    pairs, inverse = np.unique(n * base + cpus, return_inverse=True)
    windows = [_m_window(k // base, k % base, cells) for k in pairs.tolist()]
    width = max(w[1].size for w in windows)
    law_p = np.zeros((len(windows), width), dtype=np.float64)
    s_p = np.ones((len(windows), width), dtype=np.float64)
    lost_p = np.zeros(len(windows), dtype=np.float64)
    for i, (_, law_w, s_w, lost) in enumerate(windows):
        law_p[i, : law_w.size] = law_w
        s_p[i, : s_w.size] = s_w
        lost_p[i] = lost
    inverse = np.asarray(inverse).reshape(-1)
    law, s, dropped = law_p[inverse], s_p[inverse], lost_p[inverse]
    union = (n > EXACT_MAX_N) | (cells == 2)
    out = np.empty(size, dtype=np.float64)
    cols = tail.shape[1]
    for lo in range(0, size, _BATCH_ROWS):
        c = slice(lo, lo + _BATCH_ROWS)
        tl, sc, tc = tail[c], s[c], t_obs[c]
        rows = tl.shape[0]
        # P(H(Z) <= t / s(m)): H is a decreasing step function of z, so the event is z >= z*,
        # z* the first j with s(m) P(Z >= j) <= t. One sorted search for all rows: each row's
        # 1 - tail (non-decreasing) shifted into its own interval [2 r, 2 r + 1].
        shift = 2.0 * np.arange(rows, dtype=np.float64)
        flat = (shift[:, None] + (1.0 - tl)).ravel()
        with np.errstate(divide="ignore", invalid="ignore"):
            bound = np.where(sc > 0, tc[:, None] / sc, np.inf)
        query = shift[:, None] + np.clip(1.0 - bound, 0.0, 1.0)
        first = np.searchsorted(flat, query.ravel(), side="left").reshape(rows, -1)
        first = np.clip(first - (np.arange(rows) * cols)[:, None], 0, cols)
        # the shifted values carry ~1e-12 of rounding: settle near-ties with the exact test
        first = np.where((first < cols) & ~_passes(first, tl, sc, tc), first + 1, first)
        first = np.where(_passes(first - 1, tl, sc, tc), first - 1, first)
        r_idx = np.arange(rows)[:, None]
        given = np.where(first < cols, tl[r_idx, np.minimum(first, cols - 1)], 0.0)
        given = np.where(union[c, None], np.maximum.accumulate(given, axis=1), given)
        out[c] = np.einsum("gm,gm->g", given, law[c]) + dropped[c]
    return out


def _passes(j: I64, tail: F64, s: F64, t: F64) -> B:
    """Whether ``s(m) P(Z >= j) <= t`` for each row and ``m`` (``False`` outside ``tail``)."""
    cols = tail.shape[1]
    inside = (j >= 0) & (j < cols)
    value = tail[np.arange(tail.shape[0])[:, None], np.clip(j, 0, cols - 1)]
    res: B = inside & (s * value <= t[:, None])
    return res


# Entries per call of _coarse_batch's tables (~8 x window bytes each, window <= a few hundred).
_COARSE_ROWS = 65_536
# Rows per sorted search in _coarse_batch (keeps the shifted keys' rounding near 1e-12).
_BATCH_ROWS = 1024


@lru_cache(maxsize=16384)
def _m_window(n: int, cpus: int, cells: int = 1) -> tuple[int, F64, F64, float]:
    """Where the law of ``M`` lives for ``n`` crashes on ``cpus`` CPUs: its first ``m``, the law
    and ``s(m)`` from there, and the mass left out (counted as an alarm, an upper bound). Above
    the window's top the law is below ``_M_MASS`` per value; below it nothing is cut for the
    union law (its running maximum starts at the first possible value, as in the two-factor
    test), only values under ``_M_MASS`` for the exact one."""
    exact = n <= EXACT_MAX_N and cells == 1
    grid = _s_grid(n, cpus) if cells == 1 else _pair_grid(n, cpus)
    # (the union law straight from the windowed s: _m_law's tie factors are the grid's only)
    law = _m_law(n, cpus)[0] if exact else _union_law(grid)
    keep = np.flatnonzero(law >= _M_MASS)
    if not keep.size:
        keep = np.flatnonzero(law > 0)
    lo = int(keep[0]) if exact else int(np.flatnonzero(law > 0)[0])
    hi = int(keep[-1]) + 1
    law_w = law[lo:hi]
    s_w = grid[lo:hi]
    lost = max(0.0, 1.0 - float(law_w.sum()))
    return lo, law_w, s_w, lost


def _row_support(law: F64) -> I64:
    """Per row, a count beyond which the law's upper tail is below ``_Z_TAIL``."""
    if not law.size:
        return np.zeros(law.shape[0], dtype=np.int64)
    # the last count with mass above _Z_TAIL / width: the tail beyond it is below _Z_TAIL
    # (a cumulative sum per row cost seconds at ten million crashes)
    above = law > _Z_TAIL / law.shape[1]
    last = law.shape[1] - 1 - np.argmax(above[:, ::-1], axis=1)
    out: I64 = np.where(above.any(axis=1), last, 0).astype(np.int64)
    return out


def _round_up(reach: I64) -> I64:
    """Reaches rounded up to a multiple of 4, so rows with similar laws share a group."""
    out: I64 = ((reach + 3) // 4) * 4
    return out


def _fold(law: F64, cap: int) -> F64:
    """The law on ``0..cap`` with the mass beyond ``cap`` added at ``cap``: the conditional
    probability of an alarm is non-decreasing in the count, so this can only raise p."""
    out = law[:, : cap + 1].copy()
    out[:, -1] += law[:, cap + 1 :].sum(axis=1)
    res: F64 = out
    return res


def poisson_binomial_prefixes(
    a: F64, starts: I64, *, record: B | None = None, cap: int = 64
) -> F64:
    """Law of the number of successes among independent Bernoulli(``a_i``), per segment.

    ``a`` is in segment order (e.g. a host's crashes in time order), ``starts`` the first index
    of each segment. Returns the law (rows x ``cap + 1``, mass beyond ``cap`` folded into it)
    after each segment's last element, or, with ``record``, after every recorded element (in
    order). The exact convolution, one element of every segment per step (Poisson-binomial;
    Hong 2013, "On computing the distribution function for the Poisson binomial distribution",
    Computational Statistics & Data Analysis 59:41-51, for the recursion).
    """
    size = a.size
    ends = np.append(starts[1:], size).astype(np.int64)
    lengths = ends - starts
    slot = np.full(size, -1, dtype=np.int64)
    if record is None:
        out = np.zeros((starts.size, cap + 1), dtype=np.float64)
        nonempty = lengths > 0
        slot[ends[nonempty] - 1] = np.flatnonzero(nonempty)
    else:
        rec_pos = np.flatnonzero(record)
        out = np.zeros((rec_pos.size, cap + 1), dtype=np.float64)
        slot[rec_pos] = np.arange(rec_pos.size)
    out[:, 0] = 1.0  # empty segments (and rows never reached) keep the law of 0 successes
    if not a.any():  # nothing can succeed (e.g. no crash with an unknown CPU)
        return out
    # Each segment is convolved only as wide as its own mean needs (count_reach), in buckets
    # of similar width; the rest of its row stays 0.
    total = np.concatenate([[0.0], np.cumsum(a)])
    mean = total[ends] - total[starts]
    width = np.minimum(cap, ((count_reach(mean) + 7) // 8) * 8)
    # An element with a_i = 0 leaves the law as it is, to the bit (its gain is +0: x - 0 and
    # x + 0 are x, and the columns a skipped step would have widened hold 0): only the others
    # and the recorded ones are stepped through (the unknown-CPU law's elements are mostly
    # crashes with a known CPU, a_i = 0).
    keep = (a != 0.0) | (slot >= 0)
    if not keep.all():
        kept = np.flatnonzero(keep)
        a, slot = a[kept], slot[kept]
        starts = np.searchsorted(kept, starts).astype(np.int64)
        lengths = np.searchsorted(kept, ends).astype(np.int64) - starts
    for w in np.unique(width).tolist():
        sel = np.flatnonzero(width == w)
        _convolve_segments(a, starts[sel], lengths[sel], slot, out, int(w))
    return out


def count_reach(mean: Any) -> I64:
    """How far an anomaly count's law must reach for a host expecting ``mean`` anomalies: the
    mean plus 8 standard deviations plus 10 (the mass beyond is below 1e-15)."""
    m = np.asarray(mean, dtype=np.float64)
    out: I64 = np.ceil(m + 8.0 * np.sqrt(m) + 10.0).astype(np.int64)
    return out


def _convolve_segments(a: F64, starts: I64, lengths: I64, slot: I64, out: F64, cap: int) -> None:
    """The recursion of :func:`poisson_binomial_prefixes` for some segments, ``cap + 1`` wide.

    Step ``j`` takes element ``j`` of every segment longer than ``j``. The steps are run in
    stretches where that set of segments stays the same, each stretch's probabilities and
    output rows gathered once, so that a step is three or four in-place ufunc calls on views
    made for the stretch (at ten million crashes one host's 35,000 crashes made as many steps
    for a handful of rows, each paying a dozen NumPy calls). Every element sees the same
    operations in the same order as one step at a time: the same bits."""
    # Segments longest first, so the ones still running at step j are a prefix of the state
    # (a view, updated in place) rather than a gathered copy.
    by_len = np.argsort(-lengths, kind="stable")
    first = starts[by_len]
    sorted_len = np.sort(lengths)
    n_steps = int(lengths.max(initial=0))
    # running[j]: how many segments are longer than j
    running = lengths.size - np.searchsorted(sorted_len, np.arange(n_steps), side="right")
    state = np.zeros((starts.size, cap + 1), dtype=np.float64)
    state[:, 0] = 1.0
    carry = np.empty_like(state)
    # stretches of steps with the same running count, cut where the width stops growing
    cuts = np.flatnonzero(np.diff(running)) + 1
    bounds = sorted({0, n_steps, *cuts.tolist(), *([cap] if 0 < cap < n_steps else [])})
    for j0, j1 in itertools.pairwise(bounds):
        count = int(running[j0])
        pos = first[:count, None] + np.arange(j0, j1)[None, :]  # (count, steps)
        q_all = np.ascontiguousarray(a[pos].T)[:, :, None]  # (steps, count, 1)
        slots = slot[pos]
        record = np.flatnonzero((slots >= 0).any(axis=0)).tolist()
        rec_at = iter(record)
        next_rec = next(rec_at, -1)
        grow = j0 < cap  # the first steps widen by one column each
        if not grow:
            w = cap + 1
            cur = state[:count, :w]
            gain = carry[:count, :w]
            cur_hi, gain_lo = cur[:, 1:], gain[:, :-1]
            cur_top, gain_top = cur[:, -1], gain[:, -1]
        for t in range(j1 - j0):
            if grow:
                # after j elements a law lives on 0..j: step j needs only j + 2 columns
                w = min(cap, j0 + t + 1) + 1
                cur = state[:count, :w]
                gain = carry[:count, :w]
                cur_hi, gain_lo = cur[:, 1:], gain[:, :-1]
            np.multiply(cur, q_all[t], out=gain)
            np.subtract(cur, gain, out=cur)
            np.add(cur_hi, gain_lo, out=cur_hi)
            if not grow:
                np.add(cur_top, gain_top, out=cur_top)  # folded mass stays folded
            elif w == cap + 1:
                cur[:, -1] += gain[:, -1]
            if t == next_rec:
                done = slots[:, t] >= 0
                out[slots[done, t], :w] = cur[done]
                next_rec = next(rec_at, -1)


def _group_pvalues(
    n: int, t_obs: F64, pz: F64, pu: F64, cpus: I64, o_max: int, cells: int = 1
) -> F64:
    """p-values for entries sharing ``n``: vectors over entries (g), grids over the busiest
    CPU's count (m), the known-CPU anomalies (z), those on the busiest CPU (k) and the
    anomalies elsewhere (o). With ``cells=2`` ``m`` is the two busiest cells' sum, on the
    union law with the conditional probability's running maximum (see :func:`host_pvalues`)."""
    g_size = t_obs.size
    z_max = pz.shape[1] - 1
    lam = pz @ np.arange(z_max + 1, dtype=np.float64)
    lam_u = pu @ np.arange(pu.shape[1], dtype=np.float64)
    m_grid = np.arange(n + 1, dtype=np.float64)
    law = np.empty((g_size, n + 1), dtype=np.float64)
    ties = np.empty((g_size, n + 1), dtype=np.float64)
    for c in np.unique(cpus).tolist():
        rows = cpus == c
        if cells == 1:
            law_c, ties_c = _m_law(n, int(c))
        else:  # the pair: chosen from the counts alone, no tie factor
            law_c, ties_c = _union_law(_pair_grid(n, int(c))), np.ones(n + 1)
        law[rows] = law_c
        ties[rows] = ties_c
    # Only the few m the largest-cell law can take matter (a host with 50 crashes on 32 CPUs
    # has its busiest CPU at 2-7): the others' mass (< _M_MASS each) counts as an alarm, an
    # upper bound. On the union law the running maximum starts at m = 0.
    cols = np.flatnonzero((law >= _M_MASS).any(axis=0))
    lo, hi = (int(cols[0]), int(cols[-1]) + 1) if cols.size else (0, n + 1)
    if cells != 1:
        lo = 0
    dropped = law[:, :lo].sum(axis=1) + law[:, hi:].sum(axis=1)
    m_grid, law, ties = m_grid[lo:hi], law[:, lo:hi], ties[:, lo:hi]
    s = _s_rows(n, cpus, lo, hi, cells)  # (g, m)
    share = m_grid / max(n, 1)
    ec = share[None, :] * lam[:, None]  # (g, m)
    eo = (1.0 - share)[None, :] * lam[:, None] + lam_u[:, None]
    ostar = _fewest_passing(s, ec, eo, t_obs, z_max, o_max)  # (g, m, k)
    # P(Zu >= j) for j = ostar - (z - k), over j in -z_max..o_max + 1
    su_tail = np.flip(np.cumsum(np.flip(pu, axis=1), axis=1), axis=1)  # P(Zu >= j), j >= 0
    su = np.zeros((g_size, z_max + o_max + 3), dtype=np.float64)
    su[:, : z_max + 1] = 1.0
    width = min(su_tail.shape[1], su.shape[1] - z_max)
    su[:, z_max : z_max + width] = su_tail[:, :width]
    z_idx = np.arange(z_max + 1)
    need = ostar[:, :, None, :] - (z_idx[None, None, :, None] - z_idx[None, None, None, :])
    need = np.clip(need, -z_max, o_max + 1) + z_max  # index into su; (g, m, z, k)
    g_idx = np.arange(g_size)[:, None, None, None]
    hit = su[g_idx, need]  # P(T <= T_obs | M = m, Z = z, K = k)
    # [z, m, k]; cached whole for small n, computed for the window above (one table per n and
    # reach up to 160 crashes held 100 MiB more at 1e6 crashes)
    pmf = (
        _hypergeom_pmf(n, z_max)[:, lo:hi, :]
        if n <= _PMF_CACHE_N
        else _hypergeom_rows(n, z_max, lo, hi)
    )
    given_mz = np.einsum("gmzk,zmk->gmz", hit, pmf)
    # the busiest CPU is the most extreme of R tied ones: union bound with E[R | M = m]
    given_mz = np.minimum(1.0, ties[:, :, None] * given_mz)
    given_m = np.einsum("gmz,gz->gm", given_mz, pz)
    if cells != 1:  # the union law: a non-decreasing conditional probability keeps p valid
        given_m = np.maximum.accumulate(given_m, axis=1)
    out: F64 = np.einsum("gm,gm->g", given_m, law) + dropped
    return out


def _fewest_passing(s: F64, ec: F64, eo: F64, t_obs: F64, z_max: int, o_max: int) -> I64:
    """``ostar[g, m, k]``: the fewest anomalies elsewhere ``o`` with ``s g(k) h(o) <= T_obs``
    (``o_max + 1``: never within the grid, a conservative stand-in for "beyond it"), ``g`` and
    ``h`` the Poisson tails at the means ``ec`` and ``eo`` (each ``(g, m)``).

    Where ``s(m) <= T_obs`` already it is 0 whatever ``g`` and ``h`` are: both are at most 1,
    so ``s g h <= s``, each rounded product too. The tails are evaluated for the other
    ``(g, m)`` cells only (60 % of the cells are of the first kind at a million crashes, and
    these tails were a tenth of the exact tests' time); the same counts as on the whole grid
    (tests/epidemiology/test_epi_kernels.py)."""
    ostar = np.zeros((*s.shape, z_max + 1), dtype=np.intp)
    rows, cols = np.nonzero(s > t_obs[:, None])
    if rows.size:
        k_grid = np.arange(z_max + 1, dtype=np.float64)
        o_grid = np.arange(o_max + 1, dtype=np.float64)
        gk = poisson_upper(k_grid[None, :], ec[rows, cols][:, None])  # (cell, k)
        ho = poisson_upper(o_grid[None, :], eo[rows, cols][:, None])  # (cell, o)
        sg = s[rows, cols][:, None] * gk
        too_big = sg[:, :, None] * ho[:, None, :] > t_obs[rows][:, None, None]
        # h decreasing in o: the count of failing o is the first that passes
        ostar[rows, cols] = too_big.sum(axis=2)
    return ostar


@lru_cache(maxsize=8192)
def _s_grid(n: int, cpus: int) -> F64:
    """``s(m)`` for ``m = 0..n`` (one table per host size, shared by every step)."""
    if n <= EXACT_MAX_N or cpus <= 1:
        out = max_cell_pvalue(float(n), np.arange(n + 1, dtype=np.float64), cpus)
    else:
        # Only a window around the mean count matters: below it s(m) is clipped at 1 (C times
        # a tail of at least about 1/2), above it s(m) < 1e-30 (a binomial tail 12 standard
        # deviations plus 40 above the mean), kept as 0 so that the union law ends there.
        # A host with thousands of crashes otherwise costs thousands of tail evaluations.
        mean = n / cpus
        lo = max(2, int(mean))
        hi = min(n, int(np.ceil(mean + 12.0 * np.sqrt(mean) + 40.0)))
        out = np.zeros(n + 1, dtype=np.float64)
        out[:lo] = 1.0
        out[lo : hi + 1] = max_cell_pvalue(float(n), np.arange(lo, hi + 1, dtype=np.float64), cpus)
    out.flags.writeable = False
    return out


def _s_rows(n: int, cpus: I64, lo: int, hi: int, cells: int = 1) -> F64:
    """``s(m)`` for ``m = lo..hi-1``, one row per entry's CPU count (``s2`` with ``cells=2``)."""
    out = np.empty((cpus.size, hi - lo), dtype=np.float64)
    grid = _s_grid if cells == 1 else _pair_grid
    for c in np.unique(cpus).tolist():
        out[cpus == c] = grid(n, int(c))[lo:hi]
    return out


@lru_cache(maxsize=4096)
def _m_law(n: int, cpus: int) -> tuple[F64, F64]:
    """Exact law of the largest cell (``n <= EXACT_MAX_N``) and the tie factor per ``m``. Above
    ``EXACT_MAX_N`` only the two-factor test runs, on the union law (:func:`_m_window`)."""
    m = np.arange(n + 1, dtype=np.float64)
    if n >= 1 and cpus >= 2:
        log_pmf = (
            _log_choose(float(n), m) + m * np.log(1.0 / cpus) + (n - m) * np.log1p(-1.0 / cpus)
        )
        b = np.exp(log_pmf) * cpus
    else:
        b = np.zeros(n + 1)
        b[n] = 1.0
    law = max_cell_law(n, cpus)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(law > 0, b / law, np.inf)
    ties = np.minimum(np.floor(n / np.maximum(m, 1.0)), np.maximum(ratio, 1.0))
    ties = np.clip(ties, 1.0, float(max(cpus, 1)))
    ties[m > n / 2] = 1.0
    law.flags.writeable = False
    ties.flags.writeable = False
    return law, ties


# Up to this many crashes the hypergeometric tables are cached whole (the grid's old limit).
_PMF_CACHE_N = 60


@lru_cache(maxsize=1024)
def _hypergeom_pmf(n: int, z_max: int) -> F64:
    """``P(K = k)`` for ``K ~ Hypergeometric(n, z, m)``, indexed ``[z, m, k]``, ``z, k <=
    z_max``: ``k`` of the ``z`` anomalous crashes among ``m`` drawn from ``n``."""
    return _hypergeom_rows(n, z_max, 0, n + 1)


@lru_cache(maxsize=8)
def _hypergeom_rows(n: int, z_max: int, lo: int, hi: int) -> F64:
    """:func:`_hypergeom_pmf` for ``m = lo..hi-1`` only.

    The log binomial coefficients come from one table of ``gammaln(x + 1)``, ``x = 0..n``
    (:func:`_log_factorials`), gathered where ``gammaln`` was evaluated three times per element
    and term, and only columns ``k < hi`` are computed (``k <= m`` elsewhere is impossible, 0):
    the same values in the same order of operations, so the same bits (tests/epidemiology/
    test_epi_kernels.py), at a fraction of the cost (this was a twentieth of ``analyze`` at a
    million crashes). Out-of-range entries (``ok`` false) read a clipped index and are 0;
    entries with ``k > z`` are not computed.

    The last few windows are kept: the chunks of one group of hosts, and the one-cell and pair
    tests of the same hosts, ask for the same window again (a third of the calls at a million
    crashes); each is at most a few hundred kB, a table per call held 100 MiB."""
    out = np.zeros((z_max + 1, max(hi - lo, 0), z_max + 1), dtype=np.float64)
    k_top = min(z_max, hi - 1)
    if k_top < 0 or hi <= lo:
        out.flags.writeable = False
        return out
    # Only the pairs k <= z (k > z is impossible, 0), each a row over m: half the elements
    # of the [z, m, k] block, each computed as before.
    zs, ks = np.tril_indices(z_max + 1)
    keep = ks <= k_top
    zs, ks = zs[keep], ks[keep]
    m = np.arange(lo, hi, dtype=np.int64)
    a = (n - zs)[:, None]  # (pair, 1)
    b = m[None, :] - ks[:, None]  # (pair, m)
    ok = (b >= 0) & (b <= a)
    table = _log_factorials(n)

    def log_choose(x: Any, y: Any) -> F64:
        res: F64 = table[np.clip(x, 0, n)] - table[np.clip(y, 0, n)]
        res -= table[np.clip(x - y, 0, n)]
        return res

    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        logp = log_choose(zs, ks)[:, None] + log_choose(a, b)
        logp -= log_choose(n, m)[None, :]
        out[zs, :, ks] = np.where(ok, np.exp(np.where(ok, logp, 0.0)), 0.0)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=256)
def _log_factorials(n: int) -> F64:
    """``gammaln(x + 1) = log(x!)`` for ``x = 0..n``, as :func:`_log_choose` evaluates it."""
    out: F64 = special.gammaln(np.arange(n + 1, dtype=np.float64) + 1)
    out.flags.writeable = False
    return out


def _log_choose(n: Any, k: Any) -> F64:
    nn = np.asarray(n, dtype=np.float64)
    kk = np.asarray(k, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        out: F64 = special.gammaln(nn + 1) - special.gammaln(kk + 1) - special.gammaln(nn - kk + 1)
    return out
