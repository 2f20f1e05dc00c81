"""The naive peers, computed directly from the same tables (no corecensus statistics code).

* raw count: hosts ranked by their number of crashes; flagged at or above a count threshold
  (calibrated on null fleets to the same false-alarm budget as corecensus).
* exposure-adjusted Poisson + BH over all crashes: each host's crashes against its share of
  fleet exposure, exact Poisson upper tail, Benjamini-Hochberg at q = 0.05 — the prototype's
  "about half found, about 180 false hosts per 10,000".
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from corecensus.epidemiology import CrashTable, ExposureTable


def raw_counts(crashes: CrashTable) -> NDArray[np.int64]:
    """Crashes per host (index = host code)."""
    return np.bincount(crashes.host.codes, minlength=len(crashes.host.vocab)).astype(np.int64)


def poisson_bh_flags(crashes: CrashTable, exposure: ExposureTable, q: float = 0.05) -> set[int]:
    """Hosts whose crash count exceeds their exposure share (Poisson, BH at ``q``)."""
    n_hosts = len(crashes.host.vocab)
    observed = np.bincount(crashes.host.codes, minlength=n_hosts).astype(np.float64)
    names = {h: i for i, h in enumerate(crashes.host.vocab)}
    code = np.array([names.get(h, -1) for h in exposure.host.vocab])[exposure.host.codes]
    ok = code >= 0
    hours = np.bincount(code[ok], weights=exposure.hours[ok], minlength=n_hosts)
    expected = observed.sum() * hours / hours.sum()
    test = expected > 0
    p = np.ones(n_hosts)
    p[test] = stats.poisson.sf(observed[test] - 1, expected[test])
    # Benjamini-Hochberg
    m = int(test.sum())
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, n_hosts + 1)
    qv = np.empty(n_hosts)
    qv[order] = np.minimum.accumulate(ranked[::-1])[::-1]
    return {int(h) for h in np.flatnonzero((qv <= q) & test)}
