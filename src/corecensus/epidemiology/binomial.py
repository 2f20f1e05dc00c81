"""Binomial upper tail, vectorized.

``P(X >= k)`` for ``X ~ Binomial(n, p)`` equals the regularized incomplete beta function
``I_p(k, n - k + 1)`` (Abramowitz & Stegun 26.5.24). ``scipy.special.betainc`` evaluates it
for millions of cells in a fraction of a second; ``scipy.special.bdtrc`` with float counts goes
through a deprecated, much slower path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special

__all__ = ["binomial_upper"]

F64 = NDArray[np.float64]


def binomial_upper(k: Any, n: Any, p: Any) -> F64:
    """``P(X >= k)`` for ``X ~ Binomial(n, p)``; 1 for ``k <= 0``, 0 for ``k > n``."""
    kk = np.asarray(k, dtype=np.float64)
    nn = np.asarray(n, dtype=np.float64)
    pp = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    inside = (kk >= 1) & (kk <= nn)
    with np.errstate(invalid="ignore", divide="ignore"):
        tail = special.betainc(np.where(inside, kk, 1.0), np.where(inside, nn - kk + 1, 1.0), pp)
    out: F64 = np.where(kk <= 0, 1.0, np.where(inside, tail, 0.0))
    return np.clip(np.nan_to_num(out, nan=1.0), 0.0, 1.0)
