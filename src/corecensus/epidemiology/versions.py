"""Versions over time, and a population's onset: first version, absence before it, deploy.

:class:`VersionHistory` holds, for the crash vocabulary's (service, version) pairs, when each
was introduced (earliest exposure start, else earliest deploy, else earliest crash), its
exposure-hours, each population's crashes per version and the deploys. :func:`population_onset`
combines the change point (:mod:`~corecensus.epidemiology.onset`) with those facts into the
population's :class:`~corecensus.epidemiology.findings.Onset` and its evidence sentences — see
docs/statistics.md section 6 for the methods.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from corecensus.epidemiology.exposure import ExposureIndex
from corecensus.epidemiology.findings import Onset, iso_time
from corecensus.epidemiology.onset import Changepoint, absent_before, nearest_deploy
from corecensus.epidemiology.params import AnalysisParams
from corecensus.epidemiology.segments import Groups, pair_key
from corecensus.epidemiology.table import CrashTable, Deploys, ExposureTable

__all__ = ["OnsetFinding", "VersionHistory", "population_onset"]

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]
NEVER = 2**62


@dataclass(frozen=True, slots=True, eq=False)
class VersionHistory:
    """Version facts in the crash vocabulary's codes (``service``, ``version``)."""

    versions: tuple[str, ...]
    n_services: int
    intro_us: dict[tuple[int, int], int]
    stratum_hours: F64 | None  # exposure per stratum (see ExposureIndex), None without exposure
    keys: I64  # population * width + version + 1, sorted
    counts: I64
    first_us: I64
    width: int
    deploy_time: I64
    deploy_service: I64  # crash service code, -1 unknown, -2 a service no crash has
    deploy_version: I64

    @classmethod
    def build(
        cls,
        crashes: CrashTable,
        exposure: ExposureTable | None,
        index: ExposureIndex | None,
        deploys: Deploys | None,
    ) -> VersionHistory:
        width = len(crashes.version.vocab) + 1
        keys, counts, first = _version_table(crashes, width)
        d_time = np.zeros(0, dtype=np.int64)
        d_svc = np.zeros(0, dtype=np.int64)
        d_ver = np.zeros(0, dtype=np.int64)
        if deploys is not None and len(deploys):
            s_idx = {n: i for i, n in enumerate(crashes.service.vocab)}
            v_idx = {n: i for i, n in enumerate(crashes.version.vocab)}
            # -2: a deploy of a service/version no crash has; -1 (last entry): unknown
            s_tab = np.array([s_idx.get(x, -2) for x in deploys.service.vocab] + [-1], np.int64)
            v_tab = np.array([v_idx.get(x, -2) for x in deploys.version.vocab] + [-1], np.int64)
            d_time = deploys.time_us
            d_svc = s_tab[deploys.service.codes]
            d_ver = v_tab[deploys.version.codes]
        return cls(
            versions=crashes.version.vocab,
            n_services=len(crashes.service.vocab),
            intro_us=_version_intro(crashes, exposure, index, deploys),
            stratum_hours=None if index is None else index.stratum_hours,
            keys=keys,
            counts=counts,
            first_us=first,
            width=width,
            deploy_time=d_time,
            deploy_service=d_svc,
            deploy_version=d_ver,
        )

    def crashes_by_version(self, p: int) -> dict[int, int]:
        """Crashes of population ``p`` per version code (-1: unknown)."""
        lo = int(np.searchsorted(self.keys, p * self.width))
        hi = int(np.searchsorted(self.keys, (p + 1) * self.width))
        return {
            int(k % self.width) - 1: int(c)
            for k, c in zip(self.keys[lo:hi].tolist(), self.counts[lo:hi].tolist(), strict=True)
        }

    def hours(self, svc: int, version: int) -> float:
        """Exposure-hours of ``version`` of service ``svc`` (0 without exposure)."""
        if self.stratum_hours is None or svc < 0:
            return 0.0
        n_v = max(len(self.versions), 1)
        return float(self.stratum_hours[1 + self.n_services + svc * n_v + version])

    def of_service(self, svc: int) -> list[int]:
        """Versions of service ``svc`` in order of introduction."""
        return [v for _, v in sorted((t, v) for (s, v), t in self.intro_us.items() if s == svc)]

    def previous(self, svc: int, version: int) -> int | None:
        """The version of ``svc`` introduced last before ``version``."""
        mine = self.intro_us.get((svc, version))
        if mine is None:
            return None
        earlier = [(t, v) for (s, v), t in self.intro_us.items() if s == svc and t < mine]
        return max(earlier)[1] if earlier else None

    def first_crash(self, p: int, version: int) -> int:
        """Time (µs) of population ``p``'s first crash in ``version`` (else its first crash)."""
        key = p * self.width + version + 1
        i = int(np.searchsorted(self.keys, key))
        if i < len(self.keys) and self.keys[i] == key:
            return int(self.first_us[i])
        lo = int(np.searchsorted(self.keys, p * self.width))
        hi = int(np.searchsorted(self.keys, (p + 1) * self.width))
        return int(self.first_us[lo:hi].min())

    def aligned_deploy(self, svc: int, version: int, anchor_us: int, window_us: int) -> int | None:
        """The deploy of (``svc``, ``version``) nearest ``anchor_us``, within ``window_us``
        before it or a sixth of that after (deploy records can lag the rollout a little)."""
        if not self.deploy_time.size:
            return None
        ok = (self.deploy_version == version) & (
            (svc < 0) | (self.deploy_service == -1) | (self.deploy_service == svc)
        )
        if not ok.any():
            return None
        times = self.deploy_time[ok]
        idx = nearest_deploy(times, anchor_us, before_us=window_us, after_us=window_us // 6)
        return None if idx is None else int(times[idx])


@dataclass(frozen=True, slots=True)
class OnsetFinding:
    """A population's onset (or ``None``), the sentence that makes it a version regression
    (``version_evidence``), the first version it appears in, and, without an onset, a sentence
    saying so."""

    onset: Onset | None
    version_evidence: str | None
    first_version: str | None
    note: str | None


def population_onset(
    p: int,
    *,
    crashes: int,
    service: int,
    changepoint: Changepoint,
    history: VersionHistory,
    params: AnalysisParams,
) -> OnsetFinding:
    """Onset of population ``p`` (``crashes`` crashes, dominant service code ``service``)."""
    cp = changepoint
    vers = history.crashes_by_version(p)
    ordered = sorted(
        (history.intro_us.get((service, v), NEVER), v, k) for v, k in vers.items() if v >= 0
    )
    first = next(
        (v for _, v, k in ordered if k >= max(1, params.version_min_share * crashes)), None
    )
    cp_ok = bool(
        cp.p_value[p] <= params.onset_alpha
        and cp.ratio[p] >= params.onset_min_ratio
        and cp.after[p] >= params.min_crashes
    )
    absent_p = None
    prev_name = None
    absent_words = ""
    if first is not None and history.stratum_hours is not None and service >= 0:
        prev = history.previous(service, first)
        hours_new = history.hours(service, first)
        hours_prev = history.hours(service, prev) if prev is not None else 0.0
        if prev is not None and hours_prev > 0 and hours_new > 0:
            k_new, k_prev = vers.get(first, 0), vers.get(prev, 0)
            absent_p = float(absent_before(k_prev, k_new, hours_new, hours_prev)[()])
            prev_name = history.versions[prev]
            absent_words = (
                f"First seen in version {history.versions[first]} ({k_new} crashes in "
                f"{hours_new:.0f} exposure-hours); version {prev_name} had {k_prev} in "
                f"{hours_prev:.0f} h where {k_new / hours_new * hours_prev:.1f} were expected "
                f"at the new version's rate (Poisson P(X<={k_prev})={absent_p:.2g})"
            )
    deploy_us = None
    if first is not None:
        anchor = int(cp.time_us[p]) if cp_ok else history.first_crash(p, first)
        window = int(params.deploy_window_hours * 3.6e9)
        deploy_us = history.aligned_deploy(service, first, anchor, window)
    version_ok = absent_p is not None and absent_p <= params.onset_alpha
    first_name = None if first is None else history.versions[first]
    if not (cp_ok or version_ok):
        if first_name is None:
            return OnsetFinding(None, None, None, None)
        words = (
            f"No onset: no significant rate change point (Poisson LLR {float(cp.llr[p]):.1f}, "
            f"Bonferroni p={float(cp.p_value[p]):.2g}); first seen in version {first_name}"
        )
        words += f"; {absent_words}." if absent_words else "."
        return OnsetFinding(None, None, first_name, words)
    cp_time = int(cp.time_us[p]) if cp_ok else None
    if deploy_us is not None:
        time_us = deploy_us
    elif cp_time is not None:
        time_us = cp_time
    else:
        time_us = history.first_crash(p, first if first is not None else -1)
    onset = Onset(
        time_us=time_us,
        version=first_name,
        changepoint_us=cp_time,
        deploy_us=deploy_us,
        p_value=float(cp.p_value[p]) if cp_ok else None,
        rate_ratio=float(cp.ratio[p]) if cp_ok and np.isfinite(cp.ratio[p]) else None,
        previous_version=prev_name,
        absent_p_value=absent_p,
    )
    if not (version_ok or deploy_us is not None):
        return OnsetFinding(onset, None, first_name, None)
    parts = [absent_words] if absent_words else []
    if cp_time is not None:
        ratio = "" if onset.rate_ratio is None else f" (rate ×{onset.rate_ratio:.1f})"
        parts.append(
            f"rate change point at {iso_time(cp_time)}{ratio}, Poisson likelihood ratio "
            f"against exposure, Bonferroni p={float(cp.p_value[p]):.2g}"
        )
    if deploy_us is not None:
        parts.append(
            f"onset aligns with the deploy of version {first_name} at {iso_time(deploy_us)} "
            f"(within {params.deploy_window_hours:g} h)"
        )
    text = "; ".join(parts)
    return OnsetFinding(
        onset, f"Version regression: {text[0].lower() + text[1:]}.", first_name, None
    )


def _version_table(crashes: CrashTable, width: int) -> tuple[I64, I64, I64]:
    """Distinct ``population * width + version + 1`` keys (sorted), their crash counts and
    first crash times (µs)."""
    key = pair_key(crashes.population.codes, crashes.version.codes.astype(np.int64) + 1, width)
    size = len(crashes.population.vocab) * width
    if size <= 20_000_000:
        counts = np.bincount(key, minlength=size)
        first = np.full(size, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, key, crashes.time_us)
        keys = np.flatnonzero(counts).astype(np.int64)
        return keys, counts[keys].astype(np.int64), first[keys]
    g = Groups.of(key)
    first_g = np.minimum.reduceat(crashes.time_us[g.order], g.starts) if len(g) else g.keys
    return g.keys, g.counts, first_g.astype(np.int64)


def _version_intro(
    crashes: CrashTable,
    exposure: ExposureTable | None,
    index: ExposureIndex | None,
    deploys: Deploys | None,
) -> dict[tuple[int, int], int]:
    """When each (service, version) of the crash vocabulary first ran, in µs: its earliest
    exposure start, else its earliest deploy, else its earliest crash."""
    intro: dict[tuple[int, int], int] = {}
    width = max(len(crashes.version.vocab), 1)
    if exposure is not None and index is not None:
        s, v = index.exposure_service, index.exposure_version
        ok = (s >= 0) & (v >= 0)
        if ok.any():
            g = Groups.of(pair_key(s[ok], v[ok], width))
            first = np.minimum.reduceat(exposure.start_us[ok][g.order], g.starts)
            for k, t in zip(g.keys.tolist(), first.tolist(), strict=True):
                intro[(k // width, k % width)] = int(t)
    if deploys is not None and len(deploys):
        s_index = {n: i for i, n in enumerate(crashes.service.vocab)}
        v_index = {n: i for i, n in enumerate(crashes.version.vocab)}
        from_deploys: dict[tuple[int, int], int] = {}
        rows = zip(
            deploys.time_us.tolist(),
            deploys.service.codes.tolist(),
            deploys.version.codes.tolist(),
            strict=True,
        )
        for t, s_code, v_code in rows:
            sv = (
                s_index.get(deploys.service.vocab[s_code], -1) if s_code >= 0 else -1,
                v_index.get(deploys.version.vocab[v_code], -1),
            )
            if sv[0] >= 0 and sv[1] >= 0:
                from_deploys[sv] = min(int(t), from_deploys.get(sv, int(t)))
        for sv, t in from_deploys.items():
            intro.setdefault(sv, t)
    ok = (crashes.service.codes >= 0) & (crashes.version.codes >= 0)
    if ok.any():
        g = Groups.of(pair_key(crashes.service.codes[ok], crashes.version.codes[ok], width))
        first = np.minimum.reduceat(crashes.time_us[ok][g.order], g.starts)
        for k, t in zip(g.keys.tolist(), first.tolist(), strict=True):
            intro.setdefault((k // width, k % width), int(t))
    return intro
