"""``agent run`` as real processes against a real HTTP server on loopback (collector_stub.py):
records, heartbeats and watched cores arrive; the collector down then back loses and duplicates
nothing; Retry-After is honoured (the gap between arrivals, measured, is at least what was
asked -- a lower bound, which a busy machine only lengthens); the kill switch stops all traffic.
Waits are bounded polls, never timing assertions."""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_cli import agent_argv, clean_env
from collector_stub import Scripted, StubCollector
from test_agent_uploader import crash
from test_agent_watch import systemd_core

from corecensus.agent.config import AgentConfig
from corecensus.agent.daemon import Daemon
from corecensus.agent.facts import host_microcode
from corecensus.agent.spool import Spool
from crashers import CrashResult


def wait_until(pred: Callable[[], bool], what: str, limit_s: float = 180.0) -> None:
    end = time.monotonic() + limit_s
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


class Agent:
    def __init__(self, state: Path, env: dict[str, str]) -> None:
        self.state = state
        self.proc = subprocess.Popen(
            agent_argv(state, "run"),
            env=clean_env(env),
            stderr=subprocess.PIPE,
        )

    def status(self) -> dict[str, Any]:
        try:
            obj: dict[str, Any] = json.loads((self.state / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        return obj

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=120)
        assert self.proc.stderr is not None
        err = self.proc.stderr.read().decode()
        self.proc.stderr.close()
        assert rc == 0, err


def base_env(url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "CORECENSUS_AGENT_COLLECTOR_URL": url,
        "CORECENSUS_AGENT_HOSTNAME": "web-1",
        "CORECENSUS_AGENT_FIRST_CONTACT_WINDOW_S": "0",
        "CORECENSUS_AGENT_SCAN_INTERVAL_S": "0.2",
        "CORECENSUS_AGENT_HEARTBEAT_INTERVAL_S": "3600",
        "CORECENSUS_AGENT_BACKOFF_BASE_S": "0.2",
        "CORECENSUS_AGENT_BACKOFF_MAX_S": "1",
        "CORECENSUS_AGENT_REQUESTS_PER_S": "100",
        "CORECENSUS_AGENT_REQUEST_BURST": "100",
        "CORECENSUS_AGENT_BATCH_RECORDS": "10",
        "CORECENSUS_AGENT_SCREEN_MODE": "",
        "CORECENSUS_AGENT_SYSTEMD_COREDUMP_DIR": str(tmp_path / "coredump"),
    }


@pytest.fixture
def collector() -> Iterator[StubCollector]:
    c = StubCollector().start()
    try:
        yield c
    finally:
        c.stop()


def prefill(state: Path, n: int) -> None:
    spool = Spool(state / "spool", 64 << 20)
    for i in range(n):
        spool.put("crash", crash(i))


def test_records_heartbeats_and_watched_cores_arrive(
    tmp_path: Path, collector: StubCollector, kernel_cores: Any
) -> None:
    state = tmp_path / "state"
    prefill(state, 5)
    null_deref: CrashResult = kernel_cores["null_deref"]
    systemd_core(tmp_path / "coredump", null_deref)
    agent = Agent(state, base_env(collector.url, tmp_path))
    try:
        wait_until(lambda: len(collector.stored["crashes"]) == 6, "six crash records")
        wait_until(lambda: len(collector.stored["heartbeats"]) >= 1, "a heartbeat")
        wait_until(lambda: (agent.status().get("upload") or {}).get("last_success"), "status")
    finally:
        agent.stop()
    watched = [r for r in collector.stored["crashes"].values() if r["status"] == "ok"]
    assert len(watched) == 1 and watched[0]["metadata"]["COREDUMP_PID"] == str(null_deref.pid)
    beat = next(iter(collector.stored["heartbeats"].values()))
    assert beat["host"] == "web-1" and beat["service"] == "corecensus-agent"
    # the host's kernel and microcode ride on it (issue 9), read from this machine's /proc
    assert beat["kernel"] == Path("/proc/sys/kernel/osrelease").read_text().strip()
    assert beat.get("microcode") == host_microcode()
    assert collector.duplicates == 0
    status = subprocess.run(
        agent_argv(state, "status", "--json"),
        capture_output=True,
        text=True,
        check=True,
    )
    shown = json.loads(status.stdout)
    assert shown["spool"]["records"] == 0 and shown["lost"] == {}
    assert shown["daemon"]["running"] is False and shown["daemon"]["upload"]["sent_records"] >= 7


def test_collector_down_then_back_drains_without_loss_or_duplicate(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on (yet)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = tmp_path / "state"
    prefill(state, 30)
    agent = Agent(state, base_env(f"http://127.0.0.1:{port}", tmp_path))
    back: StubCollector | None = None
    try:
        wait_until(
            lambda: (agent.status().get("upload") or {}).get("consecutive_failures", 0) >= 3,
            "failed attempts while the collector is down",
        )
        assert agent.status()["spool"]["records"] >= 30  # nothing dropped meanwhile
        back = StubCollector(port).start()
        wait_until(lambda: len(back.stored["crashes"]) == 30, "the spool to drain")
        wait_until(lambda: agent.status().get("spool", {}).get("records") == 0, "an empty spool")
    finally:
        agent.stop()
        if back is not None:
            back.stop()
    assert back.duplicates == 0
    assert agent.status()["lost"] == {}


def test_retry_after_is_honoured_measured_at_the_collector(
    tmp_path: Path, collector: StubCollector
) -> None:
    state = tmp_path / "state"
    prefill(state, 1)
    collector.script.append(Scripted(503, {"Retry-After": "2"}, {"error": "overloaded"}))
    agent = Agent(state, base_env(collector.url, tmp_path))
    try:
        wait_until(lambda: len(collector.stored["crashes"]) == 1, "the retried record")
    finally:
        agent.stop()
    first, second = collector.arrivals[0], collector.arrivals[1]
    assert first.status == 503 and second.status == 200
    assert second.time - first.time >= 2.0


def test_kill_switch_stops_all_traffic(tmp_path: Path, collector: StubCollector) -> None:
    state = tmp_path / "state"
    prefill(state, 3)
    env = base_env(collector.url, tmp_path) | {"CORECENSUS_DISABLED": "1"}
    agent = Agent(state, env)
    try:
        wait_until(lambda: agent.status().get("disabled") == "CORECENSUS_DISABLED=1", "disabled")
        first = agent.status()["updated"]
        wait_until(lambda: agent.status()["updated"] > first + 1.0, "more disabled steps")
    finally:
        agent.stop()
    assert collector.arrivals == []
    assert Spool(state / "spool", 64 << 20).depth()[0] == 3


def test_a_scheduled_screen_is_run_and_its_record_accepted(
    tmp_path: Path, collector: StubCollector
) -> None:
    config = AgentConfig(
        state_dir=tmp_path / "state",
        collector_url=collector.url,
        hostname="web-1",
        first_contact_window_s=0.0,
        screen_mode="periodic",
        screen_interval_s=1e-6,  # due at once
        screen_budget_s=3.0,
        systemd_coredump_dir=tmp_path / "none",
    )
    daemon = Daemon(config, env={}, rng=random.Random(1))
    try:
        daemon.step()
    finally:
        assert daemon.uploader is not None
        daemon.uploader.client.close()
    assert daemon.counts["screens"] == 1, list(daemon.errors)
    screens = list(collector.stored["screenings"].values())
    assert len(screens) == 1 and screens[0]["host"] == "web-1"
    assert screens[0]["decision"]["verdict"] == daemon.last_screen_verdict
