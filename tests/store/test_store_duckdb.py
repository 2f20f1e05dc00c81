"""DuckDB adapter: real files, a real second process, corrupt and foreign files, a full disk."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest
from store_records import T0, make_record, rows

from corecensus.errors import StoreError
from corecensus.store import (
    CRASHES,
    DEPLOYS,
    EXPOSURE,
    HEARTBEATS,
    SCHEMA_VERSION,
    SCREEN_RESULTS,
    TABLES,
    DeployRow,
    DuckDBStore,
    ExposureRow,
    Heartbeat,
    MemoryStore,
    ScreenResultRow,
    duckdb_store,
    open_store,
)

SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with open_store(path) as s:
        s.add_crashes(rows(make_record(i) for i in range(20)))
    with open_store(path) as s:
        assert s.count_crashes() == 20
        assert s.add_crashes(rows([make_record(3)])).duplicate == 1
    with open_store(path, read_only=True) as s:
        assert s.count_crashes() == 20
        with pytest.raises(StoreError, match="read-only"):
            s.add_crashes(rows([make_record(99)]))


def _holder_script(path: Path) -> str:
    return textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {SRC!r})
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from store_records import make_record, rows
        from corecensus.store import DuckDBStore
        with DuckDBStore({str(path)!r}) as s:
            s.add_crashes(rows(make_record(i) for i in range(10)))
            print("ready", flush=True)
            sys.stdin.readline()
            s.add_crashes(rows(make_record(i) for i in range(10, 15)))
        print("done", flush=True)
        """
    )


def test_second_process_gets_a_clear_error_and_nothing_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "shared.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", _holder_script(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError) as excinfo:
            DuckDBStore(path)
        message = str(excinfo.value)
        assert f"in use by process {holder.pid}" in message
        assert "one writer per store file" in message
        with pytest.raises(StoreError, match="in use"):
            DuckDBStore(path, read_only=True)
        holder.stdin.write("go\n")
        holder.stdin.flush()
        out, err = holder.communicate(timeout=60)
        assert holder.returncode == 0, err
        assert out.strip() == "done"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    with DuckDBStore(path) as s:
        assert s.count_crashes() == 15
        assert {r.core_id for r in s.iter_crashes()} == {make_record(i).core_id for i in range(15)}


