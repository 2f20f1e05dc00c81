"""The collector as several processes (``workers = 2``): HTTP front ends that check and sign,
one writer process that owns the store. Real processes on loopback: records flow through the
front ends into the store exactly once, ``/metrics`` sums every process, ``kill -9`` of a
front end in the middle of a stream loses no acknowledged record (the writer's own ``kill -9``
is ``test_collector_crash_recovery.py``'s, run with two workers too), and a front end's
admission counts the work the other front end holds."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
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
from tests.store.store_records import make_record

from corecensus.ingest.wire import (
    AGENT_HEADER,
    DEADLINE_HEADER,
    BatchAck,
    RecordKind,
    encode_batch,
)
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


def _upload_head(token: str, length: int, deadline_ms: int, client: str) -> bytes:
    return (
        "POST /v1/crashes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\n{DEADLINE_HEADER}: {deadline_ms}\r\n"
        f"{AGENT_HEADER}: {client}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _answer(s: socket.socket) -> tuple[int, dict[str, str], dict[str, object]]:
    """Status, headers (lower-case names) and JSON body of one response."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    while len(body) < int(headers["content-length"]):
        chunk = s.recv(65536)
        assert chunk
        body += chunk
    return int(lines[0].split()[1]), headers, json.loads(body)


def _admission_records(collector: CollectorProcess, pid: int) -> float | None:
    text = collector.client().get("/metrics").text
    name = f'corecensus_collector_admission_records{{pid="{pid}"}} '
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)]
    return values[0] if values else None


def _until(predicate: object, what: str) -> None:
    end = time.monotonic() + HANG_BOUND_S * 2
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError(f"never: {what}")


def _served_by(collector: CollectorProcess, client: str) -> int:
    """The pid of the front end whose log answered the upload sent as ``client``."""
    found = [
        int(e["pid"])
        for e in collector.events()
        if e.get("event") == "upload" and e.get("client") == client
    ]
    assert len(found) == 1, found
    return found[0]


def test_a_front_end_sheds_for_work_the_other_front_end_holds_and_not_at_light_load(
    tmp_path: Path, collectors: list[CollectorProcess]
) -> None:
    """Front end A holds 200 admitted uploads (headers sent, bodies not). Front end B holds
    nothing of its own, yet refuses a request whose deadline that work cannot meet -- 503
    with Retry-After before its body is read -- because the writer told it what A holds; a
    request with a deadline it can meet is taken. Once A's work is gone, one upload at a
    time with the same short deadline is never shed, on either front end.

    The kernel gives a connection to whichever front end accepts first, so the test steers
    connections by stopping the other one (SIGSTOP: a stopped process accepts nothing)."""
    tokens = write_tokens(
        tmp_path / "tokens", {"holder": ("*", "upload"), "probe": ("*", "upload,read")}
    )
    config = (
        CONFIG + "body_timeout_s = 60.0\nheader_timeout_s = 60.0\nmax_inflight_requests = 512\n"
    )
    collector = CollectorProcess(tmp_path, tokens=tmp_path / "tokens", config=config)
    collectors.append(collector)
    collector.start()
    collector.wait_for("started", 2)
    a, b = sorted(_front_end_pids(collector))
    held_count, body = 200, encode_batch(RecordKind.CRASHES, [make_record(1, host="web-1")])
    held: list[socket.socket] = []
    try:
        os.kill(b, signal.SIGSTOP)
        for i in range(held_count):
            s = socket.create_connection(("127.0.0.1", collector.port), timeout=HANG_BOUND_S)
            held.append(s)
            # A long deadline: admitted, then the body never comes (it waits up to 60 s).
            s.sendall(_upload_head(tokens["holder"], 100_000, 600_000, f"held-{i}"))
        # A decided on every one of them (its gauge, set at each decision, counts the others
        # ahead at 100 records per request: the average size before any body was read) ...
        _until(
            lambda: (_admission_records(collector, a) or 0) >= (held_count - 1) * 100,
            "A admitted the held uploads",
        )
        os.kill(b, signal.SIGCONT)
        # ... and B heard it from the writer.
        _until(
            lambda: (_admission_records(collector, b) or 0) >= held_count * 100,
            "B heard of A's work",
        )
        os.kill(a, signal.SIGSTOP)  # from here B takes every connection
        try:
            with socket.create_connection(("127.0.0.1", collector.port), timeout=HANG_BOUND_S) as s:
                s.sendall(_upload_head(tokens["probe"], len(body), 1000, "probe-short"))
                status, headers, doc = _answer(s)  # no body sent: refused before reading it
            assert (status, doc["error"]) == (503, "overloaded"), doc
            assert int(headers["retry-after"]) >= 1
            assert doc["records_ahead"] >= held_count * 100  # A's work, not B's own
            with socket.create_connection(("127.0.0.1", collector.port), timeout=HANG_BOUND_S) as s:
                s.sendall(_upload_head(tokens["probe"], len(body), 600_000, "probe-long"))
                s.sendall(body)
                status, _headers, doc = _answer(s)
            assert status == 200 and doc["accepted"] == 1, doc
        finally:
            os.kill(a, signal.SIGCONT)
        assert _served_by(collector, "probe-short") == _served_by(collector, "probe-long") == b
    finally:
        os.kill(b, signal.SIGCONT)
        for s in held:
            s.close()
    # A answers each held upload (its client went away); then B hears that A holds nothing.
    _until(
        lambda: sum(e.get("agent") == "holder" for e in collector.events()) == held_count,
        "A answered the held uploads",
    )
    _until(lambda: _admission_records(collector, b) == 0, "B heard A's work is gone")
    # Light load: one upload at a time, the same 1 s deadline, on both front ends: none shed.
    served: Counter[int] = Counter()
    client = collector.client(tokens["probe"])
    for i in range(100):
        r = client.post(
            "/v1/crashes",
            content=encode_batch(RecordKind.CRASHES, [make_record(10 + i, host="web-2")]),
            headers={
                "Content-Type": "application/json",
                DEADLINE_HEADER: "1000",
                AGENT_HEADER: f"light-{i}",
            },
        )
        assert r.status_code == 200, r.text
        served[_served_by(collector, f"light-{i}")] += 1
        if served[a] >= 3 and served[b] >= 3:
            break
    assert served[a] >= 3 and served[b] >= 3, served
    assert collector.stop() == 0
