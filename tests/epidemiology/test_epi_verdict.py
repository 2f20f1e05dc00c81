"""Verdict rules on hand-built facts, and the mixture (split) detectors."""

from __future__ import annotations

import numpy as np

from corecensus.epidemiology import AnalysisParams, CrashTable, PopulationVerdict, analyze
from corecensus.epidemiology.findings import Onset
from corecensus.epidemiology.mixture import anomaly_split, version_split
from corecensus.epidemiology.verdict import HostFacts, PopulationFacts, decide_verdict

P = AnalysisParams()


def host(
    name: str,
    crashes: int,
    *,
    excess: bool = True,
    cpu_p: float = 1.0,
    cpu_n: int = 1,
    hardware: int = 0,
    flagged: bool = False,
) -> HostFacts:
    return HostFacts(
        pair=0,
        host=0,
        name=name,
        crashes=crashes,
        expected=0.5,
        p_value=1e-6,
        q_value=1e-4,
        rate_ratio=8.0,
        cpu=3,
        cpu_crashes=cpu_n,
        cpus=32,
        cpu_p_value=cpu_p,
        hardware=hardware,
        flagged=flagged,
        excess=excess,
    )


def facts(n: int, hosts: int, candidates: tuple[HostFacts, ...], **kw: object) -> PopulationFacts:
    base: dict[str, object] = dict(
        key="p",
        crashes=n,
        hosts=hosts,
        hardware=0,
        rates_available=True,
        candidates=candidates,
        top_share=max((c.crashes for c in candidates), default=0) / n,
        excess_hosts=sum(c.excess for c in candidates),
        dispersion_index=1.0,
        dispersion_p=0.5,
        onset=None,
        version_evidence=None,
    )
    base.update(kw)
    return PopulationFacts(**base)  # type: ignore[arg-type]


def test_rule_order() -> None:
    d, rule = decide_verdict(facts(2, 2, ()), P)
    assert d.verdict is PopulationVerdict.INCONCLUSIVE and rule == "too-few-crashes"
    d, rule = decide_verdict(facts(10, 1, (host("a", 10, cpu_p=1e-6, cpu_n=9),)), P)
    assert d.verdict is PopulationVerdict.HARDWARE and rule == "concentrated-with-hardware-evidence"
    assert [h.name for h in d.suspects] == ["a"]
    d, rule = decide_verdict(facts(10, 1, (host("a", 10),)), P)
    assert d.verdict is PopulationVerdict.INCONCLUSIVE and rule == "concentrated-without-evidence"
    onset = Onset(time_us=0, version="2")
    d, rule = decide_verdict(facts(10, 1, (host("a", 10),), onset=onset, version_evidence="v2."), P)
    assert d.verdict is PopulationVerdict.SOFTWARE and rule == "version-onset"
    d, rule = decide_verdict(facts(40, 30, (host("a", 3, excess=False),), hardware=36), P)
    assert d.verdict is PopulationVerdict.SOFTWARE and rule == "spread"
    assert any("memory-corrupting" in e for e in d.evidence)
    d, rule = decide_verdict(facts(12, 2, (host("a", 8, flagged=True, excess=False),)), P)
    assert d.verdict is PopulationVerdict.HARDWARE and rule == "made-of-flagged-hosts"
    d, rule = decide_verdict(facts(6, 2, (host("a", 2, excess=False),)), P)
    assert d.verdict is PopulationVerdict.INCONCLUSIVE and rule == "fallback"


def test_anomaly_split_finds_two_causes_under_one_signature() -> None:
    classes = [("hardware-flavoured anomalies", True), ("pc_zero", False), ("sp_off_by_8", True)]
    s = anomaly_split(
        classes=classes,
        in_population=[7, 30, 7],
        on_top_host=[7, 1, 7],
        crashes=40,
        top_host="h07",
        top_host_crashes=8,
        alpha=1e-3,
    )
    assert s is not None and s.by == "anomaly" and s.verdict is PopulationVerdict.HARDWARE
    assert s.crashes == 7 and s.rest == 33 and s.p_value is not None and s.p_value < 1e-6
    none = anomaly_split(
        classes=classes,
        in_population=[7, 30, 7],
        on_top_host=[1, 1, 1],
        crashes=40,
        top_host="h07",
        top_host_crashes=3,
        alpha=1e-3,
    )
    assert none is None


def test_version_split() -> None:
    s = version_split(
        versions=["1", "2"], counts=[3, 40], hours=[1000.0, 1000.0], alpha=1e-3, min_ratio=3.0
    )
    assert (
        s is not None
        and s.part == "40 crashes in version 2"
        and s.verdict is PopulationVerdict.SOFTWARE
    )
    assert (
        version_split(
            versions=["1", "2"], counts=[20, 22], hours=[1000.0, 1000.0], alpha=1e-3, min_ratio=3.0
        )
        is None
    )


def test_mixed_population_is_split_end_to_end() -> None:
    """The DESIGN case: one signature, sp_off_by_8 crashes from one host's CPU and
    return-to-NULL (pc_zero) crashes spread over the fleet."""
    rng = np.random.default_rng(11)
    rows = []
    for i in range(9):
        rows.append(
            {
                "host": "h07",
                "population": "ret",
                # a day apart: crashes seconds apart would be one crash loop (loops.py)
                "time_us": 10 + i * 86_400_000_000,
                "cpu": 11,
                "anomalies": ["sp_off_by_8"],
            }
        )
    for i in range(40):
        rows.append(
            {
                "host": f"h{rng.integers(40):02d}",
                "population": "ret",
                "time_us": 100 + i,
                "cpu": int(rng.integers(16)),
                "anomalies": ["pc_zero"],
            }
        )
    for i in range(200):
        rows.append(
            {
                "host": f"h{rng.integers(40):02d}",
                "population": f"bg{i % 5}",
                "time_us": 300 + i,
                "cpu": int(rng.integers(16)),
            }
        )
    a = analyze(CrashTable.from_rows(rows, host_cpus={f"h{i:02d}": 16 for i in range(40)}))
    p = a.population("ret")
    assert (
        p.verdict is PopulationVerdict.SOFTWARE
    )  # the majority, return-to-NULL, is a software race
    by = {s.by: s for s in p.splits}
    assert "anomaly" in by
    part = by["anomaly"].part
    assert "sp_off_by_8" in part or "hardware-flavoured" in part
    assert by["anomaly"].verdict is PopulationVerdict.HARDWARE and by["anomaly"].crashes == 9
    assert "host" in by and "h07 CPU 11" in by["host"].part
