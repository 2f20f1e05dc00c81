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
