"""The collector as several processes (``workers = 2``): HTTP front ends that check and sign,
one writer process that owns the store. Real processes on loopback: records flow through the
front ends into the store exactly once, ``/metrics`` sums every process, and ``kill -9`` of a
front end in the middle of a stream loses no acknowledged record (the writer's own ``kill -9``
is ``test_collector_crash_recovery.py``'s, run with two workers too)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.collector.collector_proc import CollectorProcess, write_tokens
from tests.collector.test_collector_crash_recovery import (
    _batches,
    _send,
    _stored_ids,
    start_agents,
)

from corecensus.ingest.wire import BatchAck
from corecensus.model import CrashRecord

HANG_BOUND_S = 60.0
CONFIG = "workers = 2\nagent_rate_per_s = 1000.0\nagent_burst = 1000\n"


def _agent(
    url: str,
    token: str,
    batches: list[list[CrashRecord]],
    acked: list[int],
    lock: threading.Lock,
) -> None:
    """An agent that retries each batch until it is acknowledged (a refused connection, a
    reset, a 503 are all 'try again'), as the real agent's spool does."""
    with httpx.Client(
        base_url=url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=HANG_BOUND_S,
        limits=httpx.Limits(max_keepalive_connections=0),
    ) as client:
        for index, batch in enumerate(batches):
            end = time.monotonic() + HANG_BOUND_S * 4
            while time.monotonic() < end:
                try:
                    r = _send(client, batch)
                except httpx.TransportError:
                    time.sleep(0.05)
                    continue
                if r.status_code == 200 and BatchAck.from_json(r.json()).accepted == len(batch):
                    with lock:
                        acked.append(index)
                    break
                assert r.status_code == 503, r.text
                time.sleep(0.05)


def _front_end_pids(collector: CollectorProcess) -> set[int]:
    return {int(e["pid"]) for e in collector.events() if e.get("event") == "started"}


@pytest.fixture
def collectors() -> Iterator[list[CollectorProcess]]:
    """Collectors a test started, stopped (SIGTERM, then SIGKILL) if the test failed early:
    a writer process left running keeps its front ends and its store."""
    started: list[CollectorProcess] = []
    yield started
    for c in started:
        if c.proc is not None and c.proc.poll() is None:
            c.proc.send_signal(signal.SIGTERM)
            try:
                c.proc.wait(HANG_BOUND_S)
            except subprocess.TimeoutExpired:
                c.kill()


def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_front_ends_store_every_record_once_and_metrics_sum_every_process(
    tmp_path: Path, collectors: list[CollectorProcess]
) -> None:
    tokens = write_tokens(
        tmp_path / "tokens", {f"agent-{i}": ("*", "upload,read") for i in range(4)}
    )
    collector = CollectorProcess(tmp_path, tokens=tmp_path / "tokens", config=CONFIG)
    collectors.append(collector)
    collector.start()
    assert collector.wait_for("listening")["workers"] == 2
    # Announced only once both front ends serve (each logs "started" before it says so).
    assert len(_front_end_pids(collector)) == 2
    streams = {name: _batches(10, 5, 100_000 * (i + 1)) for i, name in enumerate(tokens)}
    acked, _lock, threads = start_agents(_agent, collector.url, tokens, streams)
    for t in threads:
        t.join(HANG_BOUND_S * 4)
        assert not t.is_alive()
    assert all(len(a) == 10 for a in acked.values())
    client = collector.client(tokens["agent-0"])
    assert client.get("/readyz").json() == {"ready": True}
    # Whichever front end answers, /metrics counts what all of them and the writer did.
    text = client.get("/metrics").text
    assert _metric(text, 'corecensus_collector_records_stored_total{kind="crashes"}') == 200
    received = _metric(text, 'corecensus_collector_records_received_total{kind="crashes"}')
    assert received == 200
    assert _metric(text, "corecensus_collector_queue_records ") == 0
    # The read side goes through the writer process, which holds the store.
    on_web_1 = sum(
        r.metadata.get("COREDUMP_HOSTNAME") == "web-1"
        for batches in streams.values()
        for b in batches
        for r in b
    )
    host = client.get("/api/v1/hosts/web-1")
    assert host.status_code == 200 and host.json()["crash_count"] == on_web_1 > 0
    assert client.get("/api/v1/analysis").status_code == 200
    pids = _front_end_pids(collector)
    assert len(pids) == 2 and collector.proc is not None and collector.proc.pid not in pids
    assert collector.stop() == 0
    for pid in pids:  # the front ends ended with the collector
        assert not Path(f"/proc/{pid}").exists()
    stored = _stored_ids(collector.db)
    everything = {r.core_id for batches in streams.values() for b in batches for r in b}
    assert len(stored) == len(set(stored)) and set(stored) == everything


def test_kill_9_of_a_front_end_mid_stream_loses_no_acknowledged_record(
    tmp_path: Path, collectors: list[CollectorProcess]
) -> None:
    tokens = write_tokens(
        tmp_path / "tokens", {"agent-a": ("*", "upload"), "agent-b": ("*", "upload")}
    )
    collector = CollectorProcess(tmp_path, tokens=tmp_path / "tokens", config=CONFIG)
    collectors.append(collector)
    collector.start()
    collector.wait_for("started", 2)
    victim = min(_front_end_pids(collector))
    streams = {"agent-a": _batches(60, 10, 300_000), "agent-b": _batches(60, 10, 400_000)}
    acked, lock, threads = start_agents(_agent, collector.url, tokens, streams)
    end = time.monotonic() + HANG_BOUND_S * 4
    while time.monotonic() < end:
        with lock:
            if all(len(a) >= 5 for a in acked.values()):
                break
        time.sleep(0.01)
    with lock:
        before = sum(len(a) for a in acked.values())
    os.kill(victim, signal.SIGKILL)
    exited = collector.wait_for("front_end_exited")
    assert exited["pid"] == victim and exited["status"] == -signal.SIGKILL
    collector.wait_for("started", 3)  # its replacement
    for t in threads:
        t.join(HANG_BOUND_S * 4)
        assert not t.is_alive()
    assert before < 2 * 60  # the kill came in the middle of the stream
    # Every batch was acknowledged in the end (the agents retried what the kill cut off) ...
    assert all(len(a) == 60 for a in acked.values())
    assert collector.stop() == 0
    # ... and is in the store exactly once.
    stored = _stored_ids(collector.db)
    everything = {r.core_id for batches in streams.values() for b in batches for r in b}
    assert len(stored) == len(set(stored)) and set(stored) == everything
