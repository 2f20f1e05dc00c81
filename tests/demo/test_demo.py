"""The demo end to end: real crashes (kernel cores) and the shipped-sample fallback."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import duckdb
import pytest

from corecensus.demo import run_demo
from corecensus.demo.fleet import FAULTY_CPU, FAULTY_HOST


def _classes(run_dir: Path) -> Counter[str]:
    con = duckdb.connect(str(run_dir / "corecensus.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT host, cpu, sig_anomaly_class FROM crashes").fetchall()
    finally:
        con.close()
    return Counter(f"{h}|{c}|{a}" if "sp_off_by_8" in a else a for h, c, a in rows)


@pytest.mark.kernel_cores
def test_demo_with_kernel_cores(tmp_path: Path) -> None:
    run = run_demo(tmp_path / "demo")
    assert run.used_samples is None
    assert run.ingested == len(run.fleet.crashes) == 31
    assert all(str(r.status) == "ok" for r in run.records), [r.errors for r in run.records]
    by_mode = Counter(c.mode for c in run.fleet.crashes)
    got = _classes(tmp_path / "demo")
    faulty = [k for k in got if "sp_off_by_8" in k]
    # Every faulty-CPU crash is on the faulty host and CPU, and nothing else has sp_off_by_8.
    assert faulty and all(k.startswith(f"{FAULTY_HOST}|{FAULTY_CPU}|") for k in faulty)
    assert sum(got[k] for k in faulty) == by_mode["faulty"]
    assert (
        sum(n for k, n in got.items() if "returned_to_bad_address" in k and "sp_off" not in k)
        == by_mode["commit"]
    )
    assert (run.exposure.read_text().splitlines()[0]) == "host,start,end,service,version,cpu_model"


def test_demo_falls_back_to_samples(tmp_path: Path) -> None:
    """A kernel that pipes cores elsewhere (emulated with a fake /proc): shipped samples."""
    proc = tmp_path / "proc"
    (proc / "sys/kernel").mkdir(parents=True)
    (proc / "sys/kernel/core_pattern").write_text(
        "|/lib/systemd/systemd-coredump %P %u %g %s %t %c %h\n"
    )
    run = run_demo(tmp_path / "demo", proc_root=proc)
    assert run.used_samples is not None and "pipes cores" in run.used_samples
    assert run.ingested == 31 and run.duplicates == 0
    names = Counter(r.anomaly_names for r in run.records)
    assert names[("pc_not_executable", "returned_to_bad_address", "sp_off_by_8")] == 7
    assert any(r.frames and r.frames[0].function == "parse_record" for r in run.records)


@pytest.mark.kernel_cores
def test_demo_findings_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`corecensus demo --json` and `corecensus analyze --json` on its store tell the story."""
    import json

    from corecensus.cli.main import main

    assert main(["demo", "--dir", str(tmp_path / "d"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["demo"]["ingested"] == 31
    by_verdict: dict[str, list[dict[str, object]]] = {}
    for p in doc["populations"]:
        by_verdict.setdefault(p["verdict"], []).append(p)
    (hw,) = by_verdict["hardware-suspect"]
    assert "sp_off_by_8" in hw["anomalies"]
    assert [(s["host"], s["cpu"]) for s in hw["suspects"]] == [(FAULTY_HOST, FAULTY_CPU)]
    assert any("Fisher" in e or "multinomial" in e for e in hw["evidence"])
    software = by_verdict["software"]
    assert len(software) == 2
    assert all(not p["suspects"] for p in software), "a software bug must not be blamed on a host"
    regression = next(p for p in software if "pc_zero" in p["anomalies"])
    assert regression["onset"]["version"] == "2.0"
    spread = next(p for p in software if "parse_record" in p["signature"])
    assert spread["onset"] is None
    assert [h["host"] for h in doc["hosts"]] == [FAULTY_HOST]

    db = tmp_path / "d" / "corecensus.duckdb"
    assert main(["analyze", "--db", str(db), "--json"]) == 0
    no_exposure = json.loads(capsys.readouterr().out)
    assert no_exposure["rates_available"] is False
    assert no_exposure["inputs"]["exposure"].startswith("none")
    assert len(no_exposure["populations"]) == 3

    assert main(["analyze", "--db", str(tmp_path / "missing.duckdb")]) == 2
    assert "no such store" in capsys.readouterr().err


@pytest.mark.kernel_cores
def test_demo_with_a_relative_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`corecensus demo` run from a checkout uses the relative default directory."""
    monkeypatch.chdir(tmp_path)
    run = run_demo(Path("corecensus-demo"))
    assert run.workdir == tmp_path / "corecensus-demo"
    assert run.ingested == 31
