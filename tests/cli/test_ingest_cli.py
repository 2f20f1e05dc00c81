"""`corecensus ingest` end to end: real kernel cores, sidecars, xattrs, a journal export, a real
DuckDB file, several worker processes."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import duckdb
import pytest

from corecensus.cli.main import main
from crashers import CrashResult

pytestmark = pytest.mark.kernel_cores


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main(args)
    return rc, capsys.readouterr().out


def _xattrs_supported(path: Path) -> bool:
    try:
        os.setxattr(path, "user.corecensus.probe", b"1")
    except OSError:
        return False
    return True


def test_ingest_directory_with_metadata(
    kernel_cores: dict[str, CrashResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cores = tmp_path / "cores"
    cores.mkdir()
    names = ["null_deref", "ret_sp_off_by_8", "thread_crash", "abort"]
    for i, name in enumerate(names):
        src = kernel_cores[name].core
        assert src is not None
        dst = cores / f"core.{name}"
        shutil.copy(src, dst)
        (cores / f"core.{name}.json").write_text(
            json.dumps(
                {
                    "COREDUMP_HOSTNAME": f"host-{i % 2}",
                    "COREDUMP_TIMESTAMP": str(1_700_000_000_000_000 + i),
                    "CORECENSUS_CPU": str(i),
                    "CORECENSUS_VERSION": "1.2.3",
                    "X_UNKNOWN_FIELD": "kept",
                }
            )
        )
    # Seeded junk: the same bytes every run, so what the parser makes of them cannot vary.
    (cores / "core.garbage").write_bytes(b"\x7fELF" + random.Random(55).randbytes(200))
    (cores / "core.not-even-elf").write_bytes(b"hello")
    db = tmp_path / "store.duckdb"
    rc, out = _run(["ingest", str(cores), "--db", str(db), "--jobs", "2", "--json"], capsys)
    assert rc == 0
    summary = json.loads(out)
    assert summary["cores"] == 6
    assert summary["ingested"] == 6
    assert summary["ok"] == 4
    assert summary["unparsed"] == 2
    assert any("not an ELF file" in r for r in summary["reasons"])
    # Idempotent: the same cores again are duplicates, nothing is stored twice.
    rc, out = _run(["ingest", str(cores), "--db", str(db), "--json"], capsys)
    assert json.loads(out)["duplicates"] == 6
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM crashes").fetchone() == (6,)
        rows = con.execute(
            "SELECT host, cpu, version FROM crashes WHERE host IS NOT NULL ORDER BY cpu"
        ).fetchall()
    finally:
        con.close()
    assert rows == [
        ("host-0", 0, "1.2.3"),
        ("host-1", 1, "1.2.3"),
        ("host-0", 2, "1.2.3"),
        ("host-1", 3, "1.2.3"),
    ]


def test_ingest_xattrs_and_journal(
    kernel_cores: dict[str, CrashResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = kernel_cores["bit_flip"].core
    assert src is not None
    core = tmp_path / "core.bitflip.0.abc.4242.1700000000000000"
    shutil.copy(src, core)
    if not _xattrs_supported(core):
        pytest.skip(f"{tmp_path} does not support user xattrs")
    os.setxattr(core, "user.coredump.hostname", b"xattr-host")
    os.setxattr(core, "user.coredump.signal", b"11")
    journal = tmp_path / "journal.json"
    journal.write_text(
        json.dumps(
            {
                "MESSAGE": "Process 4242 (bitflip) of user 0 dumped core.",
                "COREDUMP_FILENAME": str(core),
                "COREDUMP_PID": "4242",
                "COREDUMP_HOSTNAME": "journal-host",
                "CORECENSUS_SERVICE": "ledger",
            }
        )
        + "\n{not json\n"
    )
    db = tmp_path / "s.duckdb"
    rc, out = _run(
        ["ingest", str(core), "--db", str(db), "--journal", str(journal), "--json"], capsys
    )
    assert rc == 0
    summary = json.loads(out)
    assert summary["ingested"] == 1
    assert summary["journal_errors"], "the malformed journal line is reported"
    con = duckdb.connect(str(db), read_only=True)
    try:
        host, service = con.execute("SELECT host, service FROM crashes").fetchone()  # type: ignore[misc]
    finally:
        con.close()
    assert service == "ledger"
    assert host in ("xattr-host", "journal-host")


def test_ingest_reports_store_errors_without_traceback(
    kernel_cores: dict[str, CrashResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = kernel_cores["null_deref"].core
    assert src is not None
    bad_db = tmp_path / "not-a-db.duckdb"
    bad_db.write_bytes(b"this is not a duckdb file" * 100)
    rc = main(["ingest", str(src), "--db", str(bad_db)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "error" in err and "Traceback" not in err
