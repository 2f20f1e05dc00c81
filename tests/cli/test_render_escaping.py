"""Outside strings reach the terminal as data: never Rich markup, never raw control characters.

Real DuckDB store, real CLI; the hostile strings are what a sidecar or a journal can carry."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from rich.console import Console

from corecensus.app.ingest import store_records
from corecensus.cli.main import main
from corecensus.cli.render import escape_control, plain, record_view
from corecensus.model import Anomaly, CrashRecord, ParseStatus, Problem, ProblemKind
from corecensus.store import open_store

T0 = 1_700_000_000_000_000
HOST = "host [rack-7]\x1b[2J"


def _record(i: int, host: str, cpu: int = 3, anomalous: bool = False) -> CrashRecord:
    return CrashRecord(
        core_id=f"c{i:04d}",
        status=ParseStatus.OK,
        exe="/usr/bin/svc",
        signal=11,
        anomalies=(Anomaly("sp_off_by_8", "x"),) if anomalous else (),
        metadata={
            "COREDUMP_HOSTNAME": host,
            "COREDUMP_TIMESTAMP": str(T0 + i * 3_600_000_000),
            "COREDUMP_EXE": "/usr/bin/svc",
            "CORECENSUS_CPU": str(cpu),
        },
    )


def test_escape_control_shows_every_control_character() -> None:
    assert escape_control("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert escape_control("x\ny") == "x\\ny"
    assert escape_control("tab\tok") == "tab\tok"
    assert escape_control("plain [rsp-8] text") == "plain [rsp-8] text"
    assert "\x9b" not in escape_control("c1\x9b31m")


def test_analyze_prints_host_names_as_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # One host whose CPU 3 crashes with %rsp off by 8 (so it is named in the verdict), and a
    # spread of ordinary crashes elsewhere.
    db = tmp_path / "s.duckdb"
    records = [_record(i, HOST, 3, True) for i in range(12)]
    records += [_record(100 + i, f"h{i}", i % 16) for i in range(200)]
    with open_store(db) as store:
        store_records(store, records)
    assert main(["analyze", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "come from host [rack-7]\\x1b[2J" in out
    assert "\x1b" not in out
    assert main(["analyze", "--db", str(db), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["populations"][0]["suspects"][0]["host"] == HOST  # data kept whole in JSON


def _text(renderable: object) -> str:
    con = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    con.print(renderable)
    text = con.export_text()
    con.file.close()
    return text


def test_inspect_view_keeps_brackets_and_escapes_controls() -> None:
    rec = dataclasses.replace(
        _record(1, "h"),
        source="/cores/core.[weird]\x1b[2J",
        anomalies=(
            Anomaly(
                "returned_to_bad_address",
                "a `ret` popped 0x0: the word just below rsp ([rsp-8]) equals rip",
            ),
        ),
        problems=(Problem(ProblemKind.SYMBOLS, "module [vdso] has no \x1b[31mdebug info"),),
    )
    text = _text(record_view(rec))
    assert "the word just below rsp ([rsp-8]) equals rip" in text
    assert "core.[weird]\\x1b[2J" in text
    assert "module [vdso] has no \\x1b[31mdebug info" in text
    assert "\x1b" not in text


def test_plain_never_reads_markup() -> None:
    assert _text(plain("[bold]not bold[/bold] [red]x")).strip() == "[bold]not bold[/bold] [red]x"
