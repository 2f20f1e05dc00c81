"""Exact upper tails of the binomial and hypergeometric distributions, vectorized.

* ``P(X >= x)`` for ``X ~ chi-square(df)`` is ``scipy.special.chdtrc`` (what
  ``scipy.stats.chi2.sf`` computes, without importing ``scipy.stats``: about a second of every
  ``corecensus`` command's start-up on a busy machine).
* ``P(X >= k)`` for ``X ~ Binomial(n, p)`` is the regularized incomplete beta function
  ``I_p(k, n - k + 1)`` (Abramowitz & Stegun 26.5.24); ``scipy.special.betainc`` evaluates it
  for millions of cells in a fraction of a second (``scipy.special.bdtrc`` with float counts
  goes through a deprecated, much slower path).
* ``P(X >= a)`` for ``X ~ Hypergeometric(N, K, n)`` (one-sided Fisher exact test) is summed
  from log-pmf terms: above the mode the terms fall at least geometrically, so ``terms`` of them
  reach double precision; at or below the mode the complement has at most ``mode`` terms;
  distributions wider than ``terms / 20`` standard deviations go to SciPy. This replaces
  ``scipy.stats.hypergeom.sf``, whose cost grows with ``N`` (seconds for a few thousand
  tables over a million crashes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special

__all__ = [
    "DISTINCT_AT_LEAST",
    "binomial_upper",
    "chi2_upper",
    "hypergeom_upper",
    "per_distinct_counts",
    "unit_probability",
]

F64 = NDArray[np.float64]

# np.clip's ufunc, called directly: np.clip goes through three Python wrappers (about 5 us of
# a call's 8 on a small array), and the tails clip thousands of small arrays per analysis.
_CLIP: Any = getattr(getattr(getattr(np, "_core", None), "umath", None), "clip", np.clip)

# Arrays this large are worth sorting to evaluate each distinct count triple once.
DISTINCT_AT_LEAST = 4096
# Each count of a triple below this, so that three fit one int64 key.
_COUNT_BITS = 20


def unit_probability(p: Any) -> F64:
    """``p`` clipped to ``[0, 1]``, NaN read as 1: ``np.clip(np.nan_to_num(p, nan=1.0), 0, 1)``
    to the bit (infinities clip to the same ends), without ``nan_to_num``'s half a dozen passes
    and checks: the tails are called thousands of times on small arrays per analysis."""
    out: F64 = _CLIP(np.where(np.isnan(p), 1.0, p), 0.0, 1.0)
    return out


def chi2_upper(x: Any, df: Any) -> F64:
    """``P(X >= x)`` for ``X ~ chi-square(df)``, as ``scipy.stats.chi2.sf``: 1 for ``x <= 0``,
    NaN for NaN."""
    xx = np.asarray(x, dtype=np.float64)
    out: F64 = np.asarray(special.chdtrc(df, np.maximum(xx, 0.0)), dtype=np.float64)
    return out


def binomial_upper(k: Any, n: Any, p: Any) -> F64:
    """``P(X >= k)`` for ``X ~ Binomial(n, p)``; 1 for ``k <= 0``, 0 for ``k > n``."""
    kk = np.asarray(k, dtype=np.float64)
    nn = np.asarray(n, dtype=np.float64)
    pp = _CLIP(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    inside = (kk >= 1) & (kk <= nn)
    with np.errstate(invalid="ignore", divide="ignore"):
        tail = special.betainc(np.where(inside, kk, 1.0), np.where(inside, nn - kk + 1, 1.0), pp)
    out: F64 = np.where(kk <= 0, 1.0, np.where(inside, tail, 0.0))
    return unit_probability(out)


def _log_choose(n: F64, k: F64) -> F64:
    out: F64 = special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)
    return out


def hypergeom_upper(a: Any, total: Any, successes: Any, draws: Any, *, terms: int = 200) -> F64:
    """``P(X >= a)`` for ``draws`` items taken from ``total``, ``successes`` of them marked."""
    x, big_n, k_succ, n_draw = np.broadcast_arrays(
        *(np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (a, total, successes, draws))
    )
    lo = np.maximum(0.0, n_draw + k_succ - big_n)
    hi = np.minimum(n_draw, k_succ)
    mode = np.floor((n_draw + 1) * (k_succ + 1) / (big_n + 2))
    out = np.ones(x.shape, dtype=np.float64)
    # A wide distribution needs more terms than ``terms``: hand those (rare) cells to SciPy.
    with np.errstate(invalid="ignore", divide="ignore"):
        var = n_draw * k_succ * (big_n - k_succ) * (big_n - n_draw) / (big_n**2 * (big_n - 1))
    wide = np.nan_to_num(np.sqrt(np.maximum(var, 0.0)), nan=0.0) > terms / 20
    if wide.any():
        from scipy import stats  # only here: importing scipy.stats costs every start-up

        out[wide] = stats.hypergeom.sf(x[wide] - 1, big_n[wide], k_succ[wide], n_draw[wide])

    def tail_sum(sel: NDArray[np.bool_], first: F64, count: int, limit: F64 | None) -> F64:
        """Sum of pmf(first + step) for step < count (and first + step < limit), on ``sel``."""
        bn, ks, nd = big_n[sel], k_succ[sel], n_draw[sel]
        lo_s, hi_s = lo[sel], hi[sel]
        log_denom = _log_choose(bn, nd)
        acc = np.zeros(bn.shape, dtype=np.float64)
        for step in range(count):
            k = first + step
            ok = (k >= lo_s) & (k <= hi_s)
            if limit is not None:
                ok &= k < limit
            if not ok.any():
                break
            kk = np.where(ok, k, lo_s)
            logp = _log_choose(ks, kk) + _log_choose(bn - ks, nd - kk) - log_denom
            acc += np.where(ok, np.exp(logp), 0.0)
        return acc

    upper = (x > mode) & (x <= hi) & ~wide
    if upper.any():
        out[upper] = tail_sum(upper, x[upper], terms, None)
    lower = (x <= mode) & (x > lo) & ~wide
    if lower.any():
        span = int(np.max(x[lower] - lo[lower]))
        out[lower] = 1.0 - tail_sum(lower, lo[lower], span, x[lower])
    out = np.where(x > hi, 0.0, np.where(x <= lo, 1.0, out))
    res: F64 = np.clip(out, 0.0, 1.0)
    return res


def per_distinct_counts(fn: Callable[[F64, F64, F64], F64], a: Any, b: Any, c: Any) -> F64:
    """``fn(a, b, c)`` for an element-wise ``fn`` of three count arrays, evaluated once per
    distinct ``(a, b, c)`` and gathered back: the same values to the bit (every element is
    computed as ``fn`` computes it alone, from the same float). The tails of the per-host
    tests are asked for hundreds of thousands of triples of which a tenth differ (a host's
    crash count, its busiest CPU's, its CPU count), each a ``betainc`` evaluation. Arrays of
    fewer than :data:`DISTINCT_AT_LEAST` elements each, or counts that are not integers in
    ``[0, 2**20)``, go to ``fn`` as they are."""
    if max(np.size(a), np.size(b), np.size(c)) < DISTINCT_AT_LEAST:
        return fn(a, b, c)  # (np.broadcast_shapes costs as much as a small call)
    cols = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (a, b, c)))
    shape = cols[0].shape
    flat = [col.ravel() for col in cols]
    limit = float(1 << _COUNT_BITS)
    for col in flat:
        # (-0.0 is left to fn as it is: the key would give it back as +0.0)
        whole = (col >= 0.0) & (col < limit) & (col == np.floor(col)) & ~np.signbit(col)
        if not whole.all():
            return fn(*cols)
    key = flat[0].astype(np.int64)
    for col in flat[1:]:
        key <<= _COUNT_BITS
        key |= col.astype(np.int64)
    distinct, inverse = np.unique(key, return_inverse=True)
    mask = (1 << _COUNT_BITS) - 1
    parts = [(distinct >> (_COUNT_BITS * shift)) & mask for shift in (2, 1, 0)]
    values = np.asarray(fn(*(part.astype(np.float64) for part in parts)), dtype=np.float64)
    out: F64 = values[inverse].reshape(shape)
    return out
