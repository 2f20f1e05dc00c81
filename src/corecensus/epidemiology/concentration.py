"""Concentration on one CPU within a host: "7 of 7 crashes on CPU 11".

A defective core crashes whatever runs on it, so a faulty host's crashes pile up on one logical
CPU, while software crashes land on CPUs roughly uniformly (the scheduler moves threads). The
test: given ``n`` crashes with a known CPU on a host with ``C`` logical CPUs, under the null each
crash's CPU is uniform and independent (multinomial with equal cells). The statistic is the
largest cell count ``m``; its p-value is bounded by the union (Bonferroni) bound

    P(max >= m) <= C * P(Binomial(n, 1/C) >= m),

which is *exact* when ``m > n / 2`` (two CPUs cannot both hold more than half the crashes, so the
events are disjoint) and conservative otherwise (cf. Levin 1981, "A representation for
multinomial cumulative distribution functions", Annals of Statistics 9:1123-1126, for the exact
distribution). Crashes with an unknown CPU are left out.

The number of cells (CPUs, or physical cores) and which crashes count are decided by
:mod:`corecensus.epidemiology.placement` from each host's own facts: the crashing process's
allowed CPUs, the host's online CPUs, else the largest CPU index seen on the host plus one (an
underestimate only makes the test conservative: fewer cells, more chance of a pile-up). A
count is never taken from other hosts (issue 9: a 2-CPU host tested as a 384-CPU one of the
same model). Crashes pinned to one CPU carry no evidence about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special

from corecensus.epidemiology.segments import Groups, pair_key
from corecensus.epidemiology.tails import binomial_upper, per_distinct_counts, unit_probability

__all__ = [
    "EXACT_MAX_N",
    "ModalCells",
    "max_cell_law",
    "max_cell_pvalue",
    "modal_cells",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


def max_cell_pvalue(n: Any, m: Any, cells: Any) -> F64:
    """``P(max cell >= m)`` bound for ``n`` items uniform over ``cells`` cells (see module doc).

    Returns 1 where there is no evidence (``m < 2``, ``cells <= 1``). Each distinct triple of
    counts is evaluated once (:func:`~corecensus.epidemiology.tails.per_distinct_counts`).
    """
    return per_distinct_counts(_max_cell_pvalue, n, m, cells)


def _max_cell_pvalue(n: Any, m: Any, cells: Any) -> F64:
    nn = np.asarray(n, dtype=np.float64)
    mm = np.asarray(m, dtype=np.float64)
    cc = np.asarray(cells, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        tail = binomial_upper(mm, nn, 1.0 / np.maximum(cc, 1.0))
        p = np.where((mm < 2) | (cc <= 1), 1.0, cc * tail)
    return unit_probability(p)


@dataclass(frozen=True, slots=True, eq=False)
class ModalCells:
    """Per group: items with a known cell, the largest cell's count and which cell it is.

    ``cell`` is -1 for groups without any known cell. Ties go to the cell with the larger
    ``tiebreak`` sum (e.g. hardware-flavoured anomalies), then to the lower cell index.
    """

    n: I64
    top: I64
    cell: I64
    second: I64


def modal_cells(
    group: NDArray[Any], cell: NDArray[Any], n_groups: int, tiebreak: NDArray[Any] | None = None
) -> ModalCells:
    """Largest cell per group; records with ``cell < 0`` (unknown) are ignored."""
    known = cell >= 0
    g = np.asarray(group, dtype=np.int64)[known]
    c = np.asarray(cell, dtype=np.int64)[known]
    n = np.bincount(g, minlength=n_groups).astype(np.int64)
    top = np.zeros(n_groups, dtype=np.int64)
    second = np.zeros(n_groups, dtype=np.int64)
    best = np.full(n_groups, -1, dtype=np.int64)
    if not g.size:
        return ModalCells(n=n, top=top, cell=best, second=second)
    width = int(c.max()) + 1
    cells = Groups.of(pair_key(g, c, width))
    cg = cells.keys // width
    cc = cells.keys % width
    tb = np.zeros(len(cells), dtype=np.float64)
    if tiebreak is not None:
        tb = cells.sum(np.asarray(tiebreak, dtype=np.float64)[known])
    # sort cells by group, then count descending, tiebreak descending, cell ascending
    order = np.lexsort((cc, -tb, -cells.counts, cg))
    first = np.ones(order.size, dtype=bool)
    first[1:] = cg[order][1:] != cg[order][:-1]
    lead = order[first]
    top[cg[lead]] = cells.counts[lead]
    best[cg[lead]] = cc[lead]
    # runner-up: the element right after the leader within the same group
    nxt = np.flatnonzero(first) + 1
    ok = nxt < order.size
    nxt_ok = nxt[ok]
    same = cg[order][nxt_ok] == cg[lead[ok]]
    second[cg[lead[ok]][same]] = cells.counts[order[nxt_ok[same]]]
    return ModalCells(n=n, top=top, cell=best, second=second)


# Largest ``n`` for which :func:`max_cell_law` computes the exact law (Levin's representation
# costs about n^3 log C operations); above it callers use the union bound.
EXACT_MAX_N = 160


def max_cell_law(n: int, cells: int) -> F64:
    """Exact ``P(max cell = m)`` for ``m = 0..n``: ``n`` items uniform over ``cells`` cells.

    Above ``n / 2`` only one cell can reach ``m``, so ``P(max = m) = C * Binomial(n, 1/C)
    pmf(m)`` exactly. At or below it, Levin's representation (Levin 1981, Annals of Statistics
    9:1123-1126): with ``X_i ~ Poisson(n / C)`` independent,

        P(max <= m) = P(X <= m)^C * P(W = n) / P(Poisson(n) = n),

    ``W`` the sum of ``C`` copies of ``X`` truncated to ``<= m``, whose law is the ``C``-fold
    convolution (binary powering, truncated at ``n``). Absolute error ~1e-15. ``n`` must be at
    most :data:`EXACT_MAX_N`.
    """
    if n > EXACT_MAX_N:
        raise ValueError(f"max_cell_law: n={n} above EXACT_MAX_N={EXACT_MAX_N}")
    out = np.zeros(n + 1, dtype=np.float64)
    if n == 0 or cells <= 1:
        out[n] = 1.0
        return out
    ks = np.arange(n + 1, dtype=np.float64)
    log_b = (
        special.gammaln(n + 1.0)
        - special.gammaln(ks + 1.0)
        - special.gammaln(n - ks + 1.0)
        + ks * np.log(1.0 / cells)
        + (n - ks) * np.log1p(-1.0 / cells)
    )
    half = n // 2
    out[half + 1 :] = cells * np.exp(log_b[half + 1 :])
    lam = n / cells
    log_pois = special.xlogy(ks, lam) - lam - special.gammaln(ks + 1.0)
    log_norm = n * np.log(n) - n - special.gammaln(n + 1.0)  # log P(Poisson(n) = n)
    cdf = np.zeros(half + 1, dtype=np.float64)  # P(max <= m), m = 0..half
    lo = -(-n // cells)  # the largest cell holds at least ceil(n / C)
    for m in range(max(lo, 1), half + 1):
        q = np.exp(log_pois[: m + 1])
        mass = float(q.sum())
        w = _power_at(q / mass, cells, n)
        if w > 0.0:
            cdf[m] = float(np.exp(cells * np.log(mass) + np.log(w) - log_norm))
        if cdf[m] > 1.0 - 1e-15:
            # the rest of the law is below the method's own error: stop (most of the cost of
            # analyze at a million crashes was here, for m no host reaches)
            cdf[m + 1 :] = cdf[m]
            break
    # P(max = m) for m <= n / 2 from differences of the cdf
    out[: half + 1] = np.diff(np.concatenate(([0.0], cdf[: half + 1])))
    res: F64 = np.clip(out, 0.0, 1.0)
    return res


def _power_at(pmf: F64, times: int, at: int) -> float:
    """``P(sum of times iid copies = at)`` by binary powering, truncated at ``at``.

    The first factor is taken as it is: ``np.convolve([1.0], base)`` is ``base`` to the bit
    (each element ``0 + base[j] * 1``), one convolution of about six saved per call. Each
    product is :func:`_convolve`, ``np.convolve`` without its argument handling."""
    result: F64 | None = None
    base = pmf
    k = times
    cut = at + 1
    while k:
        if k & 1:
            result = base[:cut] if result is None else _convolve(result, base)[:cut]
        k >>= 1
        if k:
            base = _convolve(base, base)[:cut]
    if result is None:  # times == 0: the sum of no copies is 0
        result = np.ones(1, dtype=np.float64)
    return float(result[at]) if result.size > at else 0.0


def _convolve(a: F64, v: F64) -> F64:
    """``np.convolve(a, v)`` for non-empty 1-D float64 arrays by the same call underneath
    (numpy/_core/numeric.py: ``convolve`` swaps the longer array first and returns
    ``multiarray.correlate(a, v[::-1], mode)``), so the same bits: the largest-cell laws make
    about 90,000 small products at a million crashes, and the wrapper's argument handling was
    a third of each (tests/epidemiology/test_epi_kernels.py)."""
    if _CORRELATE is None:  # pragma: no cover - a NumPy laid out otherwise
        return np.convolve(a, v)
    if v.size > a.size:
        a, v = v, a
    out: F64 = _CORRELATE(a, v[::-1], 2)  # mode 2 is "full"
    return out


_CORRELATE: Any = getattr(
    getattr(getattr(np, "_core", None), "multiarray", None), "correlate", None
)
