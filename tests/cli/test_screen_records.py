"""SDC screen records are stored like crashes and shown beside the crash populations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corecensus.cli.main import main
from corecensus.demo import run_demo
from corecensus.demo.fleet import FAULTY_HOST


def test_screen_record_beside_the_hardware_population(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The demo store, from the shipped samples (a fake /proc says cores go elsewhere).
    proc = tmp_path / "proc"
    (proc / "sys/kernel").mkdir(parents=True)
    (proc / "sys/kernel/core_pattern").write_text("|/bin/false\n")
    run = run_demo(tmp_path / "demo", proc_root=proc)
    # A real screen of this machine's CPU 0; its record is then filed under the demo's suspect
    # host name, as the agent on that host would have sent it.  The budget only bounds a hang:
    # one round ends in a second or two.
    record = tmp_path / "screen.json"
    rc = main(
        ["screen", "--cpus", "0", "--rounds", "1", "--budget", "60", "--out", str(record), "--json"]
    )
    assert rc == 0, capsys.readouterr().err
    capsys.readouterr()
    doc = json.loads(record.read_text())
    assert doc["kind"] == "sdc_screen"
    doc["host"] = FAULTY_HOST
    record.write_text(json.dumps(doc))
    bad = tmp_path / "broken-screen.json"
    bad.write_text(json.dumps({"kind": "sdc_screen", "mode": "oneshot"}))

    assert main(["ingest", str(record), str(bad), "--db", str(run.db), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["screens"] == 1
    assert summary["cores"] == 0
    assert any("broken-screen.json" in e for e in summary["screen_errors"])

    assert main(["analyze", "--db", str(run.db), "--exposure", str(run.exposure), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    hw = next(p for p in out["populations"] if p["verdict"] == "hardware-suspect")
    assert [s["host"] for s in hw["screens"]] == [FAULTY_HOST]
    assert hw["screens"][0]["decision"] == doc["decision"]["verdict"]
    software = [p for p in out["populations"] if p["verdict"] == "software"]
    assert all(p["screens"] == [] for p in software)
