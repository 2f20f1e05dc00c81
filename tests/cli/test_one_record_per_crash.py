"""One record per crash, the best one kept (issue 10): a truncated copy ingested first no longer
shadows the whole core, an unparsed record of a file that parses later is replaced instead of
counted twice, and metadata that arrives later fills the gaps. Real kernel cores, a real DuckDB
file, the `ingest` command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from corecensus.cli.main import main
from crashers import CrashResult

pytestmark = pytest.mark.kernel_cores


def _ingest(paths: list[Path], db: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert main(["ingest", *map(str, paths), "--db", str(db), "--json", "--jobs", "1"]) == 0
    return dict(json.loads(capsys.readouterr().out))


def _stored(db: Path) -> list[tuple[str, str | None, dict[str, object]]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT status, host, record_json FROM crashes").fetchall()
    finally:
        con.close()
    return [(str(s), h, json.loads(r)) for s, h, r in rows]


def test_the_whole_core_replaces_a_truncated_copy_ingested_first(
    kernel_cores: dict[str, CrashResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    core = kernel_cores["null_deref"].core
    assert core is not None
    data = core.read_bytes()
    cut = tmp_path / "first" / "core.cut"
    cut.parent.mkdir()
    cut.write_bytes(data[: len(data) * 3 // 5])  # head and notes whole, memory cut
    whole = tmp_path / "second" / "core.whole"
    whole.parent.mkdir()
    shutil.copy(core, whole)
    whole.with_name("core.whole.json").write_text(json.dumps({"COREDUMP_HOSTNAME": "h1"}))
    db = tmp_path / "s.duckdb"
    first = _ingest([cut], db, capsys)
    assert first["ingested"] == 1 and first["partial"] == 1
    second = _ingest([whole], db, capsys)
    assert second["replaced"] == 1 and second["ingested"] == 0
    [(status, host, rec)] = _stored(db)
    assert status == "ok" and host == "h1"
    assert rec["source"] == str(whole)
    # The truncated copy again: the whole record stays (ties and worse records never replace).
    third = _ingest([cut], db, capsys)
    assert third["duplicates"] == 1 and third["replaced"] == 0
    [(status, host, _rec)] = _stored(db)
    assert status == "ok" and host == "h1"


def test_a_file_that_parses_later_replaces_its_unparsed_record(
    kernel_cores: dict[str, CrashResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A core still being written when the first ingest ran (empty then), whole at the second:
    one crash, not two."""
    core = kernel_cores["abort"].core
    assert core is not None
    path = tmp_path / "cores" / "core.abort"
    path.parent.mkdir()
    path.write_bytes(b"")
    db = tmp_path / "s.duckdb"
    first = _ingest([path], db, capsys)
    assert first["unparsed"] == 1 and first["ingested"] == 1
    again = _ingest([path], db, capsys)  # still empty: the same unparsed crash, not a second
    assert again["duplicates"] == 1 and len(_stored(db)) == 1
    shutil.copy(core, path)
    fixed = _ingest([path], db, capsys)
    assert fixed["ingested"] == 1 and fixed["removed_unparsed"] == 1
    [(status, _host, rec)] = _stored(db)
    assert status == "ok" and rec["signal_name"] == "SIGABRT"


def test_a_sidecar_added_after_ingest_fills_the_gaps(
    kernel_cores: dict[str, CrashResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    core = kernel_cores["sigfpe"].core
    assert core is not None
    path = tmp_path / "cores" / "core.sigfpe"
    path.parent.mkdir()
    shutil.copy(core, path)
    db = tmp_path / "s.duckdb"
    _ingest([path], db, capsys)
    [(_s, host, _r)] = _stored(db)
    assert host is None
    path.with_name("core.sigfpe.json").write_text(
        json.dumps({"COREDUMP_HOSTNAME": "late-host", "CORECENSUS_CPU": "3"})
    )
    later = _ingest([path], db, capsys)
    assert later["replaced"] == 1
    [(_s, host, rec)] = _stored(db)
    assert host == "late-host" and rec["cpu"] == 3
    # The same again changes nothing.
    assert _ingest([path], db, capsys)["duplicates"] == 1
