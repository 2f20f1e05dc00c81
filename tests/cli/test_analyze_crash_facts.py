"""``corecensus analyze --crashes FILE``: crash facts from another system, no store needed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from corecensus.cli.main import main
from module_probe import cli_modules

HEADER = "host,time,cpu,cpus_allowed,host_cpus,service,signature,anomalies\n"


def _facts(tmp_path: Path) -> Path:
    """40 hosts of 16 CPUs with spread background crashes; host h07's CPU 11 crashes in many
    signatures with %rsp off by 8; host h20 runs a service pinned to CPU 4 that crashes often."""
    rng = np.random.default_rng(4)
    lines = []
    day = 86_400_000_000
    t0 = 1_717_200_000_000_000
    for i in range(400):
        lines.append(
            f"h{int(rng.integers(40)):02d},{t0 + int(rng.integers(30 * day))},"
            f"{int(rng.integers(16))},0-15,16,api,bg{i % 9},"
        )
    for i in range(8):
        lines.append(f"h07,{t0 + i * 3 * day},11,0-15,16,api,bg{i},sp_off_by_8")
    for i in range(12):
        lines.append(f"h20,{t0 + i * 2 * day},4,4,16,pinned,pin-bug,")
    path = tmp_path / "crashes.csv"
    path.write_text(HEADER + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_analyze_crash_facts_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _facts(tmp_path)
    assert main(["analyze", "--crashes", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    hardware = [h["host"] for h in doc["hosts"] if h["kind"] == "hardware-suspect"]
    assert hardware == ["h07"]  # h20's pinned crashes say nothing about CPU 4
    assert doc["inputs"]["db"] == str(path)
    [pin] = [p for p in doc["populations"] if p["id"] == "pin-bug"]
    assert pin["verdict"] != "hardware-suspect"


def test_analyze_crash_facts_bad_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "h1,2024-06-01,x,,,api,s,\n", encoding="utf-8")
    assert main(["analyze", "--crashes", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bad.csv:2: 'cpu' is not a non-negative integer" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("as_json", [True, False])
def test_analyze_json_does_not_load_rich(tmp_path: Path, as_json: bool) -> None:
    # (issue 7: the table's renderer is Rich, 0.05-0.1 s of every `analyze --json` start)
    args = ["analyze", "--crashes", str(_facts(tmp_path)), *(["--json"] if as_json else [])]
    stdout, modules = cli_modules(tmp_path, *args)
    assert "numpy" in modules
    if as_json:
        assert "rich" not in modules
        assert json.loads(stdout)["hosts"]
    else:
        assert "rich" in modules
        assert "h07" in stdout


def test_analyze_crash_facts_time_before_the_epoch_is_an_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One crash at a time before 1970 (a placeholder -1, say) ended in an IndexError from the
    windowed host tests; epoch seconds were read as microseconds in January 1970."""
    for time, message in (
        ("-1", "early.csv:2: 'time' '-1' read as microseconds since the epoch is before 1970"),
        ("1790000000", "early.csv:2: 'time' '1790000000' read as microseconds since the epoch"),
    ):
        path = tmp_path / "early.csv"
        path.write_text(HEADER + f"h1,{time},3,,16,api,s,\n", encoding="utf-8")
        assert main(["analyze", "--crashes", str(path), "--json"]) == 2
        out = capsys.readouterr()
        assert out.out == ""
        assert out.err.startswith(f"error: {path.parent}/{message}")
        assert len(out.err.strip().splitlines()) == 1


def test_a_crash_facts_file_given_as_the_store_says_to_use_crashes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--db crashes.csv`` was "DuckDB error while opening the store: Catalog Error: Cannot
    launch in-memory database in read-only mode!"."""
    path = _facts(tmp_path)
    assert main(["analyze", "--db", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        err == f"error: {path}: a crash-facts file, not a store: analyze it with --crashes {path}\n"
    )


def test_level_with_crash_facts_is_refused_not_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _facts(tmp_path)
    for level in ("anomaly", "symbolic"):
        assert main(["analyze", "--crashes", str(path), "--level", level]) == 2
        err = capsys.readouterr().err
        assert (
            err == "error: --level chooses among the store's signatures; --crashes brings its own\n"
        )
