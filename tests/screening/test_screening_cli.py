"""``corecensus screen``: table and JSON output, exit codes, clear errors, records and golden
values on disk -- and the whole path with the fault shim, from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from screening_helpers import BAD_CPU, HANG_BUDGET_S, shim_env

from corecensus.cli.main import main
from corecensus.screening import GoldenValues, ScreenResult

pytestmark = pytest.mark.usefixtures("two_cpus")

QUICK = ["--checks", "libm_pow,crc32,aes", "--budget", f"{HANG_BUDGET_S:g}", "--rounds", "1"]


def test_json_output_is_the_record(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "screen.json"
    rc = main(["screen", "--json", *QUICK, "--out", str(out)])
    printed = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert printed["kind"] == "sdc_screen" and printed["mode"] == "oneshot"
    assert printed["decision"]["verdict"] == "clean"
    assert len(printed["results"]) == 2 * 3
    for row in printed["results"]:
        assert {"cpu", "check", "outcome", "expected", "observed", "seconds"} <= set(row)
        assert row["outcome"] == "passed"
    assert json.loads(out.read_text()) == printed
    assert ScreenResult.from_json(printed).to_json() == printed


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["screen", *QUICK, "--cpus", "0-1"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "CPU 0" in text and "CPU 1" in text and "libm_pow" in text
    assert "decision: clean" in text


def test_golden_values_are_recorded_then_compared(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    golden = tmp_path / "golden.json"
    assert main(["screen", "--json", *QUICK, "--golden", str(golden)]) == 0
    recorded = GoldenValues.load(golden)
    model = next(iter(recorded.models))
    assert set(recorded.models[model]) == {"libm_pow", "crc32", "aes"}
    before = golden.read_text()
    capsys.readouterr()
    assert main(["screen", "--json", *QUICK, "--golden", str(golden)]) == 0
    assert json.loads(capsys.readouterr().out)["decision"]["verdict"] == "clean"
    assert golden.read_text() == before  # nothing new to vouch for; existing values kept


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--cpus", "0-x"], 2, "bad CPU list '0-x'"),
        (["--cpus", "99"], 2, "CPU 99 does not exist"),
        (["--budget", "-3"], 2, "budget must be positive"),
        (["--checks", "nope"], 2, "unknown check 'nope'"),
    ],
)
def test_bad_arguments_are_one_clear_line(
    args: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["screen", *args]) == code
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unreadable_golden_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "golden.json"
    bad.write_text('{"format": 1,\n "models": [}\n')
    assert main(["screen", *QUICK, "--golden", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2: golden values are not JSON" in err


def test_list_checks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["screen", "--list-checks"]) == 0
    names = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
    assert "libm_pow" in names and "crosscore" in names and len(names) >= 13


def test_command_line_with_the_shim_flags_cpu1_and_exits_3(shim: Path, tmp_path: Path) -> None:
    """End to end as an operator would run it: a separate process, LD_PRELOAD in its env."""
    env = {**os.environ, **shim_env(shim, pow_mode="story")}
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "corecensus",
            "screen",
            "--json",
            *QUICK,
            "--checks",
            "libm_pow,crc32",
        ],
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=200,  # bounds a hang only: beyond the screen's own overall budget
        check=False,
    )
    assert proc.returncode == 3, proc.stderr.decode()
    doc = json.loads(proc.stdout)
    assert doc["decision"]["verdict"] == "quarantine_cpus"
    assert doc["decision"]["quarantine_cpus"] == [BAD_CPU]
    row = next(r for r in doc["results"] if r["cpu"] == BAD_CPU and r["check"] == "libm_pow")
    assert row["outcome"] == "failed_reproducible"
    assert row["observed"] == "int(pow(1.1, 53)) = 0"
    assert list(tmp_path.iterdir()) == []  # no core files or other litter in the cwd
