"""`analyze` while another process writes the store (issue 10): DuckDB lets no second process
open a file that one is writing, not even read-only, so the writer leaves a snapshot and the
reader falls back to it, saying so. A real ingest of real cores writes the store and its
snapshot; a real second process then holds the store open for writing while `analyze` runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crashers import CrashResult

pytestmark = pytest.mark.kernel_cores

# Safety net only (a hang would be the bug); nothing here depends on speed.
HANG_GUARD_S = 120

HOLDER = """
import sys
from corecensus.store import DuckDBStore
store = DuckDBStore(sys.argv[1])  # the writer's lock, held until stdin closes
print("holding", flush=True)
sys.stdin.read()
store.close()
"""


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corecensus", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=HANG_GUARD_S,
    )


def test_analyze_reads_the_snapshot_while_a_writer_holds_the_store(
    kernel_cores: dict[str, CrashResult], tmp_path: Path
) -> None:
    cores = tmp_path / "cores"
    cores.mkdir()
    for name in ("null_deref", "abort", "sigfpe"):
        core = kernel_cores[name].core
        assert core is not None
        shutil.copy(core, cores / f"core.{name}")
    db = tmp_path / "s.duckdb"
    ingested = _cli("ingest", str(cores), "--db", str(db), "--json", "--no-symbols")
    assert ingested.returncode == 0, ingested.stderr
    assert Path(f"{db}.snapshot").is_file()

    alone = _cli("analyze", "--db", str(db), "--json")
    assert alone.returncode == 0, alone.stderr
    assert "snapshot" not in alone.stderr  # no writer: the store itself is read

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        beside = _cli("analyze", "--db", str(db), "--json")
        snapshot_gone = Path(f"{db}.snapshot")
        snapshot_gone.rename(tmp_path / "kept.snapshot")
        refused = _cli("analyze", "--db", str(db), "--json")
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=HANG_GUARD_S)
        assert holder.stdout is not None
        holder.stdout.close()
    assert beside.returncode == 0, beside.stderr
    assert "is being written by another process; analyzing its snapshot" in beside.stderr
    # The same analysis, and the JSON says what was read (a consumer of --json sees no
    # stderr): the snapshot, written when the ingest last wrote it.
    read_alone, read_beside = json.loads(alone.stdout), json.loads(beside.stdout)
    assert "snapshot" not in read_alone["inputs"]
    snapshot = read_beside["inputs"].pop("snapshot")
    assert snapshot == {
        "path": str(snapshot_gone),
        "written_us": (tmp_path / "kept.snapshot").stat().st_mtime_ns // 1000,
    }
    assert read_beside == read_alone
    # Without a snapshot, a one-line reason and no traceback.
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
