"""`corecensus analyze --db FILE` while a real collector holds FILE as its one writer: DuckDB lets
no second process open the file, not even read-only, so the collector leaves a snapshot of what
it has committed and `analyze` reads that (saying so); once the collector has stopped, `analyze`
reads the store itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.collector.collector_proc import CollectorProcess
from tests.store.store_records import make_record

from corecensus.ingest.wire import BatchAck, ContentEncoding, RecordKind, compress, encode_batch

HANG_GUARD_S = 120


def _analyze(db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corecensus", "analyze", "--db", str(db), "--json"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=HANG_GUARD_S,
    )


def _upload(proc: CollectorProcess, first: int, count: int) -> None:
    records = [make_record(first + i, host=f"web-{i % 3}") for i in range(count)]
    body = compress(encode_batch(RecordKind.CRASHES, records), ContentEncoding.ZSTD)
    r = proc.client().post(
        "/v1/crashes",
        content=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "zstd"},
    )
    assert r.status_code == 200, r.text
    assert BatchAck.from_json(r.json()).accepted == count


def _crashes(result: subprocess.CompletedProcess[str]) -> int:
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    return sum(p["crashes"] for p in doc["populations"])


def test_analyze_reads_the_collectors_snapshot_while_it_serves_and_the_store_after(
    tmp_path: Path,
) -> None:
    # No tokens: a loopback collector that accepts any host.
    proc = CollectorProcess(tmp_path, config="snapshot_interval_s = 0.05\n").start()
    try:
        proc.wait_for("snapshot")  # the one written when the writer starts
        _upload(proc, 0, 30)
        # The writer snapshots after a commit (here: at once, the interval being short); the
        # snapshot after this one holds these 30 records.
        proc.wait_for("snapshot", count=2)
        beside = _analyze(proc.db)
        assert "snapshot" in beside.stderr  # says what it read
        assert _crashes(beside) == 30

        _upload(proc, 100, 12)
        proc.wait_for("snapshot", count=3)
        assert _crashes(_analyze(proc.db)) == 42
    finally:
        assert proc.stop() == 0
    after = _analyze(proc.db)
    assert "snapshot" not in after.stderr  # no writer: the store itself
    assert _crashes(after) == 42


def test_an_idle_collector_writes_no_snapshot_without_new_commits(tmp_path: Path) -> None:
    proc = CollectorProcess(tmp_path, config="snapshot_interval_s = 0.05\n").start()
    try:
        proc.wait_for("snapshot")
        _upload(proc, 0, 5)
        proc.wait_for("snapshot", count=2)
        # Health probes are no commits: however long this takes, no snapshot follows them.
        for _ in range(20):
            assert proc.client().get("/healthz").status_code == 200
        _upload(proc, 10, 5)
        proc.wait_for("snapshot", count=3)
    finally:
        assert proc.stop() == 0
    snapshots = [e for e in proc.events() if e.get("event") == "snapshot"]
    assert len(snapshots) == 3
