"""The agent against the real collector (issue 11's ``corecensus collector serve``, a separate
process on loopback, with tokens): a real kernel core captured by ``handle-core``, a core found in
an emulated systemd-coredump directory and heartbeats arrive and are queryable; the collector
stopped while the agent keeps capturing, then started again on the same port and database: the
agent drains its spool and every record is there once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from agent_cli import agent_argv, clean_env
from test_agent_daemon import Agent, base_env, wait_until
from test_agent_handler import Stand
from test_agent_watch import systemd_core

from corecensus.agent.facts import host_microcode
from corecensus.store import HEARTBEATS, DuckDBStore
from crashers import CrashResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "collector"))
from collector_proc import CollectorProcess, write_tokens


def capture(state: Path, stand: Stand, core: bytes, time_s: int) -> None:
    """``handle-core`` as the kernel runs it (the stand-in keeps /proc/<pid> alive)."""
    args = [str(stand.pid)] * 3 + ["11", str(time_s), "web-1", "null_deref"]
    subprocess.run(
        agent_argv(state, "handle-core", *args),
        input=core,
        env=clean_env({"CORECENSUS_AGENT_HOSTNAME": "web-1"}),
        capture_output=True,
        timeout=300,
        check=True,
    )


def host_view(collector: CollectorProcess, token: str) -> dict[str, Any]:
    r = collector.client(token).get("/api/v1/hosts/web-1")
    if r.status_code == 404:
        return {"crashes": []}
    r.raise_for_status()
    out: dict[str, Any] = r.json()
    return out


def test_agent_to_real_collector_through_an_outage(tmp_path: Path, kernel_cores: Any) -> None:
    crash: CrashResult = kernel_cores["null_deref"]
    assert crash.core is not None
    data = crash.core.read_bytes()
    tokens = write_tokens(tmp_path / "tokens", {"web-1": ("web-1", "upload"), "ops": ("*", "read")})
    collector = CollectorProcess(tmp_path, tokens=tmp_path / "tokens").start()
    state = tmp_path / "state"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    stand = Stand(cwd)
    agent: Agent | None = None
    try:
        capture(state, stand, data, 1700000000)
        # Another crash (the same core would be the same record: ids are content hashes).
        systemd_core(tmp_path / "coredump", kernel_cores["abort"])
        env = base_env(collector.url, tmp_path) | {"CORECENSUS_AGENT_TOKEN": tokens["web-1"]}
        agent = Agent(state, env)
        wait_until(lambda: len(host_view(collector, tokens["ops"])["crashes"]) == 2, "two crashes")
        crashes = host_view(collector, tokens["ops"])["crashes"]
        assert sorted(c.get("cpu") is None for c in crashes) == [False, True]
        assert stand.cpu in [c.get("cpu") for c in crashes]
        # The collector goes away; crashes keep happening and are spooled.
        assert collector.stop() == 0
        port = collector.port
        # Three other crashes (a record's id is a hash of its core's head: same core, same id).
        for i, name in enumerate(("sigfpe", "sigill", "bit_flip")):
            other: CrashResult = kernel_cores[name]
            assert other.core is not None
            capture(state, stand, other.core.read_bytes(), 1700000100 + i)
        wait_until(
            lambda: (agent.status().get("upload") or {}).get("consecutive_failures", 0) >= 2,
            "failed uploads while the collector is down",
        )
        # Back, on the same port and database.
        collector = _start_on(
            CollectorProcess(tmp_path, db=collector.db, tokens=tmp_path / "tokens"), port
        )
        wait_until(lambda: len(host_view(collector, tokens["ops"])["crashes"]) == 5, "five crashes")
        wait_until(lambda: agent.status().get("spool", {}).get("records") == 0, "an empty spool")
        assert agent.status()["lost"] == {}
        # The agent's heartbeats carry its health, and the collector stored it (issue 12).
        agent.stop()
        agent = None
        assert collector.stop() == 0
        with DuckDBStore(collector.db, read_only=True) as store:
            own = [h for h in store.rows(HEARTBEATS) if h.service == "corecensus-agent"]
        assert own and all(h.host == "web-1" for h in own)
        assert all(h.uptime_s is not None and h.uptime_s > 0 for h in own)
        assert all(h.agent_uptime_s is not None and h.agent_uptime_s >= 0 for h in own)
        assert {h.lost for h in own} == {"{}"}  # reported, and nothing was lost
        # ... and the host's kernel and microcode (issue 9), as this machine has them
        release = Path("/proc/sys/kernel/osrelease").read_text().strip()
        assert {(h.kernel, h.microcode) for h in own} == {(release, host_microcode())}
    finally:
        if agent is not None:
            agent.stop()
        stand.stop()
        collector.stop()


def _start_on(collector: CollectorProcess, port: int) -> CollectorProcess:
    """Start ``collector`` listening on ``port`` (its helper binds an ephemeral port)."""
    argv = [sys.executable, "-m", "corecensus", "collector", "serve", "--db", str(collector.db)]
    argv += ["--listen", f"127.0.0.1:{port}", "--tokens", str(collector.tokens)]
    log = collector.log_path
    with open(log, "wb") as fh:
        collector.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=fh, stdin=subprocess.DEVNULL
        )
    collector.port = collector.wait_for("listening")["port"]
    assert collector.port == port
    httpx.get(f"{collector.url}/healthz", timeout=60).raise_for_status()
    return collector
