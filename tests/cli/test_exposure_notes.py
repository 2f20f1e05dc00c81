"""Exposure that does not describe the crashes is said out loud (issue 10): wholly outside the
crash period (a wrong year or time zone), or intervals of one host and service that overlap.
Real DuckDB store, real exposure.csv files, the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corecensus.app.ingest import store_records
from corecensus.cli.main import main
from corecensus.model import CrashRecord, ParseStatus
from corecensus.store import open_store

T0 = 1_700_000_000_000_000  # 2023-11-14
HOUR = 3_600_000_000


def _store(tmp_path: Path) -> Path:
    db = tmp_path / "s.duckdb"
    records = [
        CrashRecord(
            core_id=f"c{i:03d}",
            status=ParseStatus.OK,
            exe="/usr/bin/svc",
            signal=11,
            metadata={
                "COREDUMP_HOSTNAME": f"h{i % 4}",
                "COREDUMP_TIMESTAMP": str(T0 + i * HOUR),
                "CORECENSUS_SERVICE": "svc",
                "CORECENSUS_VERSION": "1.0",
            },
        )
        for i in range(24)
    ]
    with open_store(db) as store:
        store_records(store, records)
    return db


def _exposure(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    lines = ["host,start,end,service,version,cpu_model"]
    lines += [f"{h},{a},{b},svc,1.0,Xeon" for h, a, b in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _analyze(db: Path, exposure: Path, capsys: pytest.CaptureFixture[str]) -> tuple[list[str], str]:
    assert main(["analyze", "--db", str(db), "--exposure", str(exposure), "--json"]) == 0
    notes = json.loads(capsys.readouterr().out)["inputs"]["notes"]
    assert main(["analyze", "--db", str(db), "--exposure", str(exposure)]) == 0
    return notes, capsys.readouterr().out


def test_exposure_of_the_crash_period_gets_no_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _store(tmp_path)
    rows = [(f"h{i}", "2023-11-14T00:00:00Z", "2023-11-16T00:00:00Z") for i in range(4)]
    notes, text = _analyze(db, _exposure(tmp_path / "e.csv", rows), capsys)
    assert notes == []
    assert "warning:" not in text


def test_exposure_wholly_outside_the_crashes_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _store(tmp_path)
    # A year off: the crashes are in November 2023.
    rows = [(f"h{i}", "2022-11-14T00:00:00Z", "2022-11-16T00:00:00Z") for i in range(4)]
    notes, text = _analyze(db, _exposure(tmp_path / "e.csv", rows), capsys)
    assert len(notes) == 1
    assert "wholly outside the crashes" in notes[0]
    assert "2022-11-14 00:00 to 2022-11-16 00:00" in notes[0]
    assert "warning: exposure covers 2022-11-14" in text


def test_overlapping_intervals_of_one_host_and_service_are_noted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _store(tmp_path)
    rows = [(f"h{i}", "2023-11-14T00:00:00Z", "2023-11-16T00:00:00Z") for i in range(4)]
    # h2 has a long interval and two inside it; back-to-back intervals (h3) are not overlaps.
    rows += [
        ("h2", "2023-11-14T06:00:00Z", "2023-11-14T07:00:00Z"),
        ("h2", "2023-11-15T06:00:00Z", "2023-11-15T07:00:00Z"),
        ("h3", "2023-11-16T00:00:00Z", "2023-11-17T00:00:00Z"),
    ]
    notes, text = _analyze(db, _exposure(tmp_path / "e.csv", rows), capsys)
    assert notes == [
        "2 exposure interval(s) overlap an earlier one of the same host and service "
        "(first on host h2): their common time is counted twice in the rates"
    ]
    assert "warning: 2 exposure interval(s) overlap" in text
