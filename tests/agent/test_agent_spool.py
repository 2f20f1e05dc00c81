"""The spool: durable, bounded, oldest dropped first and counted, whole records after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from corecensus.agent.spool import LossReason, Spool


def _body(i: int, pad: int = 0) -> dict[str, object]:
    return {"core_id": f"c{i}", "pad": "x" * pad}


def test_put_peek_ack_oldest_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    for i in range(5):
        assert spool.put("crash", _body(i)) is not None
    batch = spool.peek(3, 1 << 20)
    assert [r.body["core_id"] for r in batch] == ["c0", "c1", "c2"]
    assert all(r.kind == "crash" for r in batch)
    spool.ack([r.name for r in batch])
    assert [r.body["core_id"] for r in spool.peek(10, 1 << 20)] == ["c3", "c4"]
    assert spool.depth()[0] == 2
    assert spool.lost() == {}  # must not fire: nothing was dropped


def test_peek_respects_bytes_but_returns_at_least_one(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    for i in range(4):
        spool.put("crash", _body(i, 1000))
    assert len(spool.peek(10, 2500)) == 2
    assert len(spool.peek(10, 10)) == 1


def test_bounded_in_bytes_oldest_dropped_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10_000)
    for i in range(40):
        spool.put("crash", _body(i, 900))
    records, size = spool.depth()
    assert size <= 10_000
    kept = [r.body["core_id"] for r in spool.peek(100, 1 << 20)]
    assert kept == [f"c{i}" for i in range(40 - records, 40)]  # the newest, in order
    assert spool.lost() == {LossReason.SPOOL_FULL: 40 - records}


def test_record_larger_than_the_spool_is_dropped_alone(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 5_000)
    spool.put("crash", _body(1, 100))
    assert spool.put("crash", _body(2, 10_000)) is None
    assert [r.body["core_id"] for r in spool.peek(10, 1 << 20)] == ["c1"]
    assert spool.lost() == {LossReason.TOO_LARGE: 1}


def test_corrupt_file_is_removed_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.put("crash", _body(1))
    (tmp_path / "00000000000000000000-1-000000-crash.rec").write_bytes(b'{"kind": "cr')
    assert [r.body["core_id"] for r in spool.peek(10, 1 << 20)] == ["c1"]
    assert spool.lost() == {LossReason.CORRUPT: 1}


def test_take_lost_keeps_newer_losses(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    spool.count_lost(LossReason.REJECTED, 3)
    reported = spool.lost()
    spool.count_lost(LossReason.REJECTED, 2)  # after the heartbeat was built
    spool.take_lost(reported)
    assert spool.lost() == {LossReason.REJECTED: 2}


_WRITER = """
import sys
from pathlib import Path
from corecensus.agent.spool import Spool
spool = Spool(Path(sys.argv[1]), 1 << 30)
i = 0
while True:
    spool.put("crash", {"core_id": f"{sys.argv[2]}-{i}", "pad": "y" * 20000})
    print(i, flush=True)
    i += 1
"""


def test_survives_kill_9_with_whole_records_only(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path), "w"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    acknowledged = -1
    while acknowledged < 30:
        acknowledged = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)  # somewhere inside a put, most likely
    proc.wait()
    proc.stdout.close()
    spool = Spool(tmp_path, 1 << 30)
    ids = [r.body["core_id"] for r in spool.peek(100_000, 1 << 40)]
    assert spool.lost() == {}  # every file on disk parsed: no torn record
    # Every put that returned is there, in order, with no gap (the writer may have run ahead of
    # the lines this test read before the kill; those records are whole too).
    assert len(ids) >= acknowledged + 1
    assert ids == [f"w-{i}" for i in range(len(ids))]
    # A temporary file the killed writer may have left is cleaned once it is old.
    for tmp in tmp_path.glob(".*.tmp"):
        os.utime(tmp, (time.time() - 3600, time.time() - 3600))
    spool.clean_temporaries()
    assert list(tmp_path.glob(".*.tmp")) == []
    assert spool.put("crash", _body(99)) is not None


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom pathlib import Path\nfrom corecensus.agent.spool import Spool\n"
        "s = Spool(Path(sys.argv[1]), 1 << 30)\n"
        "for i in range(40):\n    s.put('crash', {'core_id': f'{sys.argv[2]}-{i}'})\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path), f"p{n}"]) for n in range(4)
    ]
    assert [p.wait() for p in procs] == [0, 0, 0, 0]
    ids = {r.body["core_id"] for r in Spool(tmp_path, 1 << 30).peek(1000, 1 << 30)}
    assert ids == {f"p{n}-{i}" for n in range(4) for i in range(40)}


def test_spool_files_are_json_objects(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 1 << 20)
    name = spool.put("screening", {"kind": "sdc_screen"})
    assert name is not None
    assert json.loads((tmp_path / name).read_text()) == {
        "kind": "screening",
        "body": {"kind": "sdc_screen"},
    }
