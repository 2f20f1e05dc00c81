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

from corecensus.epidemiology.attributes import attribute_signals, signal_sentence
from corecensus.epidemiology.exposure import ExposureIndex
from corecensus.epidemiology.facts import (
    Candidates,
    PairTable,
    anomaly_counts,
    candidate_cells,
    candidate_pairs,
    cited_rows,
    excess_pairs,
    exposure_index,
    exposure_rates,
    given_host_cpus,
    group_pairs,
    scan_settings,
    time_order,
    top_pairs,
)
from corecensus.epidemiology.findings import (
    AttributeSignal,
    FleetAnalysis,
    PopulationFinding,
    PopulationInfo,
    PopulationVerdict,
    Split,
    Suspect,
)
from corecensus.epidemiology.fleetscan import FleetScan, scan_fleet
from corecensus.epidemiology.hostreport import host_findings, recommendations
from corecensus.epidemiology.hostscan import HostScan
from corecensus.epidemiology.mixture import anomaly_split, host_split, version_split
from corecensus.epidemiology.onset import PopulationTimeline, population_timeline
from corecensus.epidemiology.params import AnalysisParams
from corecensus.epidemiology.rates import HostRates, PairRates
from corecensus.epidemiology.table import CrashTable, Deploys, ExposureTable
from corecensus.epidemiology.verdict import (
    HostFacts,
    PopulationFacts,
    decide_verdict,
    onset_sentence,
)
from corecensus.epidemiology.versions import OnsetFinding, VersionHistory, population_onset
from corecensus.model import ANOMALY_NAMES

