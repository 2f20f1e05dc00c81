"""A parser worker killed with `kill -9` mid-batch loses nothing: the unfinished cores are parsed
again, each alone, and the batch completes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crashers import CrashResult

pytestmark = pytest.mark.kernel_cores

NAMES = [
    "null_deref",
    "abort",
    "sigfpe",
    "sigill",
    "sigbus",
    "thread_crash",
    "return_to_null",
    "bit_flip",
]
COPIES = 6


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def test_kill_9_of_a_worker_loses_no_core(
    kernel_cores: dict[str, CrashResult], tmp_path: Path
) -> None:
    cores = tmp_path / "cores"
    cores.mkdir()
    for name in NAMES:
        src = kernel_cores[name].core
        assert src is not None
        for i in range(COPIES):
            shutil.copy(src, cores / f"core.{name}.{i}")
    db = tmp_path / "s.duckdb"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "corecensus",
            "ingest",
            str(cores),
            "--db",
            str(db),
            "--jobs",
            "2",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Kill a worker as soon as one exists: any worker that dies breaks the pool, and the
    # earlier the kill, the more of the batch is surely unfinished.  (Waiting a while first
    # made the outcome depend on how fast the machine parsed in the meantime: a batch that
    # finished before the kill had nothing left to retry.)  The deadline only bounds a hang.
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and time.monotonic() < deadline and proc.poll() is None:
        for worker in _children(proc.pid):
            try:
                os.kill(worker, signal.SIGKILL)
            except ProcessLookupError:
                continue
            killed = worker
            break
        else:
            time.sleep(0.005)
    out, err = proc.communicate(timeout=300)
    assert killed is not None, "no worker process seen to kill"
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    summary = json.loads(out)
    assert summary["cores"] == len(NAMES) * COPIES
    # Every distinct crash is stored once; every copy was parsed and counted.
    assert summary["ingested"] == len(NAMES)
    assert summary["ingested"] + summary["duplicates"] == len(NAMES) * COPIES
    assert summary["unparsed"] == 0
    # Only the cores the dead worker had started run again alone (issue 10: one death once
    # made every remaining core of the batch run one at a time); with two workers that is at
    # most two, and none if the kill came before the worker began its first core.
    assert summary["worker_died"] == 1 and summary["retried_alone"] <= 2


def _alive(pid: int) -> bool:
    """Running or sleeping (a zombie, reaped or not, has finished)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_kill_9_of_the_ingest_takes_its_workers_with_it(
    kernel_cores: dict[str, CrashResult], tmp_path: Path
) -> None:
    """`kill -9` of `corecensus ingest` left its parser workers asleep forever, orphans waiting
    on a queue whose writer was gone (each holding its imports, drgn and all). They now ask the
    kernel for SIGTERM when their parent dies (PR_SET_PDEATHSIG), and a re-run stores every
    core once."""
    cores = tmp_path / "cores"
    cores.mkdir()
    for name in NAMES:
        src = kernel_cores[name].core
        assert src is not None
        for i in range(COPIES):
            shutil.copy(src, cores / f"core.{name}.{i}")
    db = tmp_path / "s.duckdb"
    args = [sys.executable, "-m", "corecensus", "ingest", str(cores), "--db", str(db), "--json"]
    proc = subprocess.Popen(
        [*args, "--jobs", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    workers: list[int] = []
    deadline = time.monotonic() + 60  # bounds a hang only; the workers appear at once
    while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
        workers = _children(proc.pid)
        time.sleep(0.005)
    assert len(workers) == 2, "the ingest finished or hung before both workers were seen"
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 60  # bounds a hang only: the kernel signals at once
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.01)
    orphans = [w for w in workers if _alive(w)]
    for w in orphans:  # never leave them behind, whatever the outcome
        os.kill(w, signal.SIGKILL)
    assert orphans == [], "workers outlived the ingest they belonged to"
    again = subprocess.run([*args, "--jobs", "2"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["ingested"] + summary["duplicates"] == len(NAMES) * COPIES
    assert summary["unparsed"] == 0