def test_deferred_checkpoints_keep_commits_in_the_log_until_asked_and_a_kill_loses_none(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log.duckdb"
    store = DuckDBStore(path)
    store.defer_checkpoints()
    store.add_crashes(rows(make_record(i) for i in range(5)))
    assert store.log_bytes() > 0  # committed to the log, not yet in the file
    store.checkpoint()
    assert store.log_bytes() == 0
    store.close()
    # A process that commits with checkpoints deferred and is killed (no close, no checkpoint)
    # leaves its commits in the log; the next open replays them.
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from store_records import make_record, rows
        from corecensus.store import DuckDBStore
        s = DuckDBStore({str(path)!r})
        s.defer_checkpoints()
        s.add_crashes(rows(make_record(i) for i in range(5, 12)))
        assert s.log_bytes() > 0
        os.kill(os.getpid(), 9)
    """)
    killed = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": SRC}, timeout=120
    )
    assert killed.returncode == -9
    with DuckDBStore(path) as s:
        assert {r.core_id for r in s.iter_crashes()} == {make_record(i).core_id for i in range(12)}
    assert MemoryStore().log_bytes() == 0


def test_a_load_of_a_whole_row_group_goes_into_the_file_and_a_kill_loses_none(
    tmp_path: Path,
) -> None:
    """With row groups of 2048 rows (the collector's ``store_row_group_rows``), a transaction
    that inserts at least that many rows has DuckDB write them into the file as it inserts:
    the log holds where they are, not the rows, as it does with DuckDB's default row groups.
    A process killed before any checkpoint leaves a store whose next open has them all, the
    same rows as the default's; a load of fewer rows is logged whole, as before."""
    records = [make_record(i, host=f"host-{i % 7}") for i in range(2100)]
    crashes = rows(records)
    clock = lambda: T0 / 1e6  # noqa: E731 (one ingest time for both stores)
    with DuckDBStore(tmp_path / "default.duckdb", clock=clock) as store:
        store.defer_checkpoints()
        store.add_uploads(crashes, [], [], journal=("collector", 1, 0))
        default_log = store.log_bytes()
        expected = list(store.rows(CRASHES))
    assert default_log > sum(len(r.record_json) for r in crashes)  # every row, whole
    path = tmp_path / "groups.duckdb"
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from store_records import make_record, rows
        from corecensus.store import DuckDBStore
        s = DuckDBStore({str(path)!r}, row_group_rows=2048, clock=lambda: {T0 / 1e6!r})
        s.defer_checkpoints()
        crashes = rows(make_record(i, host=f"host-{{i % 7}}") for i in range(2100))
        s.add_uploads(crashes, [], [], journal=("collector", 1, 0))
        print(s.log_bytes(), flush=True)
        s.add_uploads(rows([make_record(5000)]), [], [], journal=("collector", 1, 10))
        print(s.log_bytes(), flush=True)
        os.kill(os.getpid(), 9)
    """)
    killed = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": SRC},
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -9, killed.stderr
    big, then = (int(line) for line in killed.stdout.split())
    assert 0 < big < default_log / 20
    assert then - big > len(crashes[0].record_json)  # one row: logged whole
    with DuckDBStore(path, read_only=True) as store:
        got = list(store.rows(CRASHES))
        assert store.journal_applied("collector") == (1, 10)
    assert [r for r in got if r.core_id != make_record(5000).core_id] == expected
    assert len(got) == 2101


def test_row_groups_must_be_whole_vectors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="multiple of 2048"):
        DuckDBStore(tmp_path / "s.duckdb", row_group_rows=3000)


def test_garbage_file_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.duckdb"
    path.write_bytes(random.Random(64).randbytes(64 * 1024))
    with pytest.raises(StoreError, match="not a corecensus store, or the file is corrupt"):
        DuckDBStore(path)


def test_truncated_store_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with DuckDBStore(path) as s:
        s.add_crashes(rows(make_record(i) for i in range(50)))
    data = path.read_bytes()
    path.write_bytes(data[:5000])
    with pytest.raises(StoreError, match="corrupt"), DuckDBStore(path) as s:
        s.count_crashes()


def test_store_with_damaged_blocks_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with DuckDBStore(path) as s:
        s.add_crashes(rows(make_record(i) for i in range(300)))
    data = bytearray(path.read_bytes())
    # Overwrite everything after the file headers (DuckDB checksums each block).
    for i in range(3 * 4096, len(data)):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="corrupt"), DuckDBStore(path) as s:
        list(s.iter_crashes())


def test_foreign_duckdb_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE orders (id INTEGER)")
    con.close()
    with pytest.raises(StoreError, match="not a corecensus store"):
        DuckDBStore(path)
    # The refusal released the file: DuckDB can open it again in this process.
    duckdb.connect(str(path)).close()


def _set_schema_version(path: Path, version: int) -> None:
    con = duckdb.connect(str(path))
    con.execute("UPDATE corecensus_meta SET value = ? WHERE key = 'schema_version'", [str(version)])
    con.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    DuckDBStore(path).close()
    _set_schema_version(path, SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        DuckDBStore(path)


def test_older_schema_without_a_migration_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    DuckDBStore(path).close()
    _set_schema_version(path, 0)
    with pytest.raises(StoreError, match="no migration from store schema version 0"):
        DuckDBStore(path)
    with pytest.raises(StoreError, match="needs migrating"):
        DuckDBStore(path, read_only=True)


def test_missing_directory_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        DuckDBStore(tmp_path / "no" / "such" / "dir.duckdb")


def test_threads_limit_duckdb_and_the_default_leaves_its_own(tmp_path: Path) -> None:
    """The collector opens its store with one DuckDB thread (its loads and checkpoints are
    background work); everyone else keeps DuckDB's default."""

    def threads(store: DuckDBStore) -> int:
        assert store._con is not None
        row = store._con.execute("SELECT current_setting('threads')").fetchone()
        assert row is not None
        return int(row[0])

    default = duckdb.connect(":memory:").execute("SELECT current_setting('threads')").fetchone()
    assert default is not None
    with DuckDBStore(tmp_path / "a.duckdb") as store:
        assert threads(store) == int(default[0])
    with DuckDBStore(tmp_path / "b.duckdb", threads=1) as store:
        assert threads(store) == 1
        store.add_crashes(rows([make_record(1)]))  # it still stores
        assert store.count_crashes() == 1


def test_read_only_open_of_missing_file_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        DuckDBStore(tmp_path / "missing.duckdb", read_only=True)


def test_default_path_is_corecensus_duckdb_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with open_store() as s:
        s.add_crashes(rows([make_record(1)]))
        assert s.location == "corecensus.duckdb"
    assert (tmp_path / "corecensus.duckdb").is_file()


_DISK_FULL_SCRIPT = """
import json, os, random, subprocess, sys
sys.path.insert(0, {src!r})
from corecensus.errors import StoreError
from corecensus.model import CrashRecord, ParseStatus
from corecensus.pipeline import sign_records
from corecensus.store import DuckDBStore
d = {mount!r}
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", d], check=True)
filler = os.path.join(d, "filler")
with open(filler, "wb") as f:
    f.write(b"\\0" * 512 * 1024)
path = os.path.join(d, "s.duckdb")
committed, error = 0, None
rng = random.Random(3000)  # incompressible, and the same every run
store = DuckDBStore(path)
for batch in range(1000):
    records = [
        CrashRecord(f"c{{batch}}-{{i}}", ParseStatus.OK, metadata={{"X": rng.randbytes(3000).hex()}})
        for i in range(20)
    ]
    try:
        committed += store.add_crashes(sign_records(records)).new
    except StoreError as exc:
        error = str(exc)
        break
try:
    store.close()
except StoreError:
    pass
os.remove(filler)
with DuckDBStore(path) as again:
    after = again.count_crashes()
print(json.dumps({{"error": error, "committed": committed, "after": after}}))
"""


def test_disk_full_is_a_clear_store_error_and_committed_work_is_kept(tmp_path: Path) -> None:
    # A real full disk: a 3 MiB tmpfs mounted in a private mount namespace (unshare -m), so
    # nothing outside the child process sees it and it vanishes with the child.
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to mount a small tmpfs in a private namespace")
    probe = subprocess.run(["unshare", "-m", "true"], check=False, capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a mount namespace: {probe.stderr.decode().strip()}")
    mount = tmp_path / "small"
    mount.mkdir()
    script = _DISK_FULL_SCRIPT.format(src=SRC, mount=str(mount))
    done = subprocess.run(
        ["unshare", "-m", sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["error"] is not None
    assert "disk full while adding crashes" in result["error"]
    assert result["committed"] > 0
    assert result["after"] == result["committed"]


def test_export_parquet_reads_back_with_duckdb(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "corecensus.duckdb")
    store.add_crashes(
        rows([make_record(i, anomalies=("sp_off_by_8",) if i % 2 else ()) for i in range(5)])
    )
    store.add(EXPOSURE, [ExposureRow("host-1", T0, T0 + 3_600_000_000, "svc", "1.0", "Xeon")])
    store.add(DEPLOYS, [DeployRow(T0, "svc", "1.0")])
    store.add(HEARTBEATS, [Heartbeat("host-1", T0, "svc", "1.0")])
    store.add(SCREEN_RESULTS, [ScreenResultRow.of("host-1", T0, "boot", "pass", {"ok": True})])
    out = tmp_path / "export"
    written = store.export_parquet(out)
    assert sorted(written) == sorted(t.name for t in TABLES)
    assert all(p.parent == out and p.suffix == ".parquet" for p in written.values())
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{t.name}.parquet" for t in TABLES)
    con = duckdb.connect()
    crashes = con.execute(
        "SELECT core_id, host, time, anomalies, sig_anomaly_class, record_json "
        "FROM read_parquet(?) ORDER BY core_id",
        [str(written["crashes"])],
    ).fetchall()
    assert [r[0] for r in crashes] == sorted(make_record(i).core_id for i in range(5))
    assert crashes[1][2].year == 2023
    assert crashes[1][3] == ["sp_off_by_8"]
    assert crashes[1][4] == "sp_off_by_8"
    assert '"core_id"' in crashes[1][5]
    exposure = con.execute(
        "SELECT host, end_us - start_us, start_time FROM read_parquet(?)",
        [str(written["exposure"])],
    ).fetchall()
    assert exposure[0][:2] == ("host-1", 3_600_000_000)
    screens = con.execute(
        "SELECT decision, result_json FROM read_parquet(?)", [str(written["screen_results"])]
    ).fetchall()
    assert screens == [("pass", '{"ok":true}')]


@pytest.mark.parametrize("fetch_rows", [1, 7, 1 << 20])
def test_crash_columns_match_the_fake_across_chunks_ties_and_gaps(
    fetch_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read in chunks of rowids and ordered by NumPy, with only crashes that share a time sent
    back to DuckDB for their ``core_id`` order: the same columns in the same order as the
    fake's ``ORDER BY time_us NULLS LAST, core_id``, whatever the chunk size, with crashes
    sharing a time, crashes without one, and rowids left unused by deletions."""
    monkeypatch.setattr(duckdb_store, "FETCH_ROWS", fetch_rows)
    records = [make_record(i, time_us=T0 + (i % 5) * 1_000_000) for i in range(30)]
    records += [
        dataclasses.replace(r, metadata={k: v for k, v in r.metadata.items() if "TIME" not in k})
        for r in (make_record(i) for i in range(30, 36))
    ]
    records.append(make_record(36, time_us=T0 + 99_000_000))  # a time of its own
    random.Random(7).shuffle(records)
    duck, fake = DuckDBStore(":memory:"), MemoryStore()
    for store in (duck, fake):
        store.add_crashes(rows(records))
        gone = [r.core_id for r in records[3:9]]
        assert store.replace_crashes([], remove=gone) == 0
    got, want = duck.crash_columns(details=True), fake.crash_columns(details=True)
    assert len(got) == len(want) == len(records) - 6
    assert duck.core_ids(got.row) == fake.core_ids(want.row)
    assert got.time_known.tolist() == want.time_known.tolist()
    assert not got.time_known[-4:].any() and got.time_known[:-6].all()
    for name in ("time_us", "cpu", "anomaly_mask", "signal"):
        assert getattr(got, name).tolist() == getattr(want, name).tolist(), name
    for name in ("host", "population", "service", "version", "exe"):
        assert getattr(got, name).decode() == getattr(want, name).decode(), name
    # several crashes at each of the shared times, listed in core_id order
    ids = duck.core_ids(got.row)
    times = got.time_us.tolist()
    assert len(set(times[:-6])) < len(times) - 6
    assert all(
        ids[i] < ids[i + 1]
        for i in range(len(ids) - 1)
        if times[i] == times[i + 1] and got.time_known[i] == got.time_known[i + 1]
    )


def test_heartbeat_host_facts_are_added_to_a_version_3_store(tmp_path: Path) -> None:
    """Schema 4 (issue 9): the host's microcode and kernel in the agent's heartbeat. A version-3
    store is migrated on open; its heartbeats keep their rows with those unknown."""
    path = tmp_path / "s.duckdb"
    old = Heartbeat("host-1", T0, "corecensus-agent", "0.1.0", 86_400, 300, "{}")
    with DuckDBStore(path) as store:
        store.add(HEARTBEATS, [old])
    con = duckdb.connect(str(path))
    for name in ("microcode", "kernel"):
        con.execute(f"ALTER TABLE heartbeats DROP COLUMN {name}")
    con.execute("DROP TABLE journal_applied")  # schema 5's
    con.close()
    _set_schema_version(path, 3)
    new = dataclasses.replace(old, time_us=T0 + 1, microcode="0xd0003a5", kernel="6.1.0")
    with DuckDBStore(path) as store:
        store.add(HEARTBEATS, [new])
        got = sorted(store.rows(HEARTBEATS), key=lambda h: h.time_us)
    assert got == [old, new]
    assert (got[0].microcode, got[0].kernel) == (None, None)


def test_heartbeat_health_columns_are_added_to_a_version_2_store(tmp_path: Path) -> None:
    """Schema 3 (issue 12): the agent's uptimes and loss counts. A version-2 store is migrated
    on open; its heartbeats keep their rows with those unknown, new ones store them."""
    path = tmp_path / "s.duckdb"
    with DuckDBStore(path) as store:
        store.add(HEARTBEATS, [Heartbeat("host-1", T0, "svc", "1.0")])
    con = duckdb.connect(str(path))
    for name in ("uptime_s", "agent_uptime_s", "lost", "microcode", "kernel"):  # 3's and 4's
        con.execute(f"ALTER TABLE heartbeats DROP COLUMN {name}")
    con.execute("DROP TABLE journal_applied")  # schema 5's
    con.close()
    _set_schema_version(path, 2)
    full = Heartbeat(
        "host-1", T0 + 1, "corecensus-agent", "0.1.0", 86_400, 300, '{"spool_full": 3}'
    )
    with DuckDBStore(path) as store:
        store.add(HEARTBEATS, [full])
        got = sorted(store.rows(HEARTBEATS), key=lambda h: h.time_us)
    assert got == [Heartbeat("host-1", T0, "svc", "1.0"), full]
    con = duckdb.connect(str(path), read_only=True)
    lost = con.execute(
        "SELECT lost::JSON->>'spool_full' FROM heartbeats WHERE lost IS NOT NULL"
    ).fetchall()
    con.close()
    assert lost == [("3",)]


def test_journal_applied_is_added_to_a_version_4_store(tmp_path: Path) -> None:
    """Schema 5 (issue 11): how far the collector's journal is applied. A version-4 store
    (without the table) is migrated on open, keeps its rows, and has applied nothing."""
    path = tmp_path / "s.duckdb"
    with DuckDBStore(path) as store:
        store.add_crashes(rows([make_record(1)]))
    con = duckdb.connect(str(path))
    con.execute("DROP TABLE journal_applied")
    con.close()
    _set_schema_version(path, 4)
    # A reader reads it as it is (`analyze --db` on a store an older corecensus wrote) and
    # leaves it version 4; a version-3 store still needs its migration first (above).
    with DuckDBStore(path, read_only=True) as store:
        assert store.count_crashes() == 1
        assert store.journal_applied("collector") is None
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT value FROM corecensus_meta").fetchall() == [("4",)]
    con.close()
    with DuckDBStore(path) as store:
        assert store.count_crashes() == 1
        assert store.journal_applied("collector") is None
        store.add_uploads(rows([make_record(2)]), [], [], journal=("collector", 3, 120))
    with DuckDBStore(path, read_only=True) as store:
        assert store.journal_applied("collector") == (3, 120)
        assert store.journal_applied("another") is None
        assert store.count_crashes() == 2
    con = duckdb.connect(str(path), read_only=True)
    version = con.execute("SELECT value FROM corecensus_meta WHERE key = 'schema_version'")
    assert version.fetchone() == (str(SCHEMA_VERSION),)
    con.close()


def test_add_uploads_is_one_transaction_with_the_journal_position(tmp_path: Path) -> None:
    """The rows and how far the journal is applied are committed together: a row that does
    not fit stores nothing and leaves the position where it was; a replay of the same rows
    stores none twice."""
    path = tmp_path / "s.duckdb"
    crashes = rows([make_record(i) for i in range(5)])
    beat = Heartbeat("host-1", T0, "svc", "1.0")
    with DuckDBStore(path) as store:
        first = store.add_uploads(crashes[:3], [beat], [], journal=("collector", 1, 100))
        assert [r.new for r in first] == [3, 1, 0]
        bad = dataclasses.replace(beat, time_us=1 << 70)  # past BIGINT
        with pytest.raises(StoreError):
            store.add_uploads(crashes[3:], [bad], [], journal=("collector", 1, 200))
        assert store.count_crashes() == 3
        assert store.journal_applied("collector") == (1, 100)
        # A replay of frames whose first copies are stored, and a copy twice in one batch.
        again = store.add_uploads(
            crashes + crashes[:1], [beat, beat], [], journal=("collector", 2, 0)
        )
        assert [(r.new, r.duplicate) for r in again] == [(2, 4), (0, 2), (0, 0)]
        assert store.count_crashes() == 5
        assert len(list(store.rows(HEARTBEATS))) == 1
        assert store.journal_applied("collector") == (2, 0)
