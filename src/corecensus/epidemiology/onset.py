"""Onset: when did a population start, in which version, and did a deploy bring it?

* :class:`CumulativeExposure` — ``Lambda_s(t)``, the exposure-hours accrued by stratum *s*
  (a service, or the whole fleet) up to time *t*, exact for interval rows (each row accrues its
  hours uniformly between start and end). Evaluated by binary search over sorted starts and ends:
  ``Lambda(t) = sum_{start<=t} w (t - start) - sum_{end<=t} w (t - end)`` with ``w`` the row's
  hours per µs.
* :func:`poisson_changepoint` — a single change in a Poisson rate measured against exposure:
  with ``n1`` crashes over exposure ``E1`` before the change and ``n2`` over ``E2`` after,

      LLR = n1 ln(n1/E1) + n2 ln(n2/E2) - n ln(n/E),

  maximized over the change time (the maximum lies at a crash time). Significance: ``2 LLR`` is
  chi-square(1) at a fixed change time; the maximum over ``2n`` candidate times is corrected by
  Bonferroni, which is conservative (Worsley 1986, "Confidence regions and tests for a
  change-point in a sequence of exponential family random variables", Biometrika 73:91-104, gives
  the exact null; Raftery & Akman 1986, Biometrika 73:85-89, the Bayesian analogue). Vectorized
  over all populations at once.
* :func:`absent_before` — whether a population absent from the previous version would have been
  seen there: ``P(X <= observed)`` with ``X ~ Poisson(rate on the new version x exposure-hours of
  the previous one)``.
* :func:`nearest_deploy` — the deploy of a version closest to a time within a window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special

from corecensus.epidemiology.poisson import poisson_lower
from corecensus.epidemiology.segments import chunk_ranges, radix_argsort, segment_rank
from corecensus.epidemiology.tails import chi2_upper

__all__ = [
    "Changepoint",
    "CumulativeExposure",
    "PopulationTimeline",
    "absent_before",
    "nearest_deploy",
    "poisson_changepoint",
    "population_timeline",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


@dataclass(frozen=True, slots=True, eq=False)
class _Curve:
    starts: I64
    start_w: F64  # cumulative sum of w over sorted starts
    start_wt: F64  # cumulative sum of w * start
    ends: I64
    end_w: F64
    end_wt: F64
    point_t: I64  # zero-length rows: all hours at once
    point_h: F64


class CumulativeExposure:
    """Exposure-hours accrued up to a time, per stratum (stratum ``-1`` is the whole fleet).

    ``stratum`` labels each exposure row (for instance its service code). Times are µs since
    the epoch; internally they are taken relative to the earliest start, for precision.
    """

    def __init__(self, start_us: Any, end_us: Any, hours: Any, stratum: Any) -> None:
        s = np.asarray(start_us, dtype=np.int64)
        e = np.asarray(end_us, dtype=np.int64)
        h = np.asarray(hours, dtype=np.float64)
        g = np.asarray(stratum, dtype=np.int64)
        self.origin = int(s.min()) if s.size else 0
        self.first_us = self.origin
        self.last_us = int(e.max()) if e.size else 0
        self._curves: dict[int, _Curve] = {-1: self._curve(s, e, h)}
        for key in np.unique(g[g >= 0]):
            sel = g == key
            self._curves[int(key)] = self._curve(s[sel], e[sel], h[sel])

    def _curve(self, s: I64, e: I64, h: F64) -> _Curve:
        s = s - self.origin
        e = e - self.origin
        span = e - s
        point = span <= 0
        w = np.where(point, 0.0, h / np.maximum(span, 1))
        so = np.argsort(s, kind="stable")
        eo = np.argsort(e, kind="stable")
        po = np.argsort(s[point], kind="stable")
        return _Curve(
            starts=s[so],
            start_w=np.cumsum(w[so]),
            start_wt=np.cumsum(w[so] * s[so]),
            ends=e[eo],
            end_w=np.cumsum(w[eo]),
            end_wt=np.cumsum(w[eo] * e[eo]),
            point_t=s[point][po],
            point_h=np.cumsum(h[point][po]),
        )

    def strata(self) -> tuple[int, ...]:
        return tuple(sorted(self._curves))

    def at(self, t_us: Any, stratum: int = -1) -> F64:
        """``Lambda(t)`` in exposure-hours for stratum ``stratum`` (fleet if unknown)."""
        curve = self._curves.get(int(stratum), self._curves[-1])
        t = np.asarray(t_us, dtype=np.int64) - self.origin

        def upto(sorted_t: I64, cum: F64) -> F64:
            idx = np.searchsorted(sorted_t, t, side="right")
            padded = np.concatenate([[0.0], cum])
            out: F64 = padded[idx]
            return out

        tf = t.astype(np.float64)
        ramp_in = tf * upto(curve.starts, curve.start_w) - upto(curve.starts, curve.start_wt)
        ramp_out = tf * upto(curve.ends, curve.end_w) - upto(curve.ends, curve.end_wt)
        out: F64 = np.maximum(ramp_in - ramp_out, 0.0) + upto(curve.point_t, curve.point_h)
        return out

    def total(self, stratum: int = -1) -> float:
        return float(self.at(np.array([self.last_us]), stratum)[0])


@dataclass(frozen=True, slots=True, eq=False)
class Changepoint:
    """Per group: the best single change in rate.

    ``time_us`` is the first crash after the change; ``before``/``after`` crash counts and
    ``exposure_before``/``exposure_after`` in exposure-hours; ``ratio`` the rate after over the
    rate before (inf when no crash came before); ``llr`` the log-likelihood ratio and
    ``p_value`` its Bonferroni-corrected chi-square(1) p-value.
    """

    time_us: I64
    before: I64
    after: I64
    exposure_before: F64
    exposure_after: F64
    ratio: F64
    llr: F64
    p_value: F64


def _first_best(score: F64, seg: I64, starts: I64, counts: I64) -> I64:
    """Per non-empty segment (``seg`` non-decreasing, segments beginning at ``starts``), the
    first position of its largest ``score``, NaN below every number: the leader of
    ``np.lexsort((-score, seg))`` in each segment (a stable sort: ties by position), without
    sorting a million scores."""
    nan = np.isnan(score)
    value = np.where(nan, -np.inf, score)
    full = counts > 0
    best = np.full(counts.size, -np.inf)
    best[full] = np.maximum.reduceat(value, starts[full])
    hit = np.flatnonzero((value == best[seg]) & ~nan)
    first_hit = np.ones(hit.size, dtype=bool)
    first_hit[1:] = seg[hit][1:] != seg[hit][:-1]
    lead = starts.copy()  # a segment of NaN scores only: its first position
    lead[seg[hit[first_hit]]] = hit[first_hit]
    out: I64 = lead[full]
    return out


def poisson_changepoint(
    times_us: Any,
    cum_exposure: Any,
    starts: Any,
    lo: Any,
    hi: Any,
    *,
    increase_only: bool = True,
    min_after: int = 1,
) -> Changepoint:
    """Best single rate change per group.

    ``times_us`` and ``cum_exposure`` (``Lambda`` at each crash) are sorted by time within
    consecutive groups beginning at ``starts``; ``lo[g]``/``hi[g]`` are ``Lambda`` at the start
    and end of group *g*'s observation window. With ``increase_only`` only onsets (rate going up)
    are candidates, and only changes followed by at least ``min_after`` crashes: a change just
    before the window's last crash would otherwise put one crash in (almost) no exposure and
    look infinitely significant.
    """
    t = np.asarray(times_us, dtype=np.int64)
    lam = np.asarray(cum_exposure, dtype=np.float64)
    st = np.asarray(starts, dtype=np.int64)
    lo_g = np.asarray(lo, dtype=np.float64)
    hi_g = np.asarray(hi, dtype=np.float64)
    n_groups = st.size
    n = t.size
    counts = np.diff(np.append(st, n))
    seg = np.repeat(np.arange(n_groups), counts)
    rank = segment_rank(n, st)
    n_g = counts[seg].astype(np.float64)
    total_e = np.maximum(hi_g - lo_g, 1e-12)[seg]
    e1 = np.clip(lam - lo_g[seg], 0.0, None)
    # a crash cannot fall in zero exposure; keep E1 and E2 away from 0 for the logs
    tiny = 1e-9 * total_e
    e1 = np.clip(e1, tiny, total_e - tiny)
    base = special.xlogy(n_g, n_g / total_e)

    def llr(k: F64) -> F64:
        n2 = n_g - k
        e2 = total_e - e1
        out: F64 = special.xlogy(k, k / e1) + special.xlogy(n2, n2 / e2) - base
        return out

    # Candidate A: the change just before crash i (i crashes before it); candidate B: just
    # after crash i. For an increase, B at i is dominated by A at i + 1 (same count before,
    # more exposure before), so only A is needed.
    k_a = rank.astype(np.float64)
    l_a = llr(k_a)
    enough = n_g - k_a >= min_after
    if increase_only:
        up = (n_g - k_a) / (total_e - e1) > k_a / e1
        score = np.where(up & enough, l_a, -np.inf)
        use_b = np.zeros(n, dtype=bool)
        k = k_a
    else:
        k_b = k_a + 1.0
        l_b = llr(k_b)
        use_b = (l_b > l_a) & (n_g - k_b >= min_after)
        score = np.where(use_b, l_b, np.where(enough, l_a, -np.inf))
        k = np.where(use_b, k_b, k_a)
    time_us = np.zeros(n_groups, dtype=np.int64)
    best_llr = np.zeros(n_groups, dtype=np.float64)
    before = np.zeros(n_groups, dtype=np.int64)
    e_before = np.zeros(n_groups, dtype=np.float64)
    if n:
        lead = _first_best(score, seg, st, counts)
        g = seg[lead]
        best_llr[g] = np.maximum(score[lead], 0.0)
        before[g] = k[lead].astype(np.int64)
        e_before[g] = e1[lead]
        # the first crash after the change: crash i for candidate A, crash i + 1 for B
        idx = np.minimum(lead + use_b[lead].astype(np.int64), st[g] + counts[g] - 1)
        time_us[g] = t[idx]
    after = counts - before
    e_after = np.maximum(hi_g - lo_g, 1e-12) - e_before
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (after / e_after) / (before / e_before)
        p = np.minimum(1.0, 2.0 * counts * chi2_upper(2.0 * best_llr, 1))
    p = np.where(counts > 0, p, 1.0)
    return Changepoint(
        time_us=time_us,
        before=before,
        after=after.astype(np.int64),
        exposure_before=e_before,
        exposure_after=e_after,
        ratio=np.nan_to_num(ratio, nan=1.0, posinf=np.inf),
        llr=best_llr,
        p_value=p,
    )


def absent_before(observed_before: Any, count_new: Any, hours_new: Any, hours_before: Any) -> F64:
    """``P(X <= observed_before)``, ``X ~ Poisson(count_new / hours_new * hours_before)``.

    Small values mean the population would have shown up on the previous version had it been
    there at the new version's rate: evidence the new version introduced it.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.asarray(count_new, dtype=np.float64) / np.asarray(hours_new, dtype=float)
        expected = np.nan_to_num(expected * np.asarray(hours_before, dtype=float), nan=0.0)
    return poisson_lower(observed_before, expected)


