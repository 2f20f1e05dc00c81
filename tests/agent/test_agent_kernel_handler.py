"""The handler installed for real: the KERNEL pipes a real crash's core to it.

Changes /proc/sys/kernel/core_pattern for the machine, so it runs only as root with
CORECENSUS_TEST_KERNEL_HANDLER=1 (.ci/run sets it) and restores the previous pattern in a
fixture's finally, even when the test fails. While installed, the handler chains to the previous
pattern, so any other process crashing meanwhile still gets its ``core`` file.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard
from agent_cli import agent_argv, clean_env
from collector_stub import StubCollector

from corecensus.agent.spool import Spool
from crashers import kernel_core_support, run_crasher

ENV = "CORECENSUS_TEST_KERNEL_HANDLER"
PATTERN = Path("/proc/sys/kernel/core_pattern")
PIPE_LIMIT = Path("/proc/sys/kernel/core_pipe_limit")

pytestmark = pytest.mark.skipif(
    os.environ.get(ENV) != "1" or os.geteuid() != 0,
    reason=f"changes the machine's core_pattern: needs root and {ENV}=1 (set in .ci/run)",
)


def _agent(
    state: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        agent_argv(state, *args),
        capture_output=True,
        text=True,
        env=clean_env(env),
        timeout=120,
    )


@pytest.fixture
def installed(short_dir: Path) -> Iterator[Path]:
    ok, reason = kernel_core_support()
    if not ok:
        pytest.skip(reason)
    before = PATTERN.read_text()
    before_limit = PIPE_LIMIT.read_text()
    try:
        done = _agent(short_dir, "install-handler")
        assert done.returncode == 0, done.stderr
        assert PATTERN.read_text().startswith("|")
        yield short_dir
        undone = _agent(short_dir, "uninstall-handler")
        assert undone.returncode == 0, undone.stderr
        assert PATTERN.read_text() == before and PIPE_LIMIT.read_text() == before_limit
    finally:
        # Whatever happened above, the machine gets its pattern back.
        if PATTERN.read_text() != before:
            PATTERN.write_text(before)
        if PIPE_LIMIT.read_text() != before_limit:
            PIPE_LIMIT.write_text(before_limit)


def _record_for(state: Path, pid: int) -> dict[str, Any]:
    """The handler finishes (parse, spool) after the kernel let the process go: wait for it."""
    spool = Spool(state / "spool", 1 << 30)
    for _ in range(2400):
        for rec in spool.peek(10_000, 1 << 30):
            if rec.body.get("metadata", {}).get("COREDUMP_PID") == str(pid):
                return rec.body
        subprocess.run(["sleep", "0.05"], check=True)
    raise AssertionError(f"no record of pid {pid} in {state / 'spool'}")


def test_kernel_pipes_a_real_crash_to_the_handler(installed: Path, tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    targets = sorted({cpus[0], cpus[-1]})
    saved = os.sched_getaffinity(0)
    pids = []
    for cpu in targets:
        os.sched_setaffinity(0, {cpu})  # the crasher inherits it: it can run on this CPU only
        try:
            crash = run_crasher("null_deref", tmp_path / f"run{cpu}", build_dir=tmp_path / "build")
        finally:
            os.sched_setaffinity(0, saved)
        # The handler chained to the previous pattern: the crasher's own core file is there.
        assert crash.core is not None and crash.core_dumped
        pids.append(crash.pid)
        record = _record_for(installed, crash.pid)
        meta = record["metadata"]
        assert meta["CORECENSUS_CPU"] == str(cpu)
        assert meta["CORECENSUS_CPUS_ALLOWED"] == str(cpu)
        assert meta["CORECENSUS_KERNEL"] == os.uname().release
        assert meta["COREDUMP_SIGNAL"] == "11" and meta["COREDUMP_COMM"] == "null_deref"
        assert record["status"] == "ok" and record["signal_name"] == "SIGSEGV"
        assert record["pid"] == crash.pid and record["cpu"] == cpu
        stored = Path(record["source"])
        with stored.open("rb") as fh:
            assert zstandard.ZstdDecompressor().stream_reader(fh).read() == crash.core.read_bytes()
    # ... and the records, with the CPU each ran on, arrive at a collector.
    collector = StubCollector().start()
    try:
        env = {
            "CORECENSUS_AGENT_COLLECTOR_URL": collector.url,
            "CORECENSUS_AGENT_FIRST_CONTACT_WINDOW_S": "0",
            "CORECENSUS_AGENT_SCREEN_MODE": "",
            "CORECENSUS_AGENT_SYSTEMD_COREDUMP_DIR": str(tmp_path / "none"),
        }
        sent = _agent(installed, "run", "--once", env=env)
        assert sent.returncode == 0, sent.stderr
    finally:
        collector.stop()
    arrived = {r["metadata"]["COREDUMP_PID"]: r for r in collector.stored["crashes"].values()}
    for cpu, pid in zip(targets, pids, strict=True):
        assert arrived[str(pid)]["cpu"] == cpu
