"""End to end: one faulty host, one spread software bug, one deploy-onset regression."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
from epi_scenario import DAY_US, DEPLOY_DAY, HOSTS, T0, crash_rows, deploys_csv, exposure_csv

from corecensus.epidemiology import (
    AnalysisParams,
    CrashTable,
    FleetAnalysis,
    HostKind,
    PopulationInfo,
    PopulationVerdict,
    analyze,
)
from corecensus.errors import ConfigError
from corecensus.ingest.tables import read_deploys, read_exposure

CONTRACT = {
    "id",
    "signature",
    "anomalies",
    "top_frames",
    "crashes",
    "hosts",
    "verdict",
    "suspects",
    "onset",
    "evidence",
}


@pytest.fixture(scope="module")
def crashes() -> CrashTable:
    return CrashTable.from_rows(crash_rows(), host_cpus={h: 16 for h in HOSTS})


@pytest.fixture(scope="module")
def result(crashes: CrashTable) -> FleetAnalysis:
    exposure = read_exposure(io.StringIO(exposure_csv()))
    deploys = read_deploys(io.StringIO(deploys_csv()))
    info = {"ret-sp8": PopulationInfo("SIGSEGV at ret in Session::run", ("Session::run", "main"))}
    return analyze(crashes, exposure, deploys, info)


def test_faulty_cpu_population_is_hardware_with_host_and_cpu(result: FleetAnalysis) -> None:
    p = result.population("ret-sp8")
    assert p.verdict is PopulationVerdict.HARDWARE
    assert [(s.host, s.cpu, s.crashes, s.cpu_crashes) for s in p.suspects] == [("h07", 11, 8, 7)]
    s = p.suspects[0]
    assert s.expected is not None and s.expected < 1 and s.p_value is not None and s.p_value < 1e-6
    assert s.crash_ids and all(c.startswith("c") for c in s.crash_ids)
    assert p.signature == "SIGSEGV at ret in Session::run" and p.top_frames[0] == "Session::run"
    assert p.anomalies == ("sp_off_by_8",)
    assert any("CPU 11" in r for r in p.recommendations) and any(
        "screen" in r for r in p.recommendations
    )
    assert any("multinomial" in e and "p=" in e for e in p.evidence)


def test_spread_bug_is_software_and_blames_no_host(result: FleetAnalysis) -> None:
    p = result.population("null-deref")
    assert p.verdict is PopulationVerdict.SOFTWARE and not p.suspects and p.onset is None
    assert any("dispersion" in e.lower() for e in p.evidence)


def test_regression_is_software_with_deploy_aligned_onset(result: FleetAnalysis) -> None:
    p = result.population("new-parser")
    assert p.verdict is PopulationVerdict.SOFTWARE and not p.suspects
    assert p.onset is not None
    assert p.onset.version == "2" and p.onset.previous_version == "1"
    assert p.onset.time_us == T0 + DEPLOY_DAY * DAY_US  # the deploy of version 2
    assert p.onset.absent_p_value is not None and p.onset.absent_p_value < 1e-6
    assert any("Version regression" in e for e in p.evidence)


def test_background_is_software_and_only_the_faulty_host_is_flagged(result: FleetAnalysis) -> None:
    assert all(result.population(f"bg-{k}").verdict is PopulationVerdict.SOFTWARE for k in range(5))
    assert result.flagged_hosts(HostKind.HARDWARE) == ("h07",)
    host = result.hosts[0]
    assert host.cpu == 11 and host.first_alarm_us is not None
    assert not any(
        a.attribute in ("cpu_model", "kernel") for p in result.populations for a in p.attributes
    )


def test_json_contract(result: FleetAnalysis) -> None:
    doc = json.loads(json.dumps(result.to_json()))
    assert set(doc) >= {"populations", "hosts", "rates_available"}
    assert doc["rates_available"] is True
    for p in doc["populations"]:
        assert set(p) >= CONTRACT
        assert p["verdict"] in ("hardware-suspect", "software", "inconclusive")
        assert isinstance(p["evidence"], list) and p["evidence"]
        for s in p["suspects"]:
            assert {"host", "cpu", "crashes", "expected", "p_value"} <= set(s)
        if p["onset"] is not None:
            assert {"time", "version"} <= set(p["onset"])
    sp8 = next(p for p in doc["populations"] if p["id"] == "ret-sp8")
    assert sp8["hosts"] == 1 and sp8["crashes"] == 8
    assert doc["hosts"][0]["host"] == "h07" and doc["hosts"][0]["reasons"]


def test_without_exposure_analysis_runs_and_says_rates_are_unavailable(crashes: CrashTable) -> None:
    a = analyze(crashes)
    doc = a.to_json()
    assert doc["rates_available"] is False
    assert any("Rates unavailable" in n for n in doc["notes"])
    for p in doc["populations"]:
        assert p["rates_available"] is False
        assert any("Rates unavailable" in e for e in p["evidence"])
    assert a.population("ret-sp8").verdict is PopulationVerdict.HARDWARE
    assert a.population("ret-sp8").suspects[0].expected is None
    assert a.population("null-deref").verdict is PopulationVerdict.SOFTWARE
    assert a.flagged_hosts(HostKind.HARDWARE) == ("h07",)


def test_empty_and_tiny_tables() -> None:
    assert analyze(CrashTable.from_rows([])).to_json()["populations"] == []
    one = CrashTable.from_rows([{"host": "a", "population": "p", "time_us": 1}])
    (p,) = analyze(one).populations
    assert p.verdict is PopulationVerdict.INCONCLUSIVE and "Only 1 crash" in p.evidence[0]


def test_bad_parameters_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        AnalysisParams(host_alpha=2.0)
    with pytest.raises(ConfigError):
        AnalysisParams(hardware_anomalies=("sp_off_by_9",))


def test_a_crash_id_lookup_names_the_same_crashes_in_one_call(
    crashes: CrashTable, result: FleetAnalysis
) -> None:
    """A table may name its crashes through a lookup (a store of millions): analyze asks once,
    for the rows findings may cite, and cites exactly what the id array gives."""
    assert crashes.crash_id is not None and not callable(crashes.crash_id)
    ids = crashes.crash_id
    calls: list[list[int]] = []

    def lookup(rows: np.ndarray) -> list[str]:
        calls.append(rows.tolist())
        return [str(ids[r]) for r in rows]

    lazy = dataclasses.replace(crashes, crash_id=lookup)
    exposure = read_exposure(io.StringIO(exposure_csv()))
    deploys = read_deploys(io.StringIO(deploys_csv()))
    info = {"ret-sp8": PopulationInfo("SIGSEGV at ret in Session::run", ("Session::run", "main"))}
    again = analyze(lazy, exposure, deploys, info)
    assert json.dumps(again.to_json()) == json.dumps(result.to_json())
    assert len(calls) == 1 and 0 < len(calls[0]) < len(crashes)
    assert calls[0] == sorted(set(calls[0]))