def nearest_deploy(
    deploy_times_us: Any, at_us: int, *, before_us: int, after_us: int
) -> int | None:
    """Index of the deploy nearest ``at_us`` among those in ``[at - before, at + after]``."""
    times = np.asarray(deploy_times_us, dtype=np.int64)
    ok = (times >= at_us - before_us) & (times <= at_us + after_us)
    if not ok.any():
        return None
    cand = np.flatnonzero(ok)
    return int(cand[np.argmin(np.abs(times[cand] - at_us))])


@dataclass(frozen=True, slots=True, eq=False)
class PopulationTimeline:
    """Change points of every population, against the exposure of its dominant service.

    ``stratum[p]`` is the service code whose exposure curve was used (-1: the whole fleet);
    ``constant_exposure`` is true when no exposure was given and time stood in for it.
    """

    changepoint: Changepoint
    stratum: I64
    constant_exposure: bool


def population_timeline(
    *,
    time_us: NDArray[Any],
    population: NDArray[Any],
    service: NDArray[Any],
    n_pops: int,
    time_order: I64,
    curve: CumulativeExposure | None,
    dominant_share: float = 0.9,
    min_after: int = 3,
) -> PopulationTimeline:
    """Run :func:`poisson_changepoint` for every population at once.

    A population's exposure curve is its dominant service's (the service of at least
    ``dominant_share`` of its crashes) when the exposure knows that service, else the fleet's.
    Without exposure, elapsed time is the exposure (constant fleet size assumed).
    """
    t = np.asarray(time_us, dtype=np.int64)
    pop = np.asarray(population)
    svc = np.asarray(service)
    n_svc = int(svc.max()) + 2 if svc.size else 1
    key = pop.astype(np.int64) * n_svc + (svc.astype(np.int64) + 1)
    ps = np.bincount(key, minlength=n_pops * n_svc).reshape(n_pops, n_svc)
    del key
    totals = ps.sum(axis=1)
    top = ps.argmax(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(totals > 0, ps[np.arange(n_pops), top] / totals, 0.0)
    stratum = np.where((share >= dominant_share) & (top >= 1), top - 1, -1).astype(np.int64)
    if curve is not None:
        known = set(curve.strata())
        stratum = np.array([s if s in known else -1 for s in stratum.tolist()], dtype=np.int64)

    # crashes by population, then time; each population's change point is its own, so they
    # are computed a chunk of populations at a time (the temporaries of a chunk, not of
    # every crash)
    order = time_order[radix_argsort(pop[time_order])]
    counts = np.bincount(pop, minlength=n_pops)
    starts_all = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    lo = np.zeros(n_pops, dtype=np.float64)
    hi = np.zeros(n_pops, dtype=np.float64)
    t0 = int(t.min()) if t.size else 0
    if curve is None:
        t1 = int(t.max()) if t.size else 0
        hi[:] = max((t1 - t0) / 3.6e9, 1e-9)
    else:
        for s in np.unique(stratum).tolist():
            pops_s = stratum == s
            lo[pops_s] = curve.at(np.array([curve.first_us]), s)[0]
            hi[pops_s] = curve.at(np.array([curve.last_us]), s)[0]
    nonempty = np.flatnonzero(counts > 0)
    parts = []
    for g_lo, g_hi in chunk_ranges(counts[nonempty]) or [(0, 0)]:
        pops = nonempty[g_lo:g_hi]
        first = int(starts_all[pops[0]]) if pops.size else 0
        rows = order[first : first + int(counts[pops].sum())]
        ts = t[rows]
        if curve is None:
            lam = (ts - t0) / 3.6e9
        else:
            lam = np.zeros(ts.size, dtype=np.float64)
            crash_stratum = stratum[pop[rows]]
            for s in np.unique(crash_stratum).tolist():
                sel = crash_stratum == s
                lam[sel] = curve.at(ts[sel], s)
        parts.append(
            poisson_changepoint(
                ts,
                lam,
                starts_all[pops] - first,
                lo[pops],
                hi[pops],
                increase_only=True,
                min_after=min_after,
            )
        )
    cp_nonempty = _concatenate(parts)
    cp = _scatter(cp_nonempty, counts > 0, n_pops)
    return PopulationTimeline(changepoint=cp, stratum=stratum, constant_exposure=curve is None)


def _concatenate(parts: list[Changepoint]) -> Changepoint:
    if len(parts) == 1:
        return parts[0]
    return Changepoint(
        *(np.concatenate([getattr(c, f) for c in parts]) for f in Changepoint.__dataclass_fields__)
    )


def _scatter(cp: Changepoint, where: NDArray[np.bool_], n: int) -> Changepoint:
    def put(values: NDArray[Any], fill: float) -> NDArray[Any]:
        out = np.full(n, fill, dtype=values.dtype)
        out[where] = values
        return out

    return Changepoint(
        time_us=put(cp.time_us, 0),
        before=put(cp.before, 0),
        after=put(cp.after, 0),
        exposure_before=put(cp.exposure_before, 0.0),
        exposure_after=put(cp.exposure_after, 0.0),
        ratio=put(cp.ratio, 1.0),
        llr=put(cp.llr, 0.0),
        p_value=put(cp.p_value, 1.0),
    )