__all__ = ["analyze"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


def analyze(
    crashes: CrashTable,
    exposure: ExposureTable | None = None,
    deploys: Deploys | None = None,
    population_info: Mapping[str, PopulationInfo] | None = None,
    *,
    params: AnalysisParams = AnalysisParams(),  # noqa: B008 - frozen, so sharing is safe
) -> FleetAnalysis:
    """Analyze crash populations; see the module docstring and docs/statistics.md."""
    ctx = _Context.build(crashes, exposure, deploys, params)
    info = population_info or {}
    findings = [ctx.population_finding(p, info.get(ctx.pop_names[p])) for p in ctx.nonempty]
    order = {
        PopulationVerdict.HARDWARE: 0,
        PopulationVerdict.SOFTWARE: 1,
        PopulationVerdict.INCONCLUSIVE: 2,
    }
    findings.sort(key=lambda f: (order[f.verdict], -f.crashes, f.id))
    return FleetAnalysis(
        populations=tuple(findings),
        hosts=host_findings(
            scan=ctx.scan,
            rates=ctx.host_rates,
            host_names=ctx.host_names,
            pair_host=ctx.pairs.host,
            params=params,
            fleet=ctx.fleet,
            crashes=crashes,
        ),
        rates_available=ctx.rates is not None,
        notes=tuple(ctx.notes),
        crashes=len(crashes),
        host_names=ctx.host_names,
        scan=ctx.scan,
    )


@dataclass(eq=False)
class _Context:
    """Everything computed once for the whole table (the steps in
    :mod:`~corecensus.epidemiology.facts`), read by the per-population loop."""

    crashes: CrashTable
    params: AnalysisParams
    index: ExposureIndex | None
    host_names: tuple[str, ...]
    pop_names: tuple[str, ...]
    pairs: PairTable
    cpus: I64
    scan: HostScan
    fleet: FleetScan
    rates: PairRates | None
    host_rates: HostRates | None
    timeline: PopulationTimeline
    attributes: dict[int, list[AttributeSignal]]
    notes: list[str]
    pop_crashes: I64
    pop_hosts: I64
    pop_bits: I64  # (population, 1 + anomaly): column 0 hardware-flavoured crashes
    top_bits: I64  # the same on each population's top host
    top_pair: I64
    excess: NDArray[np.bool_]
    excess_count: I64
    cand: Candidates
    history: VersionHistory
    nonempty: list[int]
    crash_names: dict[int, str] | None  # ids of cited rows, when the table has a lookup

    @classmethod
    def build(
        cls,
        crashes: CrashTable,
        exposure: ExposureTable | None,
        deploys: Deploys | None,
        params: AnalysisParams,
    ) -> _Context:
        index, no_rates = exposure_index(crashes, exposure)
        notes = [no_rates] if no_rates else []
        host_names = index.hosts if index is not None else crashes.host.vocab
        n_hosts = len(host_names)
        n_pops = len(crashes.population.vocab)
        pop = crashes.population.codes
        hardware = (crashes.anomaly_mask & np.uint16(params.hardware_mask)) != 0
        # The time order is handed to the host scan, which drops it once it has the events',
        # and sorted again for the change points rather than kept through the scan's peak
        # (76 MB at ten million crashes); a store's crashes come in time order, where the
        # stable sort costs one pass.
        fleet = scan_fleet(
            crashes,
            hardware=hardware,
            n_hosts=n_hosts,
            host_cpus=given_host_cpus(crashes, n_hosts),
            params=params,
            settings=scan_settings(params),
            time_order=time_order(crashes.time_us),
            exposure=exposure if index is not None else None,
            exposure_host=index.exposure_host if index is not None else None,
        )
        scan, cpus = fleet.scan, fleet.placement.cells
        # grouped after the host scan, whose own arrays peak there (memory, at 1e7)
        pairs = group_pairs(pop, crashes.host.codes, n_hosts)
        rates = None
        if index is not None and exposure is not None:
            rates = exposure_rates(index, exposure, crashes, pairs, n_pops, params)
            if rates.note:
                notes.append(rates.note)
        timeline = population_timeline(
            time_us=crashes.time_us,
            population=pop,
            service=crashes.service.codes,
            n_pops=n_pops,
            time_order=time_order(crashes.time_us),
            curve=rates.curve if rates is not None else None,
            min_after=params.min_crashes,
        )
        pop_crashes = np.bincount(pop, minlength=n_pops).astype(np.int64)
        top_pair = top_pairs(pairs, n_pops)
        on_top = np.zeros(len(pairs), dtype=bool)
        on_top[top_pair[top_pair >= 0]] = True
        pair_stats = rates.pairs if rates is not None else None
        excess = excess_pairs(pairs, pair_stats, top_pair, pop_crashes, params)
        cand_pairs = candidate_pairs(
            pairs, top_pair, excess, scan.flagged, max_excess=params.max_suspect_hosts
        )
        crash_names = None
        if callable(crashes.crash_id):
            cited = cited_rows(pairs, cand_pairs, params.max_crash_ids)
            names = crashes.crash_id(cited)
            crash_names = dict(zip(cited.tolist(), names, strict=True))
        return cls(
            crashes=crashes,
            params=params,
            index=index,
            host_names=host_names,
            pop_names=crashes.population.vocab,
            pairs=pairs,
            cpus=cpus,
            scan=scan,
            fleet=fleet,
            rates=pair_stats,
            host_rates=rates.hosts if rates is not None else None,
            timeline=timeline,
            attributes=attribute_signals(
                crashes, pairs=pairs.groups, pair_pop=pairs.pop, n_pops=n_pops, params=params
            ),
            notes=notes,
            pop_crashes=pop_crashes,
            pop_hosts=np.bincount(pairs.pop, minlength=n_pops).astype(np.int64),
            pop_bits=anomaly_counts(pop, crashes.anomaly_mask, hardware, n_pops),
            top_bits=anomaly_counts(
                pop, crashes.anomaly_mask, hardware, n_pops, where=on_top[pairs.groups.inverse]
            ),
            top_pair=top_pair,
            excess=excess,
            excess_count=np.bincount(pairs.pop[excess], minlength=n_pops).astype(np.int64),
            cand=candidate_cells(
                cand_pairs,
                pairs,
                crashes,
                hardware,
                cpus,
                scan.flagged,
                scan.top_cpu,
                n_pops,
                cell=fleet.cell,
                event=fleet.bursts.event,
                evidence=fleet.evidence,
            ),
            history=VersionHistory.build(crashes, exposure, index, deploys),
            nonempty=np.flatnonzero(pop_crashes > 0).tolist(),
            crash_names=crash_names,
        )

    # -- per population ----------------------------------------------------------------------

    def population_finding(self, p: int, info: PopulationInfo | None) -> PopulationFinding:
        params = self.params
        key = self.pop_names[p]
        n = int(self.pop_crashes[p])
        candidates = self._candidates(p)
        top = self.top_pair[p]
        top_share = float(self.pairs.counts[top]) / n if n else 0.0
        # Below min_crashes the verdict is "too few" whatever else holds; skipping the onset and
        # split work keeps a long tail of singleton signatures cheap.
        judged = n >= params.min_crashes
        found = OnsetFinding(None, None, None, None)
        if judged:
            found = population_onset(
                p,
                crashes=n,
                service=int(self.timeline.stratum[p]),
                changepoint=self.timeline.changepoint,
                history=self.history,
                params=params,
            )
        onset, version_evidence = found.onset, found.version_evidence
        disp_index = disp_p = None
        if self.rates is not None:
            d = self.rates.dispersion
            disp_index = None if not np.isfinite(d.index[p]) else float(d.index[p])
            disp_p = float(d.p_value[p])
        facts = PopulationFacts(
            key=key,
            crashes=n,
            events=int(self.fleet.pop_events[p]),
            hosts=int(self.pop_hosts[p]),
            hardware=int(self.pop_bits[p, 0]),
            rates_available=self.rates is not None,
            candidates=candidates,
            top_share=top_share,
            excess_hosts=int(self.excess_count[p]),
            dispersion_index=disp_index,
            dispersion_p=disp_p,
            onset=onset,
            version_evidence=version_evidence,
        )
        decision, _rule = decide_verdict(facts, params)
        evidence = list(decision.evidence)
        if info is not None:
            evidence += info.evidence
        if onset is not None and version_evidence is None:
            evidence.append(onset_sentence(onset))
        elif onset is None and found.note:
            evidence.append(found.note)
        signals = self.attributes.get(p, [])
        evidence += [signal_sentence(s) for s in signals]
        splits = self._splits(p, facts, decision.verdict) if judged else []
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
        if decision.verdict is PopulationVerdict.HARDWARE:
            details = {self.host_names[h]: d for h, d in self.fleet.details.items()}
            recs = recommendations([(s.host, s.cpu) for s in suspects], details)
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
            first_version=found.first_version,
            attributes=tuple(signals),
            splits=tuple(splits),
            dispersion_index=disp_index,
            rates_available=self.rates is not None,
            recommendations=tuple(recs),
        )

    def _candidates(self, p: int) -> tuple[HostFacts, ...]:
        out = []
        r = self.rates
        for c in range(int(self.cand.start[p]), int(self.cand.start[p + 1])):
            pair = int(self.cand.pairs[c])
            h = int(self.pairs.host[pair])
            cpu = int(self.cand.cpu[c])
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
                    cpu_crashes=int(self.cand.cpu_count[c]),
                    cpus=int(self.cpus[h]),
                    cpu_p_value=float(self.cand.cpu_p[c]),
                    hardware=int(self.cand.hardware[c]),
                    flagged=bool(self.scan.flagged[h]),
                    excess=bool(self.excess[pair]),
                    on_flagged_cpu=int(self.cand.on_flagged_cpu[c]),
                    evidence=int(self.cand.evidence[c]),
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
        lo = int(self.pairs.groups.starts[pair])
        k = min(int(self.pairs.counts[pair]), self.params.max_crash_ids)
        rows = np.sort(self.pairs.groups.order[lo : lo + k])
        if self.crash_names is not None:
            return tuple(self.crash_names[r] for r in rows.tolist())
        assert not callable(ids)
        return tuple(str(x) for x in ids[rows])

    def _splits(self, p: int, facts: PopulationFacts, verdict: PopulationVerdict) -> list[Split]:
        params = self.params
        splits: list[Split] = []
        top = int(self.top_pair[p])
        if top >= 0 and verdict is not PopulationVerdict.HARDWARE:
            classes = [("hardware-flavoured anomalies", True)] + [
                (name, name in params.hardware_anomalies) for name in ANOMALY_NAMES
            ]
            s = anomaly_split(
                classes=classes,
                in_population=self.pop_bits[p].tolist(),
                on_top_host=self.top_bits[p].tolist(),
                crashes=facts.crashes,
                top_host=self.host_names[int(self.pairs.host[top])],
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
            vers = self.history.crashes_by_version(p)
            all_versions = self.history.of_service(svc)
            names = [self.crashes.version.vocab[v] for v in all_versions]
            counts = [vers.get(v, 0) for v in all_versions]
            hours = [self.history.hours(svc, v) for v in all_versions]
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
