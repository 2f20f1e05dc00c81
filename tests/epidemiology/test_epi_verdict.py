"""Verdict rules on hand-built facts, and the mixture (split) detectors."""

from __future__ import annotations

import numpy as np

from corecensus.epidemiology import (
    AnalysisParams,
    CrashTable,
    HostKind,
    PopulationVerdict,
    analyze,
)
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
    evidence: int = 0,
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
        evidence=evidence if flagged else 0,
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
    a = host("a", 8, flagged=True, excess=False, evidence=7)
    d, rule = decide_verdict(facts(12, 2, (a,)), P)
    assert d.verdict is PopulationVerdict.HARDWARE and rule == "made-of-flagged-hosts"
    # the same 8 crashes on a flagged host, but only 2 of them what it was flagged for (on
    # its named CPU, or with a residual anomaly): 2 of 12 is no hardware share
    a = host("a", 8, flagged=True, excess=False, evidence=2)
    d, rule = decide_verdict(facts(12, 2, (a,)), P)
    assert rule != "made-of-flagged-hosts" and d.verdict is not PopulationVerdict.HARDWARE
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


def _flagged_hosts_fleet(seed: int = 3) -> list[dict[str, object]]:
    """60 hosts of 32 CPUs. Hosts h00-h02 have a bad CPU (5, 17, 29) failing one code path,
    ``stepping``: 12 crashes each, 11 on the bad CPU, 6 with ``sp_off_by_8``. Two software bugs
    spread over the fleet also crash many times on those three hosts, on every CPU: ``spin``
    (ordinary crashes, 40 on each of the three, 2 on each of 38 other hosts) and ``wild`` (a
    wild pointer, ``fault_address_mismatch`` on 60 % of its crashes everywhere, 30 on each of
    the three, 2 on each of 38 others). Background ``bg-*`` on every host."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, object]] = []
    day = 86_400_000_000

    def add(pop: str, h: int, cpu: int, anomalies: tuple[str, ...] = ()) -> None:
        rows.append(
            {
                "time_us": 1_717_200_000_000_000 + int(rng.uniform(0, 30) * day),
                "host": f"h{h:02d}",
                "cpu": cpu,
                "service": "api",
                "population": pop,
                "anomalies": anomalies,
            }
        )

    for h, bad in zip(range(3), (5, 17, 29), strict=True):
        for i in range(12):
            sp8 = ("sp_off_by_8",) if i < 6 else ()
            add("stepping", h, bad if i else int(rng.integers(32)), sp8)
        for _ in range(40):
            add("spin", h, int(rng.integers(32)))
        for _ in range(30):
            wild = ("fault_address_mismatch",) if rng.random() < 0.6 else ()
            add("wild", h, int(rng.integers(32)), wild)
    for h in range(3, 41):
        for _ in range(2):
            add("spin", h, int(rng.integers(32)))
            add(
                "wild",
                h,
                int(rng.integers(32)),
                ("fault_address_mismatch",) if rng.random() < 0.6 else (),
            )
    for h in range(60):
        for k in range(3):
            add(f"bg-{k}", h, int(rng.integers(32)))
    return rows


def test_made_of_flagged_hosts_counts_only_what_the_flags_are_evidence_for() -> None:
    rows = _flagged_hosts_fleet()
    crashes = CrashTable.from_rows(rows, host_cpus={f"h{i:02d}": 32 for i in range(60)})
    a = analyze(crashes)
    flagged = set(a.flagged_hosts(HostKind.HARDWARE))
    assert {"h00", "h01", "h02"} <= flagged
    # must fire: a population made of the faulty hosts' crashes on their bad CPUs
    p = a.population("stepping")
    assert p.verdict is PopulationVerdict.HARDWARE
    assert sorted((s.host, s.cpu) for s in p.suspects) == [("h00", 5), ("h01", 17), ("h02", 29)]
    # must not: the flagged hosts hold most of each spread bug's crashes (the old rule counted
    # them all: hardware-suspect), but their crashes sit on every CPU and their anomalies are
    # the bug's own, seen on the other hosts
    for pop in ("spin", "wild"):
        on_flagged = sum(r["population"] == pop and r["host"] in flagged for r in rows)
        total = sum(r["population"] == pop for r in rows)
        assert on_flagged >= 0.5 * total
        q = a.population(pop)
        assert q.verdict is not PopulationVerdict.HARDWARE and not q.suspects, (pop, q.evidence)
