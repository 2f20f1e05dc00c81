"""Spread: is a population's host distribution consistent with exposure across the fleet?

Under the null each host's count of the population is Poisson with mean ``E_h`` proportional to
its exposure (``sum E_h = n``). Pearson's dispersion statistic over the ``k`` exposed hosts

    X2 = sum_h (O_h - E_h)^2 / E_h  ~  chi-square(k - 1)

(the Poisson index-of-dispersion test: Fisher 1950, "The significance of deviations from
expectation in a Poisson series", Biometrics 6:17-24; Cochran 1954, Biometrics 10:417-451) is
computed from the hosts that have crashes only, since a host with ``O = 0`` adds exactly ``E_h``.
The likelihood-ratio form ``G = 2 sum O ln(O / E)`` is returned as well.

Reading it: the index ``X2 / (k - 1)`` is the effect size — about 1 for a bug spread in
proportion to exposure, a little above 1 when hosts differ in workload (host frailty), and far
above 1 when a few hosts carry the population. With thousands of crashes even mild frailty is
"significant", so the rules use the index and the concentration on top hosts, not the p-value
alone. The chi-square approximation is poor when all ``E_h`` are tiny (Cochran's rule); the
rules require a minimum number of crashes before they read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from corecensus.epidemiology.segments import weighted_count
from corecensus.epidemiology.tails import chi2_upper

__all__ = ["Dispersion", "poisson_dispersion"]

F64 = NDArray[np.float64]


@dataclass(frozen=True, slots=True, eq=False)
class Dispersion:
    """Per group: Pearson ``statistic``, degrees of freedom, p-value, index, and ``g``."""

    statistic: F64
    df: F64
    p_value: F64
    index: F64
    g: F64


def poisson_dispersion(
    observed: Any,
    expected: Any,
    *,
    group: Any,
    n_groups: int,
    expected_total: Any,
    units: Any,
) -> Dispersion:
    """Dispersion of each group's cells (hosts with ``O > 0`` and ``E > 0``).

    ``expected_total[g]`` is the sum of ``E`` over all of group *g*'s units (normally its crash
    count) and ``units[g]`` how many units (exposed hosts) it was spread over.
    """
    o = np.asarray(observed, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    g = np.asarray(group, dtype=np.int64)
    keep = e > 0
    o, e, g = o[keep], e[keep], g[keep]
    total = np.asarray(expected_total, dtype=np.float64)
    k = np.asarray(units, dtype=np.float64)
    given_e = weighted_count(g, e, n_groups)
    cells = weighted_count(g, (o - e) ** 2 / e, n_groups)
    x2 = cells + np.maximum(total - given_e, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        glr = 2.0 * weighted_count(g, o * np.log(o / e), n_groups)
        glr -= 2.0 * (weighted_count(g, o, n_groups) - total)
        df = np.maximum(k - 1.0, 0.0)
        p = np.where(df > 0, chi2_upper(x2, np.maximum(df, 1.0)), 1.0)
        index = np.where(df > 0, x2 / np.maximum(df, 1.0), np.nan)
    return Dispersion(
        statistic=x2,
        df=df,
        p_value=np.asarray(p, dtype=np.float64),
        index=np.asarray(index, dtype=np.float64),
        g=np.asarray(glr, dtype=np.float64),
    )
