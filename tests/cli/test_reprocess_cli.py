"""`corecensus reprocess` applies a new frame list to stored crashes without re-reading cores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from corecensus.cli.main import main
from crashers import CrashResult

pytestmark = pytest.mark.kernel_cores

DATA = Path(__file__).resolve().parents[2] / "src" / "corecensus" / "signature" / "data"


def _signatures(db: Path) -> list[str]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return [
            r[0]
            for r in con.execute("SELECT sig_symbolic FROM crashes ORDER BY core_id").fetchall()
        ]
    finally:
        con.close()


def test_reprocess_with_a_site_frame_list(
    kernel_cores: dict[str, CrashResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = kernel_cores["null_deref"].core
    assert src is not None
    core = tmp_path / "core.copy"
    shutil.copy(src, core)
    db = tmp_path / "s.duckdb"
    assert main(["ingest", str(core), "--db", str(db), "--json"]) == 0
    capsys.readouterr()
    before = _signatures(db)
    assert before[0].startswith("crash_null_deref")
    # A site decides crash_null_deref is an irrelevant wrapper: its caller names the bug.
    lists = tmp_path / "lists"
    shutil.copytree(DATA, lists, ignore=shutil.ignore_patterns("*.py"))
    with open(lists / "irrelevant_frames.txt", "a") as fh:
        fh.write("crash_null_deref$\n")
    core.unlink()  # the cores are gone: reprocess works from stored facts alone
    assert main(["reprocess", "--db", str(db), "--all", "--siglists", str(lists), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["examined"] == summary["updated"] == 1
    after = _signatures(db)
    assert after[0].startswith("main"), after


def test_reprocess_rejects_a_broken_frame_list(
    kernel_cores: dict[str, CrashResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    core = kernel_cores["abort"].core
    assert core is not None
    db = tmp_path / "s.duckdb"
    assert main(["ingest", str(core), "--db", str(db)]) == 0
    lists = tmp_path / "lists"
    shutil.copytree(DATA, lists)
    with open(lists / "prefix_frames.txt", "a") as fh:
        fh.write("unbalanced(paren\n")
    capsys.readouterr()
    assert main(["reprocess", "--db", str(db), "--siglists", str(lists)]) == 2
    err = capsys.readouterr().err
    assert "prefix_frames.txt" in err and "Traceback" not in err


def test_a_damaged_row_is_skipped_and_named_and_the_others_are_re_signed(
    kernel_cores: dict[str, CrashResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One row's stored JSON overwritten with garbage (SQL on the real DuckDB file), the first
    in the order reprocess walks: it once stopped the whole pass with nothing re-signed. Now it
    is skipped and named (id and reason, one line on stderr, exit 1) and every other row is
    re-signed."""
    from corecensus.signature import SIGNATURE_VERSION

    cores = tmp_path / "cores"
    cores.mkdir()
    for name in ("null_deref", "abort", "sigfpe", "sigill"):
        core = kernel_cores[name].core
        assert core is not None
        shutil.copy(core, cores / f"core.{name}")
    db = tmp_path / "s.duckdb"
    assert main(["ingest", str(cores), "--db", str(db), "--no-symbols", "--json"]) == 0
    capsys.readouterr()
    con = duckdb.connect(str(db))
    try:
        ids = [r[0] for r in con.execute("SELECT core_id FROM crashes ORDER BY core_id").fetchall()]
        # Signed by an older rule version, as after an upgrade; the first row damaged.
        con.execute("UPDATE crashes SET sig_version = 0")
        con.execute("UPDATE crashes SET record_json = 'garbage' WHERE core_id = ?", [ids[0]])
    finally:
        con.close()
    assert len(ids) == 4
    assert main(["reprocess", "--db", str(db), "--json"]) == 1
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert (summary["examined"], summary["updated"], summary["damaged"]) == (4, 3, 1)
    reason = "stored record is not JSON: Expecting value: line 1 column 1 (char 0)"
    assert summary["damaged_rows"] == [{"core_id": ids[0], "reason": reason}]
    assert err.strip() == f"error: {db}: crash {ids[0]} skipped: {reason}", err
    con = duckdb.connect(str(db), read_only=True)
    try:
        versions = dict(con.execute("SELECT core_id, sig_version FROM crashes").fetchall())
    finally:
        con.close()
    assert versions == {ids[0]: 0, **{i: SIGNATURE_VERSION for i in ids[1:]}}
    # The plain summary says so too, and a second pass finds only the damaged row left.
    assert main(["reprocess", "--db", str(db)]) == 1
    out, err = capsys.readouterr()
    said = " ".join(out.split())  # as Rich wrapped it
    assert said.startswith("re-signed 0 of 4 crashes") and "; skipped 1 damaged row in" in said
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
