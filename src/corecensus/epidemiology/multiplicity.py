"""Multiple testing: Benjamini-Hochberg false discovery rate, and Fisher's combination.

* :func:`benjamini_hochberg` — step-up adjusted p-values ("q-values") controlling the false
  discovery rate at level *q* when tests are independent or positively dependent (Benjamini &
  Hochberg 1995, "Controlling the false discovery rate", JRSS B 57:289-300; Benjamini & Yekutieli
  2001 for positive dependence). ``m`` may exceed the number of p-values given: the missing tests
  are taken as ``p = 1`` (hosts with no crashes need not be materialised).
* :func:`grouped_benjamini_hochberg` — the same, separately within each group (each population
  across its hosts), in one vectorized pass.
* :func:`fisher_combine` — Fisher's method for two independent p-values: under the null the
  product ``x = p1 * p2`` of two uniforms has ``P(p1 p2 <= x) = x (1 - ln x)`` (Fisher 1925,
  *Statistical Methods for Research Workers*, §21.1; the chi-square with 4 degrees of freedom in
  closed form). For discrete, conservative p-values the result stays valid (conservative).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["benjamini_hochberg", "fisher_combine", "grouped_benjamini_hochberg"]

F64 = NDArray[np.float64]


def benjamini_hochberg(p_values: Any, m: int | None = None) -> F64:
    """BH-adjusted p-values, same order as the input; ``m`` defaults to ``len(p_values)``."""
    p = np.asarray(p_values, dtype=np.float64)
    n = p.size
    if n == 0:
        return p.copy()
    m_eff = n if m is None else max(int(m), n)
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m_eff / np.arange(1, n + 1)
    # step-up: q_(i) = min_{j >= i} p_(j) m / j
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    q = np.empty(n, dtype=np.float64)
    q[order] = np.minimum(ranked, 1.0)
    return q


def grouped_benjamini_hochberg(p_values: Any, groups: Any, m_per_group: Any = None) -> F64:
    """BH within each group; ``groups`` are non-negative integer labels, ``m_per_group[g]`` the
    number of tests in group *g* (at least the number of p-values given for it)."""
    p = np.asarray(p_values, dtype=np.float64)
    g = np.asarray(groups, dtype=np.int64)
    n = p.size
    if n == 0:
        return p.copy()
    order = np.lexsort((p, g))
    gs = g[order]
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(gs[1:], gs[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    seg = np.cumsum(new) - 1
    rank = np.arange(n) - starts[seg] + 1
    counts = np.diff(np.append(starts, n))
    if m_per_group is None:
        m = counts[seg].astype(np.float64)
    else:
        m = np.maximum(np.asarray(m_per_group, dtype=np.float64)[gs], counts[seg])
    ranked = np.minimum(p[order] * m / rank, 1.0)
    # Segmented reverse cumulative minimum in one pass: replace values by their integer rank
    # and offset each segment by segment * n (exact in int64, unlike a float offset that would
    # swallow tiny p-values), accumulate, then map ranks back to values.
    value_order = np.argsort(ranked, kind="stable")
    int_rank = np.empty(n, dtype=np.int64)
    int_rank[value_order] = np.arange(n, dtype=np.int64)
    offset = seg.astype(np.int64) * np.int64(n)
    acc = np.minimum.accumulate((int_rank + offset)[::-1])[::-1] - offset
    q = np.empty(n, dtype=np.float64)
    q[order] = ranked[value_order][acc]
    return q


def fisher_combine(p1: Any, p2: Any) -> F64:
    """Fisher's combined p-value of two independent p-values: ``x (1 - ln x)``, ``x = p1 p2``."""
    x = np.clip(np.asarray(p1, dtype=np.float64) * np.asarray(p2, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(x > 0, x * (1.0 - np.log(x)), 0.0)
    res: F64 = np.clip(out, 0.0, 1.0)
    return res
