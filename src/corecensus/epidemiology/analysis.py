"""``analyze``: crash populations -> verdicts, suspects, onsets and flagged hosts.

The pipeline, each step vectorized over all crashes (no loop per crash; one Python loop per
population to write its finding):

1. group crashes by (population, host) with one sort;
2. scan hosts for a defective CPU (:mod:`~corecensus.epidemiology.hostscan`);
3. with exposure, observed against expected per (population, host) and per host
   (:mod:`~corecensus.epidemiology.rates`);
4. change points against exposure, versions and deploys (:mod:`~corecensus.epidemiology.onset`);
5. disproportionality of CPU model, microcode, kernel and version
   (:mod:`~corecensus.epidemiology.disproportionality`);
6. per population: facts -> ordered verdict rules (:mod:`~corecensus.epidemiology.verdict`),
   mixtures (:mod:`~corecensus.epidemiology.mixture`), evidence sentences.

Without exposure everything that needs rates is skipped and says so; the host scan, CPU
concentration, anomaly tests, change points (against elapsed time) and disproportionality
still run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from corecensus.epidemiology.concentration import infer_cpu_counts, max_cell_pvalue, modal_cells
from corecensus.epidemiology.disproportionality import AttributeCells, attribute_cells
from corecensus.epidemiology.exposure import ExposureIndex, build_exposure_index
from corecensus.epidemiology.findings import (
    Analysis,
    AttributeSignal,
    HostFinding,
    HostKind,
    Onset,
    PopulationFinding,
    PopulationInfo,
    Split,
    Suspect,
    Verdict,
    iso_time,
)
from corecensus.epidemiology.hostscan import HostScan, ScanSettings, scan_hosts
from corecensus.epidemiology.mixture import anomaly_split, host_split, version_split
from corecensus.epidemiology.multiplicity import benjamini_hochberg
from corecensus.epidemiology.onset import (
    CumulativeExposure,
    PopulationTimeline,
    absent_before,
    nearest_deploy,
    population_timeline,
)
from corecensus.epidemiology.params import AnalysisParams
from corecensus.epidemiology.rates import HostRates, PairRates, host_rates, pair_rates
from corecensus.epidemiology.segments import Groups, pair_key
from corecensus.epidemiology.table import CrashTable, Deploys, ExposureTable
from corecensus.epidemiology.verdict import (
    HostFacts,
    PopulationFacts,
    decide,
    onset_sentence,
)
from corecensus.model import ANOMALY_NAMES

__all__ = ["analyze"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

_ATTRIBUTES = ("cpu_model", "microcode", "kernel", "version")


def analyze(
    crashes: CrashTable,
    exposure: ExposureTable | None = None,
    deploys: Deploys | None = None,
    population_info: Mapping[str, PopulationInfo] | None = None,
    *,
    params: AnalysisParams = AnalysisParams(),  # noqa: B008 - frozen, so sharing is safe
) -> Analysis:
    """Analyze crash populations; see the module docstring and docs/statistics.md."""
    ctx = _Context.build(crashes, exposure, deploys, params)
    info = population_info or {}
    findings = [ctx.population_finding(p, info.get(ctx.pop_names[p])) for p in ctx.nonempty]
    order = {Verdict.HARDWARE: 0, Verdict.SOFTWARE: 1, Verdict.INCONCLUSIVE: 2}
    findings.sort(key=lambda f: (order[f.verdict], -f.crashes, f.id))
    return Analysis(
        populations=tuple(findings),
        hosts=ctx.host_findings(),
        rates_available=ctx.rates is not None,
        notes=tuple(ctx.notes),
        crashes=len(crashes),
        host_names=ctx.host_names,
        scan=ctx.scan,
    )


@dataclass(eq=False)
class _Context:
    """Everything computed once for the whole table, read by the per-population loop."""

    crashes: CrashTable
    params: AnalysisParams
    deploys: Deploys | None
    index: ExposureIndex | None
    host_names: tuple[str, ...]
    pop_names: tuple[str, ...]
    n_hosts: int
    n_pops: int
    hardware: NDArray[np.bool_]
    pairs: Groups
    pair_pop: I64
    pair_host: I64
    cpus: I64
    scan: HostScan
    rates: PairRates | None
    host_rates: HostRates | None
    timeline: PopulationTimeline
    attributes: dict[int, list[AttributeSignal]]
    notes: list[str]
    pop_crashes: I64
    pop_hosts: I64
    pop_hardware: I64
    pop_bits: I64
    top_pair: I64
    excess: NDArray[np.bool_]
    excess_count: I64
    cand_start: I64
    cand_pairs: I64
    cand_cpu: I64
    cand_cpu_count: I64
    cand_cpu_p: F64
    cand_hw: I64
    cand_on_flag: I64
    top_bits: I64
    ver_keys: I64
    ver_counts: I64
    ver_width: int
    ver_first_us: I64
    deploy_service: I64
    deploy_version: I64
    intro_us: dict[tuple[int, int], int]
    nonempty: list[int]

    @classmethod
    def build(
        cls,
        crashes: CrashTable,
        exposure: ExposureTable | None,
        deploys: Deploys | None,
        params: AnalysisParams,
    ) -> _Context:
        notes: list[str] = []
        has_rates = exposure is not None and len(exposure) > 0 and float(exposure.hours.sum()) > 0
        index = build_exposure_index(crashes, exposure) if has_rates and exposure else None
        if index is None:
            notes.append(
                "Rates unavailable: no exposure was given, so no crashes-per-exposure-hour "
                "rates, Poisson excess tests or dispersion tests were computed; host shares of "
                "crashes stand in for them."
            )
        host_names = index.hosts if index is not None else crashes.hosts
        n_hosts = len(host_names)
        n_pops = len(crashes.populations)
        pop = crashes.population
        hardware = (crashes.anomaly_mask & np.uint16(params.hardware_mask)) != 0
        pairs = Groups.of(pair_key(pop, crashes.host, max(n_hosts, 1)))
        pair_pop = pairs.keys // max(n_hosts, 1)
        pair_host = pairs.keys % max(n_hosts, 1)

        given = None
        if crashes.host_cpus is not None:
            given = np.zeros(n_hosts, dtype=np.int64)
            given[: len(crashes.host_cpus)] = crashes.host_cpus
        cpus = infer_cpu_counts(
            crashes.host,
            crashes.cpu,
            crashes.cpu_model,
            n_hosts,
            host_cpus=given,
            default=params.default_cpus,
        )
        t_rel = crashes.time_us - (int(crashes.time_us.min()) if len(crashes) else 0)
        time_order = np.argsort(t_rel, kind="stable").astype(np.int64)
        scan = scan_hosts(
            time_order=time_order,
            host=crashes.host,
            cpu=crashes.cpu,
            time_us=crashes.time_us,
            hardware=hardware,
            pairs=pairs,
            n_hosts=n_hosts,
            cpus=cpus,
            settings=ScanSettings(
                host_alpha=params.host_alpha,
                stream_alpha=params.stream_alpha,
                anomaly_prior_strength=params.anomaly_prior_strength,
                explain_min_rate=params.explain_min_rate,
                explain_min_hosts=params.explain_min_hosts,
                streaming=params.streaming,
            ),
        )
        rates = hrates = None
        curve = None
        if index is not None and exposure is not None:
            rates = pair_rates(
                index,
                pair_pop=pair_pop,
                pair_host=pair_host,
                pair_count=pairs.counts,
                crash_pop=pop,
                n_pops=n_pops,
                mid_p=params.mid_p,
            )
            hrates = host_rates(index, crashes.host, mid_p=params.mid_p)
            curve = CumulativeExposure(
                exposure.start_us, exposure.end_us, exposure.hours, index.exposure_service
            )
            crashed = np.bincount(crashes.host, minlength=len(crashes.hosts)) > 0
            unexposed = index.host_hours[: len(crashes.hosts)] <= 0
            missing = int(np.count_nonzero(crashed & unexposed))
            if missing:
                notes.append(
                    f"{missing} host(s) have crashes but no exposure rows; their rates are "
                    "unavailable and they are left out of the Poisson tests."
                )
        timeline = population_timeline(
            time_us=crashes.time_us,
            population=pop,
            service=crashes.service,
            n_pops=n_pops,
            time_order=time_order,
            curve=curve,
            min_after=params.min_crashes,
        )

        pop_crashes = np.bincount(pop, minlength=n_pops).astype(np.int64)
        pop_hosts = np.bincount(pair_pop, minlength=n_pops).astype(np.int64)
        pop_hardware = np.bincount(pop[hardware], minlength=n_pops).astype(np.int64)
        n_bits = len(ANOMALY_NAMES)
        mask = crashes.anomaly_mask
        bits = np.zeros((n_pops, n_bits + 1), dtype=np.int64)
        bits[:, 0] = pop_hardware
        for b in range(n_bits):
            has = (mask & np.uint16(1 << b)) != 0
            if has.any():
                bits[:, b + 1] = np.bincount(pop[has], minlength=n_pops)

        # top pair of each population
        by_size = np.lexsort((-pairs.counts, pair_pop))
        first = np.ones(by_size.size, dtype=bool)
        first[1:] = pair_pop[by_size][1:] != pair_pop[by_size][:-1]
        top_pair = np.full(n_pops, -1, dtype=np.int64)
        top_pair[pair_pop[by_size[first]]] = by_size[first]

        # hosts in excess of exposure (or, without exposure, a dominant top host)
        if rates is not None:
            excess = (
                (np.nan_to_num(rates.q_value, nan=1.0) <= params.fdr_q)
                & (np.nan_to_num(rates.rate_ratio, nan=0.0) >= params.excess_rate_ratio)
                & (pairs.counts >= 2)
            )
        else:
            excess = np.zeros(len(pairs), dtype=bool)
            tp = top_pair[top_pair >= 0]
            dominant = (pairs.counts[tp] >= params.min_crashes) & (
                pairs.counts[tp] >= params.concentration_share * pop_crashes[pair_pop[tp]]
            )
            excess[tp[dominant]] = True
        excess_count = np.bincount(pair_pop[excess], minlength=n_pops).astype(np.int64)

        # candidate pairs: top pair, the largest few excess pairs, pairs on flagged hosts
        is_cand = np.zeros(len(pairs), dtype=bool)
        is_cand[top_pair[top_pair >= 0]] = True
        is_cand |= scan.flagged[pair_host]
        ex_sorted = by_size[excess[by_size]]
        if ex_sorted.size:
            ex_first = np.ones(ex_sorted.size, dtype=bool)
            ex_first[1:] = pair_pop[ex_sorted][1:] != pair_pop[ex_sorted][:-1]
            starts = np.flatnonzero(ex_first)
            seg = np.cumsum(ex_first) - 1
            rank = np.arange(ex_sorted.size) - starts[seg]
            is_cand[ex_sorted[rank <= params.max_suspect_hosts]] = True
        cand_pairs = np.flatnonzero(is_cand).astype(np.int64)  # sorted by pair = by population
        cand_id = np.full(len(pairs), -1, dtype=np.int64)
        cand_id[cand_pairs] = np.arange(cand_pairs.size)
        crash_cand = cand_id[pairs.inverse]
        sel = crash_cand >= 0
        modal = modal_cells(
            crash_cand[sel], crashes.cpu[sel], cand_pairs.size, tiebreak=hardware[sel]
        )
        cand_cpu_p = max_cell_pvalue(modal.n, modal.top, cpus[pair_host[cand_pairs]])
        cand_hw = np.bincount(crash_cand[sel & hardware], minlength=cand_pairs.size)
        on_flag = sel & scan.flagged[crashes.host] & (crashes.cpu == scan.top_cpu[crashes.host])
        cand_on_flag = np.bincount(crash_cand[on_flag], minlength=cand_pairs.size)
        cand_counts = np.bincount(pair_pop[cand_pairs], minlength=n_pops)
        cand_start = np.concatenate([[0], np.cumsum(cand_counts)]).astype(np.int64)

        # anomaly classes on each population's top host
        on_top = np.zeros(len(pairs), dtype=bool)
        on_top[top_pair[top_pair >= 0]] = True
        crash_on_top = on_top[pairs.inverse]
        top_bits = np.zeros((n_pops, n_bits + 1), dtype=np.int64)
        top_bits[:, 0] = np.bincount(pop[crash_on_top & hardware], minlength=n_pops)
        for b in range(n_bits):
            has = crash_on_top & ((mask & np.uint16(1 << b)) != 0)
            if has.any():
                top_bits[:, b + 1] = np.bincount(pop[has], minlength=n_pops)

        ver_width = len(crashes.versions) + 1
        ver_keys, ver_counts, ver_first_us = _version_table(crashes, ver_width)
        d_svc = np.zeros(0, dtype=np.int64)
        d_ver = np.zeros(0, dtype=np.int64)
        if deploys is not None and len(deploys):
            s_idx = {n: i for i, n in enumerate(crashes.services)}
            v_idx = {n: i for i, n in enumerate(crashes.versions)}
            # -2: a deploy of a service/version no crash has; -1 (last entry): unknown
            s_tab = np.array([s_idx.get(x, -2) for x in deploys.services] + [-1], np.int64)
            v_tab = np.array([v_idx.get(x, -2) for x in deploys.versions] + [-1], np.int64)
            d_svc = s_tab[deploys.service]
            d_ver = v_tab[deploys.version]

        attributes = _attribute_signals(crashes, pairs, pair_pop, n_pops, params)
        return cls(
            crashes=crashes,
            params=params,
            deploys=deploys,
            index=index,
            host_names=host_names,
            pop_names=crashes.populations,
            n_hosts=n_hosts,
            n_pops=n_pops,
            hardware=hardware,
            pairs=pairs,
            pair_pop=pair_pop,
            pair_host=pair_host,
            cpus=cpus,
            scan=scan,
            rates=rates,
            host_rates=hrates,
            timeline=timeline,
            attributes=attributes,
            notes=notes,
            pop_crashes=pop_crashes,
            pop_hosts=pop_hosts,
            pop_hardware=pop_hardware,
            pop_bits=bits,
            top_pair=top_pair,
            excess=excess,
            excess_count=excess_count,
            cand_start=cand_start,
            cand_pairs=cand_pairs,
            cand_cpu=modal.cell,
            cand_cpu_count=modal.top,
            cand_cpu_p=cand_cpu_p,
            cand_hw=cand_hw.astype(np.int64),
            cand_on_flag=cand_on_flag.astype(np.int64),
            top_bits=top_bits,
            ver_keys=ver_keys,
            ver_counts=ver_counts,
            ver_width=ver_width,
            ver_first_us=ver_first_us.astype(np.int64),
            deploy_service=d_svc,
            deploy_version=d_ver,
            intro_us=_version_intro(crashes, exposure, index, deploys),
            nonempty=np.flatnonzero(pop_crashes > 0).tolist(),
        )

    # -- per population ----------------------------------------------------------------------

    def population_finding(self, p: int, info: PopulationInfo | None) -> PopulationFinding:
        params = self.params
        key = self.pop_names[p]
        n = int(self.pop_crashes[p])
        candidates = self._candidates(p)
        top = self.top_pair[p]
        top_share = float(self.pairs.counts[top]) / n if n else 0.0
        onset, version_evidence, first_version, previous_sentence = self._onset(p)
        disp_index = disp_p = None
        if self.rates is not None:
            d = self.rates.dispersion
            disp_index = None if not np.isfinite(d.index[p]) else float(d.index[p])
            disp_p = float(d.p_value[p])
        facts = PopulationFacts(
            key=key,
            crashes=n,
            hosts=int(self.pop_hosts[p]),
            hardware=int(self.pop_hardware[p]),
            rates_available=self.rates is not None,
            candidates=candidates,
            top_share=top_share,
            excess_hosts=int(self.excess_count[p]),
            dispersion_index=disp_index,
            dispersion_p=disp_p,
            onset=onset,
            version_evidence=version_evidence,
        )
        decision, _rule = decide(facts, params)
        evidence = list(decision.evidence)
        if onset is not None and version_evidence is None:
            evidence.append(onset_sentence(onset))
        elif onset is None and previous_sentence:
            evidence.append(previous_sentence)
        signals = self.attributes.get(p, [])
        evidence += [_signal_sentence(s) for s in signals]
        splits = self._splits(p, facts, decision.verdict)
        evidence += [s.evidence for s in splits]
        if self.rates is None:
            evidence.append(
                "Rates unavailable: no exposure given, so host shares of crashes stand in for "
                "crashes per exposure-hour."
            )
        names = [ANOMALY_NAMES[b] for b in range(len(ANOMALY_NAMES)) if self.pop_bits[p, b + 1] > 0]
        counts = {name: int(self.pop_bits[p, ANOMALY_NAMES.index(name) + 1]) for name in names}
        if names:
            evidence.append(
                "Anomalies: "
                + ", ".join(f"{k} ×{v}" for k, v in counts.items())
                + f" in {n} crashes."
            )
        suspects = tuple(self._suspect(h) for h in decision.suspects)
        recs: list[str] = []
        if decision.verdict is Verdict.HARDWARE:
            recs = _recommendations([(s.host, s.cpu) for s in suspects])
        return PopulationFinding(
            id=key,
            signature=info.signature if info is not None else key,
            anomalies=tuple(names),
            top_frames=info.top_frames if info is not None else (),
            crashes=n,
            hosts=int(self.pop_hosts[p]),
            verdict=decision.verdict,
            suspects=suspects,
            onset=onset,
            evidence=tuple(evidence),
            anomaly_counts=counts,
            top_hosts=tuple(
                (h.name, h.crashes) for h in sorted(candidates, key=lambda h: -h.crashes)[:5]
            ),
            first_version=first_version,
            attributes=tuple(signals),
            splits=tuple(splits),
            dispersion_index=disp_index,
            rates_available=self.rates is not None,
            recommendations=tuple(recs),
        )

    def _candidates(self, p: int) -> tuple[HostFacts, ...]:
        out = []
        r = self.rates
        for c in range(int(self.cand_start[p]), int(self.cand_start[p + 1])):
            pair = int(self.cand_pairs[c])
            h = int(self.pair_host[pair])
            cpu = int(self.cand_cpu[c])
            expected = p_value = q_value = rr = None
            if r is not None and r.expected[pair] > 0:
                expected = float(r.expected[pair])
                p_value = float(r.p_value[pair])
                q_value = float(r.q_value[pair])
                rr = float(r.rate_ratio[pair])
            out.append(
                HostFacts(
                    pair=pair,
                    host=h,
                    name=self.host_names[h],
                    crashes=int(self.pairs.counts[pair]),
                    expected=expected,
                    p_value=p_value,
                    q_value=q_value,
                    rate_ratio=rr,
                    cpu=cpu if cpu >= 0 else None,
                    cpu_crashes=int(self.cand_cpu_count[c]),
                    cpus=int(self.cpus[h]),
                    cpu_p_value=float(self.cand_cpu_p[c]),
                    hardware=int(self.cand_hw[c]),
                    flagged=bool(self.scan.flagged[h]),
                    excess=bool(self.excess[pair]),
                    on_flagged_cpu=int(self.cand_on_flag[c]),
                )
            )
        return tuple(out)

    def _suspect_cpu(self, h: HostFacts) -> tuple[int | None, int, float | None]:
        """The CPU to name for a host of a population: its concentration within the population,
        else the host scan's (when significant), with count and p-value."""
        scan = self.scan
        if h.cpu is not None and h.cpu_p_value <= self.params.cpu_alpha:
            return h.cpu, h.cpu_crashes, h.cpu_p_value
        if scan.flagged[h.host] and scan.p_cpu[h.host] <= self.params.cpu_alpha:
            return int(scan.top_cpu[h.host]), int(scan.top_count[h.host]), float(scan.p_cpu[h.host])
        return None, h.cpu_crashes, h.cpu_p_value

    def _suspect(self, h: HostFacts) -> Suspect:
        scan = self.scan
        cpu, cpu_crashes, cpu_p = self._suspect_cpu(h)
        p_value = h.p_value if h.p_value is not None else float(scan.p_value[h.host])
        return Suspect(
            host=h.name,
            cpu=cpu,
            crashes=h.crashes,
            expected=h.expected,
            p_value=p_value,
            cpu_crashes=cpu_crashes,
            cpu_p_value=cpu_p,
            crash_ids=self._crash_ids(h.pair),
        )

    def _crash_ids(self, pair: int) -> tuple[str, ...]:
        """Ids of (up to ``max_crash_ids``) crashes of a (population, host) pair."""
        ids = self.crashes.crash_id
        if ids is None or self.params.max_crash_ids <= 0 or pair < 0:
            return ()
        lo = int(self.pairs.starts[pair])
        k = min(int(self.pairs.counts[pair]), self.params.max_crash_ids)
        return tuple(str(x) for x in ids[np.sort(self.pairs.order[lo : lo + k])])

    def _onset(self, p: int) -> tuple[Onset | None, str | None, str | None, str | None]:
        """(onset, version evidence sentence, first version, sentence when no onset)."""
        params = self.params
        cp = self.timeline.changepoint
        svc = int(self.timeline.stratum[p])
        vers = self._version_counts(p)
        # versions of the dominant service, in order of introduction
        intro = [(self.intro_us.get((svc, v), 2**62), v, n) for v, n in vers.items() if v >= 0]
        intro.sort()
        n = int(self.pop_crashes[p])
        first_version = None
        for _, v, k in intro:
            if k >= max(1, params.version_min_share * n):
                first_version = v
                break
        cp_ok = (
            cp.p_value[p] <= params.onset_alpha
            and cp.ratio[p] >= params.onset_min_ratio
            and cp.after[p] >= params.min_crashes
        )
        absent_p = None
        prev_name = None
        sentence_absent = ""
        if first_version is not None and self.index is not None and svc >= 0:
            prev = self._previous_version(svc, first_version)
            if prev is not None:
                hours_new = self._hours(svc, first_version)
                hours_prev = self._hours(svc, prev)
                k_new = vers.get(first_version, 0)
                k_prev = vers.get(prev, 0)
                if hours_prev > 0 and hours_new > 0:
                    absent_p = float(absent_before(k_prev, k_new, hours_new, hours_prev))
                    expected_prev = k_new / hours_new * hours_prev
                    prev_name = self.crashes.versions[prev]
                    sentence_absent = (
                        f"First seen in version {self.crashes.versions[first_version]} "
                        f"({k_new} crashes in {hours_new:.0f} exposure-hours); version "
                        f"{prev_name} had {k_prev} in {hours_prev:.0f} h where "
                        f"{expected_prev:.1f} were expected at the new version's rate "
                        f"(Poisson P(X<={k_prev})={absent_p:.2g})"
                    )
        deploy_us = None
        if first_version is not None and self.deploys is not None:
            anchor = int(cp.time_us[p]) if cp_ok else self._first_crash_in_version(p, first_version)
            deploy_us = self._aligned_deploy(svc, first_version, anchor)
        version_ok = absent_p is not None and absent_p <= params.onset_alpha
        if not (cp_ok or version_ok):
            if first_version is None:
                return None, None, None, None
            fv = self.crashes.versions[first_version]
            words = (
                f"No onset: no significant rate change point (Poisson LLR "
                f"{float(cp.llr[p]):.1f}, Bonferroni p={float(cp.p_value[p]):.2g}); first seen "
                f"in version {fv}"
            )
            words += "." if not sentence_absent else f"; {sentence_absent}."
            return None, None, fv, words
        fv_name = None if first_version is None else self.crashes.versions[first_version]
        cp_time = int(cp.time_us[p]) if cp_ok else None
        if deploy_us is not None:
            time_us = deploy_us
        elif cp_time is not None:
            time_us = cp_time
        else:
            time_us = self._first_crash_in_version(p, first_version or 0)
        onset = Onset(
            time_us=time_us,
            version=fv_name,
            changepoint_us=cp_time,
            deploy_us=deploy_us,
            p_value=float(cp.p_value[p]) if cp_ok else None,
            rate_ratio=float(cp.ratio[p]) if cp_ok and np.isfinite(cp.ratio[p]) else None,
            previous_version=prev_name,
            absent_p_value=absent_p,
        )
        if not (version_ok or deploy_us is not None):
            return onset, None, fv_name, None
        parts = []
        if sentence_absent:
            parts.append(sentence_absent)
        if cp_time is not None:
            ratio = "" if onset.rate_ratio is None else f" (rate ×{onset.rate_ratio:.1f})"
            parts.append(
                f"rate change point at {iso_time(cp_time)}{ratio}, Poisson likelihood ratio "
                f"against exposure, Bonferroni p={float(cp.p_value[p]):.2g}"
            )
        if deploy_us is not None:
            parts.append(
                f"onset aligns with the deploy of version {fv_name} at {iso_time(deploy_us)} "
                f"(within {params.deploy_window_hours:g} h)"
            )
        text = "; ".join(parts)
        return onset, f"Version regression: {text[0].lower() + text[1:]}.", fv_name, None

    def _version_counts(self, p: int) -> dict[int, int]:
        """Crashes of population ``p`` per version code (-1: unknown)."""
        keys = self.ver_keys
        lo = int(np.searchsorted(keys, p * self.ver_width))
        hi = int(np.searchsorted(keys, (p + 1) * self.ver_width))
        return {
            int(k % self.ver_width) - 1: int(c)
            for k, c in zip(keys[lo:hi].tolist(), self.ver_counts[lo:hi].tolist(), strict=True)
        }

    def _hours(self, svc: int, version: int) -> float:
        assert self.index is not None
        n_s = len(self.crashes.services)
        n_v = max(len(self.crashes.versions), 1)
        return float(self.index.stratum_hours[1 + n_s + svc * n_v + version])

    def _previous_version(self, svc: int, version: int) -> int | None:
        mine = self.intro_us.get((svc, version))
        if mine is None:
            return None
        earlier = [(t, v) for (s, v), t in self.intro_us.items() if s == svc and t < mine]
        return max(earlier)[1] if earlier else None

    def _first_crash_in_version(self, p: int, version: int) -> int:
        keys = self.ver_keys
        key = p * self.ver_width + version + 1
        i = int(np.searchsorted(keys, key))
        if i < len(keys) and keys[i] == key:
            return int(self.ver_first_us[i])
        lo = int(np.searchsorted(keys, p * self.ver_width))
        hi = int(np.searchsorted(keys, (p + 1) * self.ver_width))
        return int(self.ver_first_us[lo:hi].min())

    def _aligned_deploy(self, svc: int, version: int, anchor_us: int) -> int | None:
        d = self.deploys
        if d is None or not len(d):
            return None
        ok = (self.deploy_version == version) & (
            (svc < 0) | (self.deploy_service < 0) | (self.deploy_service == svc)
        )
        if not ok.any():
            return None
        window = int(self.params.deploy_window_hours * 3.6e9)
        idx = nearest_deploy(d.time_us[ok], anchor_us, before_us=window, after_us=window // 6)
        return None if idx is None else int(d.time_us[ok][idx])

    def _splits(self, p: int, facts: PopulationFacts, verdict: Verdict) -> list[Split]:
        params = self.params
        splits: list[Split] = []
        top = int(self.top_pair[p])
        if top >= 0 and verdict is not Verdict.HARDWARE:
            classes = [("hardware-flavoured anomalies", True)] + [
                (name, name in params.hardware_anomalies) for name in ANOMALY_NAMES
            ]
            s = anomaly_split(
                classes=classes,
                in_population=self.pop_bits[p].tolist(),
                on_top_host=self.top_bits[p].tolist(),
                crashes=facts.crashes,
                top_host=self.host_names[int(self.pair_host[top])],
                top_host_crashes=int(self.pairs.counts[top]),
                alpha=params.split_alpha,
            )
            if s is not None:
                splits.append(s)
        # crashes of flagged hosts on their flagged CPU (the rest of such a host's crashes in
        # this population are ordinary background)
        flagged = [
            (h.name, int(self.scan.top_cpu[h.host]), h.on_flagged_cpu)
            for h in facts.candidates
            if h.flagged and h.on_flagged_cpu
        ]
        s = host_split(flagged=flagged, crashes=facts.crashes, verdict=verdict)
        if s is not None:
            splits.append(s)
        svc = int(self.timeline.stratum[p])
        if self.index is not None and svc >= 0:
            vers = {v: k for v, k in self._version_counts(p).items() if v >= 0}
            all_versions = [v for (s_, v) in self.intro_us if s_ == svc]
            names = [self.crashes.versions[v] for v in all_versions]
            counts = [vers.get(v, 0) for v in all_versions]
            hours = [self._hours(svc, v) for v in all_versions]
            s = version_split(
                versions=names,
                counts=counts,
                hours=hours,
                alpha=params.split_alpha,
                min_ratio=params.onset_min_ratio,
            )
            if s is not None:
                splits.append(s)
        return splits

    # -- hosts -------------------------------------------------------------------------------

    def host_findings(self) -> tuple[HostFinding, ...]:
        scan = self.scan
        params = self.params
        out: list[HostFinding] = []
        pops_per_host = np.bincount(self.pair_host, minlength=self.n_hosts)
        for h in np.flatnonzero(scan.flagged).tolist():
            name = self.host_names[h]
            cpu = int(scan.top_cpu[h]) if scan.p_cpu[h] <= params.cpu_alpha else None
            reasons = [
                f"{int(scan.top_count[h])} of {int(scan.known_cpu[h])} crashes with a known CPU "
                f"are on CPU {int(scan.top_cpu[h])} (largest-cell multinomial test against "
                f"uniform over {int(scan.cpus[h])} CPUs, p={float(scan.p_cpu[h]):.2g}).",
                f"{int(scan.top_anomalous[h])} of the crashes on CPU {int(scan.top_cpu[h])} "
                f"carry hardware-flavoured anomalies where {float(scan.top_expected[h]):.2g} were "
                f"expected (Poisson p={float(scan.p_top_anomaly[h]):.2g}); on the whole host "
                f"{int(scan.anomalous[h])} where {float(scan.expected_anomalous[h]):.2g} were "
                f"expected (p={float(scan.p_anomaly[h]):.2g}); expectations from each "
                "population's anomaly rate on other hosts, "
                f"{int(scan.explained[h])} crashes of anomaly-heavy populations spread over many "
                "hosts explained away.",
                "Combined (Fisher's method, CPU concentration with the anomalies on that CPU or "
                f"on the host, Bonferroni x2) p={float(scan.p_value[h]):.2g} <= "
                f"{params.host_alpha:g}, the per-host false-alarm budget.",
            ]
            if scan.first_alarm_us[h] >= 0:
                reasons.append(
                    f"First alarm at {iso_time(int(scan.first_alarm_us[h]))}, after "
                    f"{int(scan.alarm_crashes[h])} of its crashes (the same test after each crash)."
                )
            rr = None
            if self.host_rates is not None and np.isfinite(self.host_rates.rate_ratio[h]):
                rr = float(self.host_rates.rate_ratio[h])
            out.append(
                HostFinding(
                    host=name,
                    kind=HostKind.HARDWARE,
                    cpu=cpu,
                    crashes=int(scan.crashes[h]),
                    p_value=float(scan.p_value[h]),
                    reasons=tuple(reasons),
                    first_alarm_us=int(scan.first_alarm_us[h])
                    if scan.first_alarm_us[h] >= 0
                    else None,
                    cpu_crashes=int(scan.top_count[h]),
                    anomalous=int(scan.anomalous[h]),
                    expected_anomalous=float(scan.expected_anomalous[h]),
                    rate_ratio=rr,
                    populations=int(pops_per_host[h]),
                    recommendations=tuple(_recommendations([(name, cpu)])),
                )
            )
        out.sort(key=lambda f: f.p_value)
        hr = self.host_rates
        if hr is not None:
            hot = (np.nan_to_num(hr.q_value, nan=1.0) <= params.fdr_q) & (
                np.nan_to_num(hr.rate_ratio, nan=0.0) >= params.high_rate_ratio
            )
            hot &= ~scan.flagged
            rows = []
            for h in np.flatnonzero(hot).tolist():
                rows.append(
                    HostFinding(
                        host=self.host_names[h],
                        kind=HostKind.HIGH_RATE,
                        cpu=None,
                        crashes=int(hr.observed[h]),
                        p_value=float(hr.p_value[h]),
                        reasons=(
                            f"{int(hr.observed[h])} crashes where {float(hr.expected[h]):.2g} "
                            f"were expected from its exposure (exact Poisson p="
                            f"{float(hr.p_value[h]):.2g}, BH q={float(hr.q_value[h]):.2g}); "
                            f"Gamma-Poisson shrunken rate ratio {float(hr.rate_ratio[h]):.1f}.",
                            f"Spread over {int(pops_per_host[h])} populations with no CPU "
                            f"concentration (p={float(scan.p_cpu[h]):.2g}): a busy or "
                            "unhealthy host, not a CPU signal; not flagged as hardware.",
                        ),
                        rate_ratio=float(hr.rate_ratio[h]),
                        populations=int(pops_per_host[h]),
                    )
                )
            rows.sort(key=lambda f: -(f.rate_ratio or 0.0))
            out += rows
        return tuple(out)


def _recommendations(suspects: list[tuple[str, int | None]]) -> list[str]:
    recs = []
    for host, cpu in suspects:
        if cpu is not None:
            recs.append(f"Screen {host} with `corecensus screen`, CPU {cpu} first.")
            recs.append(
                f"Denylist CPU {cpu} on {host} until it passes "
                f"(echo 0 > /sys/devices/system/cpu/cpu{cpu}/online, or exclude it from "
                "the service's CPU set)."
            )
        else:
            recs.append(f"Screen {host} with `corecensus screen` (all CPUs); drain it if it fails.")
    return recs


def _signal_sentence(s: AttributeSignal) -> str:
    return (
        f"Disproportionality: {s.attribute} {s.value} in {s.crashes} crashes on {s.hosts} "
        f"hosts, PRR {s.prr:.1f} (95% CI {s.prr_ci[0]:.1f}-{s.prr_ci[1]:.1f}), ROR {s.ror:.1f} "
        f"(95% CI {s.ror_ci[0]:.1f}-{s.ror_ci[1]:.1f}), crash-level p={s.p_value:.2g}; "
        f"host-level binomial p={s.host_p_value:.2g}, BH q={s.q_value:.2g}."
    )


def _attribute_signals(
    crashes: CrashTable, pairs: Groups, pair_pop: I64, n_pops: int, params: AnalysisParams
) -> dict[int, list[AttributeSignal]]:
    rep = pairs.order[pairs.starts]  # one crash per (population, host) pair
    cells: list[AttributeCells] = []
    vocabs = []
    for name in _ATTRIBUTES:
        values = getattr(crashes, name)
        vocab: tuple[str, ...] = getattr(crashes, name + "s")
        if not vocab:
            continue
        cells.append(
            attribute_cells(
                name,
                value=values,
                population=crashes.population,
                n_pops=n_pops,
                n_values=len(vocab),
                pair_pop=pair_pop,
                pair_value=values[rep].astype(np.int64),
            )
        )
        vocabs.append(vocab)
    if not cells:
        return {}
    host_p = np.concatenate([c.host_p_value for c in cells])
    q_all = benjamini_hochberg(host_p)
    out: dict[int, list[AttributeSignal]] = {}
    offset = 0
    for c, vocab in zip(cells, vocabs, strict=True):
        k = c.population.size
        q = q_all[offset : offset + k]
        offset += k
        t = c.table
        signal = (
            (c.crashes >= params.signal_min_crashes)
            & (c.hosts >= params.signal_min_hosts)
            & (t.prr >= params.prr_min)
            & (t.prr_low > 1.0)
            & (t.p_value <= params.fdr_q)
            & (q <= params.fdr_q)
        )
        for i in np.flatnonzero(signal).tolist():
            out.setdefault(int(c.population[i]), []).append(
                AttributeSignal(
                    attribute=c.attribute,
                    value=vocab[int(c.value[i])],
                    crashes=int(c.crashes[i]),
                    hosts=int(c.hosts[i]),
                    prr=float(t.prr[i]),
                    prr_ci=(float(t.prr_low[i]), float(t.prr_high[i])),
                    ror=float(t.ror[i]),
                    ror_ci=(float(t.ror_low[i]), float(t.ror_high[i])),
                    p_value=float(t.p_value[i]),
                    host_p_value=float(c.host_p_value[i]),
                    q_value=float(q[i]),
                    signal=True,
                )
            )
    for signals in out.values():
        signals.sort(key=lambda s: -s.prr)
    return out


def _version_table(crashes: CrashTable, width: int) -> tuple[I64, I64, I64]:
    """Distinct ``population * width + version + 1`` keys (sorted), their crash counts and
    first crash times (µs)."""
    key = pair_key(crashes.population, crashes.version.astype(np.int64) + 1, width)
    size = len(crashes.populations) * width
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
    if exposure is not None and index is not None:
        s, v = index.exposure_service, index.exposure_version
        ok = (s >= 0) & (v >= 0)
        if ok.any():
            key = pair_key(s[ok], v[ok], len(crashes.versions))
            g = Groups.of(key)
            first = np.minimum.reduceat(exposure.start_us[ok][g.order], g.starts)
            for k, t in zip(g.keys.tolist(), first.tolist(), strict=True):
                intro[(k // len(crashes.versions), k % len(crashes.versions))] = int(t)
    if deploys is not None and len(deploys):
        s_index = {n: i for i, n in enumerate(crashes.services)}
        v_index = {n: i for i, n in enumerate(crashes.versions)}
        from_deploys: dict[tuple[int, int], int] = {}
        for t, s_code, v_code in zip(
            deploys.time_us.tolist(),
            deploys.service.tolist(),
            deploys.version.tolist(),
            strict=True,
        ):
            sv = (
                s_index.get(deploys.services[s_code], -1) if s_code >= 0 else -1,
                v_index.get(deploys.versions[v_code], -1),
            )
            if sv[0] >= 0 and sv[1] >= 0:
                from_deploys[sv] = min(int(t), from_deploys.get(sv, int(t)))
        for sv, t in from_deploys.items():
            intro.setdefault(sv, t)
    ok = (crashes.service >= 0) & (crashes.version >= 0)
    if ok.any():
        key = pair_key(crashes.service[ok], crashes.version[ok], max(len(crashes.versions), 1))
        g = Groups.of(key)
        first = np.minimum.reduceat(crashes.time_us[ok][g.order], g.starts)
        width = max(len(crashes.versions), 1)
        for k, t in zip(g.keys.tolist(), first.tolist(), strict=True):
            intro.setdefault((k // width, k % width), int(t))
    return intro
