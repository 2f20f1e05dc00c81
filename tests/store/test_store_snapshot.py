"""The snapshot a writer leaves for readers (``DuckDBStore.write_snapshot``): one whole committed
state, whether DuckDB copies the database (a store that checkpoints on its own) or the file is
copied between checkpoints (a store whose checkpoints are deferred: the collector's)."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest
from tests.store.store_records import make_record

from corecensus.pipeline import sign_records
from corecensus.store import CrashRow, DuckDBStore
from corecensus.store.duckdb_store import _copy_range, snapshot_path

BATCH = 250
# Only a bound to catch a hang.
HANG_BOUND_S = 120
BATCHES = 24


def _rows(n: int) -> list[CrashRow]:
    (row,) = sign_records([make_record(1)])
    return [dataclasses.replace(row, core_id=f"snap-{i:08d}") for i in range(n)]


def _snapshot_count(store_path: Path) -> int:
    con = duckdb.connect(str(snapshot_path(store_path)), read_only=True)
    try:
        # Every value read: DuckDB checks each block's checksum as it reads it.
        count, _ = con.execute(
            "SELECT count(*), sum(length(record_json) + length(core_id)) FROM crashes"
        ).fetchone()
    finally:
        con.close()
    return int(count)


@pytest.mark.parametrize("deferred", [True, False], ids=["file-copy", "duckdb-copy"])
def test_each_snapshot_is_a_whole_committed_state_while_writes_go_on(
    tmp_path: Path, deferred: bool
) -> None:
    path = tmp_path / "fleet.duckdb"
    store = DuckDBStore(path)
    if deferred:
        store.defer_checkpoints()
    rows = _rows(BATCH * BATCHES)
    done = threading.Event()
    failure: list[BaseException] = []

    def load() -> None:
        try:
            for i in range(BATCHES):
                store.add_uploads(rows[i * BATCH : (i + 1) * BATCH], [], [])
                if deferred and i % 3 == 2:
                    store.checkpoint()
        except BaseException as exc:  # reported by the test below
            failure.append(exc)
        finally:
            done.set()

    loader = threading.Thread(target=load)
    loader.start()
    seen: list[int] = []
    try:
        # Snapshots while the loads go on (at least two, however the threads take turns).
        while not done.is_set() or len(seen) < 2:
            store.write_snapshot()
            seen.append(_snapshot_count(path))
    finally:
        loader.join()
    assert not failure, failure
    # Each one a whole number of transactions, none behind the one before.
    assert all(count % BATCH == 0 for count in seen), seen
    assert seen == sorted(seen), seen
    # The last one, written after the loads, holds every committed row.
    store.write_snapshot()
    assert _snapshot_count(path) == BATCH * BATCHES
    store.close()


_READER = """
import json, sys
from corecensus.store import DuckDBStore
store = DuckDBStore(sys.argv[1], read_only=True)
print(json.dumps([store.snapshot, store.count_crashes()]))
store.close()
"""


def test_another_process_reads_the_copied_file_while_the_writer_holds_the_store(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fleet.duckdb"
    store = DuckDBStore(path)
    store.defer_checkpoints()
    store.add_uploads(_rows(10), [], [])
    store.write_snapshot()
    # Committed after the snapshot: not in it (the next snapshot's).
    store.add_uploads(_rows(20)[10:], [], [])
    try:
        src = str(Path(__file__).resolve().parents[2] / "src")
        out = subprocess.run(
            [sys.executable, "-c", _READER, str(path)],
            capture_output=True,
            text=True,
            timeout=HANG_BOUND_S,
            env={**os.environ, "PYTHONPATH": src},
            check=True,
        )
        assert json.loads(out.stdout) == [str(snapshot_path(path)), 10]
    finally:
        store.close()


@pytest.mark.parametrize("kernel_copies", [True, False], ids=["copy_file_range", "read-write"])
def test_the_copy_moves_every_byte_with_or_without_the_kernels_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel_copies: bool
) -> None:
    data = os.urandom(3 << 20) + b"tail"
    (tmp_path / "source").write_bytes(data)
    if not kernel_copies:
        # A stand-in for a file system without copy_file_range (not available here to test).
        def refuse(*_args: object, **_kwargs: object) -> int:
            raise OSError(errno.EXDEV, "cross-device copy")

        monkeypatch.setattr(os, "copy_file_range", refuse)
    source = os.open(tmp_path / "source", os.O_RDONLY)
    try:
        with open(tmp_path / "target", "wb") as out:
            _copy_range(source, out.fileno(), len(data))
    finally:
        os.close(source)
    assert (tmp_path / "target").read_bytes() == data
