"""The collector as a real server process on loopback: uploads end to end, refusals answered
right while others are served, and the answers an agent relies on (429/503 with Retry-After)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import zstandard
from tests.collector.collector_proc import CollectorProcess, write_tokens
from tests.store.store_records import make_record

from corecensus.coredump import inspect_core
from corecensus.ingest.wire import (
    AGENT_HEADER,
    DEADLINE_HEADER,
    BatchAck,
    ContentEncoding,
    HeartbeatRecord,
    RecordKind,
    compress,
    encode_batch,
)
from corecensus.model import CrashRecord
from corecensus.store import open_store

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples" / "x86_64"
HANG_BOUND_S = 60.0


def crash(i: int, host: str = "web-1", **kwargs: Any) -> CrashRecord:
    return make_record(i, host=host, **kwargs)


def post(
    client: httpx.Client,
    kind: RecordKind,
    records: list[Any],
    encoding: ContentEncoding = ContentEncoding.IDENTITY,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    body = compress(encode_batch(kind, records), encoding)
    h = {"Content-Type": "application/json", **(headers or {})}
    if encoding is not ContentEncoding.IDENTITY:
        h["Content-Encoding"] = str(encoding)
    return client.post(f"/v1/{kind}", content=body, headers=h)


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[CollectorProcess, dict[str, str]]]:
    work = tmp_path_factory.mktemp("collector")
    tokens = write_tokens(
        work / "tokens",
        {
            "web-1": ("web-1", "upload"),
            "rack-7": ("web-7,web-8", "upload"),
            "relay": ("*", "upload"),
            "dash": ("-", "read"),
        },
    )
    config = "header_timeout_s = 1.0\nbody_timeout_s = 1.0\nanalysis_interval_s = 0.5\nagent_rate_per_s = 1000.0\nagent_burst = 1000\n"
    proc = CollectorProcess(work, tokens=work / "tokens", config=config).start()
    yield proc, tokens
    assert proc.stop() == 0


def test_records_flow_into_the_store_and_out_of_the_analysis(
    fleet: tuple[CollectorProcess, dict[str, str]],
) -> None:
    proc, tokens = fleet
    real = inspect_core(SAMPLES / "null_deref" / "core.zst", binaries=[SAMPLES / "null_deref"])
    real = dataclasses.replace(
        real,
        metadata={
            **real.metadata,
            "COREDUMP_HOSTNAME": "web-7",
            "COREDUMP_TIMESTAMP": "1700000000000000",
        },
    )
    rack = proc.client(tokens["rack-7"])
    relay = proc.client(tokens["relay"])
    r = post(rack, RecordKind.CRASHES, [real, crash(1, "web-8")], ContentEncoding.ZSTD)
    assert r.status_code == 200, r.text
    assert BatchAck.from_json(r.json()).accepted == 2
    batch = [
        crash(i, f"host-{i % 3}", anomalies=("sp_off_by_8",) if i % 2 else ())
        for i in range(100, 140)
    ]
    r = post(relay, RecordKind.CRASHES, batch, ContentEncoding.GZIP)
    assert r.status_code == 200 and r.json()["accepted"] == 40
    beats = [
        HeartbeatRecord("web-7", 1_700_000_000_000_000 + i * 300_000_000, "svc", "1.0.0")
        for i in range(5)
    ]
    assert post(rack, RecordKind.HEARTBEATS, beats).json()["accepted"] == 5

    reader = proc.client(tokens["dash"])
    end = time.monotonic() + HANG_BOUND_S
    doc: dict[str, Any] = {}
    while time.monotonic() < end:  # the cache is recomputed at most every 0.5 s
        r = reader.get("/api/v1/analysis")
        assert r.status_code == 200, r.text
        doc = r.json()
        if doc["crashes"] >= 42:
            break
        time.sleep(0.2)
    assert doc["crashes"] >= 42
    assert doc["populations"] and {"populations", "hosts", "computed_at_us"} <= set(doc)
    assert sum(p["crashes"] for p in doc["populations"]) == doc["crashes"]

    host = reader.get("/api/v1/hosts/web-7").json()
    assert host["crash_count"] == 1
    assert host["crashes"][0]["core_id"] == real.core_id
    assert host["crashes"][0]["signal"] == 11
    assert reader.get("/api/v1/hosts/never-seen").status_code == 404
    # Reading needs the read scope; an uploader's token does not have it.
    assert rack.get("/api/v1/analysis").status_code == 403
    assert proc.client().get("/api/v1/analysis").status_code == 401


def test_unauthenticated_and_wrong_tokens_are_401_and_wrong_hosts_403(
    fleet: tuple[CollectorProcess, dict[str, str]],
) -> None:
    proc, tokens = fleet
    records = [crash(200, "web-1")]
    r = post(proc.client(), RecordKind.CRASHES, records)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    name, _, secret = tokens["web-1"].partition(".")
    for bad in (f"{name}.{secret[:-1]}x", f"nobody.{secret}", secret, "web-1."):
        assert post(proc.client(bad), RecordKind.CRASHES, records).status_code == 401, bad
    r = post(proc.client(tokens["dash"]), RecordKind.CRASHES, records)
    assert r.status_code == 403 and r.json()["error"] == "forbidden_scope"
    # web-1's token may speak for web-1 only: one foreign record refuses the whole batch.
    mixed = [crash(201, "web-1"), crash(202, "web-7"), crash(203, "web-1")]
    r = post(proc.client(tokens["web-1"]), RecordKind.CRASHES, mixed)
    assert r.status_code == 403
    assert r.json() == {
        "error": "forbidden_host",
        "detail": "1 records name hosts this token may not speak for",
        "indices": [1],
    }
    # Its own host is fine (the rule must not fire on it).
    r = post(proc.client(tokens["web-1"]), RecordKind.CRASHES, [crash(201, "web-1")])
    assert r.status_code == 200
    beat = HeartbeatRecord("web-8", 1, "svc", "1")
    assert post(proc.client(tokens["web-1"]), RecordKind.HEARTBEATS, [beat]).status_code == 403
    assert post(proc.client(tokens["rack-7"]), RecordKind.HEARTBEATS, [beat]).status_code == 200


def test_partial_batches_store_the_good_records_and_name_the_bad(
    fleet: tuple[CollectorProcess, dict[str, str]],
) -> None:
    proc, tokens = fleet
    good = [crash(300), crash(301)]
    bad = crash(302).to_json()
    bad["pid"] = "not a number"
    body = {
        "schema_version": 1,
        "kind": "crashes",
        "records": [good[0].to_json(), bad, good[1].to_json()],
    }
    r = proc.client(tokens["web-1"]).post(
        "/v1/crashes", content=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422
    ack = BatchAck.from_json(r.json())
    assert ack.accepted == 2
    assert [(p.index, str(p.reason)) for p in ack.rejected] == [(1, "schema")]
    assert "pid" in ack.rejected[0].detail
    host = proc.client(tokens["dash"]).get("/api/v1/hosts/web-1").json()
    ids = {c["core_id"] for c in host["crashes"]}
    assert {good[0].core_id, good[1].core_id} <= ids
    assert crash(302).core_id not in ids


@pytest.mark.parametrize(
    ("body", "headers", "status", "error"),
    [
        (b"{not json", {}, 400, "not_json"),
        (b'{"schema_version": 9, "kind": "crashes", "records": []}', {}, 422, "schema_version"),
        (b'{"schema_version": 1, "kind": "heartbeats", "records": []}', {}, 422, "wrong_kind"),
        (b"[]", {}, 422, "bad_envelope"),
        (b"{}", {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        (b"{}", {"Content-Encoding": "br"}, 415, "unsupported_encoding"),
        (b"\x1f\x8b\x08\x00garbage", {"Content-Encoding": "gzip"}, 400, "corrupt_body"),
        (b"(\xb5/\xfdgarbage", {"Content-Encoding": "zstd"}, 400, "corrupt_body"),
        (b"{}", {DEADLINE_HEADER: "soon"}, 400, "bad_deadline"),
    ],
)
def test_malformed_and_wrongly_encoded_bodies(
    fleet: tuple[CollectorProcess, dict[str, str]],
    body: bytes,
    headers: dict[str, str],
    status: int,
    error: str,
) -> None:
    proc, tokens = fleet
    h = {"Content-Type": "application/json", **headers}
    r = proc.client(tokens["web-1"]).post("/v1/crashes", content=body, headers=h)
    assert (r.status_code, r.json()["error"]) == (status, error), r.text


def test_oversized_bodies_are_refused_before_they_are_read(
    fleet: tuple[CollectorProcess, dict[str, str]],
) -> None:
    proc, tokens = fleet
    # Headers announcing 100 MiB and not one byte of body: the answer comes anyway.
    with socket.create_connection(("127.0.0.1", proc.port), timeout=HANG_BOUND_S) as s:
        s.sendall(_upload_head(tokens["web-1"], 104857600))
        head = _read_response(s)
    assert head.startswith(b"HTTP/1.1 413"), head[:100]
    # A bomb: 1 MiB of zstd that would decompress to 64 MiB (limit 32 MiB).
    bomb = zstandard.compress(b" " * (64 << 20))
    r = proc.client(tokens["web-1"]).post(
        "/v1/crashes",
        content=bomb,
        headers={"Content-Type": "application/json", "Content-Encoding": "zstd"},
    )
    assert (r.status_code, r.json()["error"]) == (413, "body_too_large")
    many = [HeartbeatRecord("web-1", i, "svc", "1") for i in range(2001)]
    r = post(proc.client(tokens["web-1"]), RecordKind.HEARTBEATS, many, ContentEncoding.GZIP)
    assert (r.status_code, r.json()["error"]) == (413, "too_many_records")


def test_a_body_without_length_is_411(fleet: tuple[CollectorProcess, dict[str, str]]) -> None:
    proc, tokens = fleet

    def chunks() -> Iterator[bytes]:
        yield encode_batch(RecordKind.HEARTBEATS, [HeartbeatRecord("web-1", 1, "s", "1")])

    r = proc.client(tokens["web-1"]).post(
        "/v1/heartbeats", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert (r.status_code, r.json()["error"]) == (411, "length_required")


def _upload_head(token: str, length: int, deadline_ms: int | None = None) -> bytes:
    """The head of a crash upload by hand: its token, its Content-Length and, if given, the
    client's deadline."""
    deadline = "" if deadline_ms is None else f"{DEADLINE_HEADER}: {deadline_ms}\r\n"
    return (
        b"POST /v1/crashes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {token}\r\n{deadline}Content-Length: {length}\r\n\r\n".encode()
    )


def _read_response(s: socket.socket) -> bytes:
    """One whole HTTP response (headers and the body its Content-Length announces)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _read_until_closed(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def test_slow_loris_clients_are_cut_off_while_others_are_served(
    fleet: tuple[CollectorProcess, dict[str, str]],
) -> None:
    proc, tokens = fleet
    slow_headers = socket.create_connection(("127.0.0.1", proc.port), timeout=HANG_BOUND_S)
    slow_headers.sendall(b"POST /v1/crashes HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    slow_body = socket.create_connection(("127.0.0.1", proc.port), timeout=HANG_BOUND_S)
    slow_body.sendall(
        b"POST /v1/heartbeats HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {tokens['web-1']}\r\n".encode()
        + b'Content-Length: 1000\r\n\r\n{"schema_version": 1,'
    )
    # Meanwhile the collector serves everyone else.
    client = proc.client(tokens["web-1"])
    assert client.get("/healthz").status_code == 200
    r = post(client, RecordKind.HEARTBEATS, [HeartbeatRecord("web-1", 42, "svc", "1")])
    assert r.status_code == 200
    # Each slow client gets its answer once its time is up (1 s here): the body's sender a
    # 408, the header trickler a closed connection.
    with slow_body:
        answer = _read_until_closed(slow_body)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert b"body_timeout" in answer
    with slow_headers:
        assert _read_until_closed(slow_headers) == b""
    assert client.get("/healthz").status_code == 200


def test_a_retried_batch_is_stored_once(fleet: tuple[CollectorProcess, dict[str, str]]) -> None:
    proc, tokens = fleet
    client = proc.client(tokens["web-1"])
    batch = [crash(i) for i in range(400, 420)]
    for _ in range(3):
        r = post(client, RecordKind.CRASHES, batch)
        assert r.status_code == 200 and r.json()["accepted"] == 20
    # (read after the hosts page, which waits for the loader: a retry that came after the
    # first copy was loaded is found a duplicate by the store's keys when it is loaded)
    host = proc.client(tokens["dash"]).get("/api/v1/hosts/web-1").json()
    metrics = proc.client().get("/metrics").text
    assert _metric(metrics, 'corecensus_collector_records_duplicate_total{kind="crashes"}') >= 40
    ids = [c["core_id"] for c in host["crashes"]]
    assert len(ids) == len(set(ids))
    assert {c.core_id for c in batch} <= set(ids)


def test_shed_at_the_door_when_the_deadline_cannot_be_met(
    fleet: tuple[CollectorProcess, dict[str, str]],
) -> None:
    proc, tokens = fleet
    # A 1 ms deadline cannot be met by any commit: 503 with Retry-After, and the body is never
    # read (none is sent).
    with socket.create_connection(("127.0.0.1", proc.port), timeout=HANG_BOUND_S) as s:
        s.sendall(_upload_head(tokens["web-1"], 5000, deadline_ms=1))
        head = _read_response(s)
    assert head.startswith(b"HTTP/1.1 503"), head[:100]
    assert b"retry-after: 1\r\n" in head.lower()
    assert b'"error":"overloaded"' in head
    # A deadline the backlog can meet is not shed.
    r = post(
        proc.client(tokens["web-1"]),
        RecordKind.CRASHES,
        [crash(500)],
        headers={DEADLINE_HEADER: "30000"},
    )
    assert r.status_code == 200
    metrics = proc.client().get("/metrics").text
    assert _metric(metrics, 'corecensus_collector_requests_shed_total{reason="overloaded"}') >= 1


def _slow_upload(port: int, token: str, deadline_ms: int, pause_s: float) -> bytes:
    """An upload of one crash whose headers come at once and whose body comes ``pause_s``
    later (within the fixture's 1 s body timeout); the response's head and body."""
    body = encode_batch(RecordKind.CRASHES, [crash(int(time.monotonic() * 1000) % 4_000_000)])
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_BOUND_S) as s:
        s.sendall(_upload_head(token, len(body), deadline_ms=deadline_ms))
        time.sleep(pause_s)
        s.sendall(body)
        return _read_response(s)


def test_a_kept_connection_serves_the_next_upload_after_a_refusal_before_the_body(
    fleet: tuple[CollectorProcess, dict[str, str]],
) -> None:
    """An agent's httpx client keeps its connection between uploads and sends each body whole
    before it reads the answer. A refusal decided on the headers (401, 503) is answered before
    the body is read; the body that follows must be skipped as that request's, not read as the
    next request, so the same connection's next upload is stored."""
    proc, tokens = fleet
    batch = [crash(i) for i in range(700, 705)]
    good = encode_batch(RecordKind.CRASHES, batch)
    refused = encode_batch(RecordKind.CRASHES, [crash(i) for i in range(705, 710)])
    with socket.create_connection(("127.0.0.1", proc.port), timeout=HANG_BOUND_S) as s:
        s.sendall(_upload_head("not-a-token", len(refused)) + refused)
        first = _read_response(s)
        s.sendall(_upload_head(tokens["web-1"], len(refused), deadline_ms=1) + refused)
        second = _read_response(s)
        s.sendall(_upload_head(tokens["web-1"], len(good)) + good)
        third = _read_response(s)
    assert first.startswith(b"HTTP/1.1 401"), first[:100]
    assert second.startswith(b"HTTP/1.1 503"), second[:100]
    assert b"connection: close" not in (first + second).lower()
    assert third.startswith(b"HTTP/1.1 200"), third[:300]
    assert json.loads(third.partition(b"\r\n\r\n")[2])["accepted"] == len(batch)
    host = proc.client(tokens["dash"]).get("/api/v1/hosts/web-1").json()
    ids = {c["core_id"] for c in host["crashes"]}
    assert {c.core_id for c in batch} <= ids
    assert not ids & {crash(i).core_id for i in range(705, 710)}


def test_answers_close_their_connections_past_the_keep_alive_budget(tmp_path: Path) -> None:
    """Idle keep-alive connections may fill half of uvicorn's connection limit (8 x
    max_inflight_requests = 32 here, so 16): past that each answer says Connection: close and
    ends its connection, so agents' idle connections never push a front end to the limit,
    where uvicorn answers everything with a bare 503. Below it connections are kept."""
    write_tokens(tmp_path / "tokens", {"a": ("*", "upload")})
    config = "workers = 1\nmax_inflight_requests = 4\nheader_timeout_s = 60.0\nkeep_alive_s = 60\n"
    proc = CollectorProcess(tmp_path, tokens=tmp_path / "tokens", config=config).start()
    # Twenty connections open at once (each counts from its accept; the header deadline,
    # not the keep-alive timer, runs until a request's headers arrive).
    socks = [
        socket.create_connection(("127.0.0.1", proc.port), timeout=HANG_BOUND_S) for _ in range(20)
    ]
    try:
        closed = []
        for i, s in enumerate(socks):
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = _read_response(s)
            assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
            if b"connection: close" in answer.lower():
                # Closed by the server once answered (its count drops before the EOF).
                assert s.recv(1) == b""
                closed.append(i)
        # Four answers closed theirs: each while more than 16 were open (the first, or the
        # first few, may come before the server has accepted all twenty), down to 16.
        assert len(closed) == 4
        for s in (s for i, s in enumerate(socks) if i not in closed):  # served again, kept
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = _read_response(s)
            assert answer.startswith(b"HTTP/1.1 200") and b"connection: close" not in answer.lower()
    finally:
        for s in socks:
            s.close()
    assert proc.stop() == 0


def test_past_the_connection_limit_the_collector_refuses_with_retry_after_but_answers_probes(
    tmp_path: Path,
) -> None:
    """Past uvicorn's connection limit (32 here) the collector answers, not uvicorn's bare 503:
    an upload or a read gets 503 connections_full with Retry-After, counted and logged; the
    liveness and readiness probes and the metrics are answered as usual."""
    tokens = write_tokens(tmp_path / "tokens", {"a": ("*", "upload"), "r": ("-", "read")})
    config = "workers = 1\nmax_inflight_requests = 4\nheader_timeout_s = 60.0\nkeep_alive_s = 60\n"
    proc = CollectorProcess(tmp_path, tokens=tmp_path / "tokens", config=config).start()
    socks = [
        socket.create_connection(("127.0.0.1", proc.port), timeout=HANG_BOUND_S) for _ in range(40)
    ]
    body = encode_batch(RecordKind.CRASHES, [crash(900)])
    try:
        # The last connection answered means all forty were accepted (the kernel's accept
        # queue is first in, first out): 40 open, the limit 32. Each answer past the
        # keep-alive budget closes its connection, so 39, 38, 37, ... remain: still past it.
        answers = []
        for s, request in (
            (socks[-1], b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
            (socks[0], _upload_head(tokens["a"], len(body)) + body),
            (socks[1], b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"),
            (socks[2], b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            (
                socks[3],
                f"GET /api/v1/analysis HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                f"{tokens['r']}\r\n\r\n".encode(),
            ),
        ):
            s.sendall(request)
            answers.append(_read_response(s))
    finally:
        for s in socks:
            s.close()
    healthz, upload, readyz, metrics, analysis = answers
    for probe in (healthz, readyz, metrics):
        assert probe.startswith(b"HTTP/1.1 200"), probe[:200]
    for refused in (upload, analysis):
        assert refused.startswith(b"HTTP/1.1 503"), refused[:200]
        assert b'"error":"connections_full"' in refused
        assert b"retry-after: " in refused.lower()
    text = proc.client().get("/metrics").text
    assert _metric(text, 'corecensus_collector_requests_shed_total{reason="connections_full"}') == 2
    events = [e for e in proc.events() if e.get("reason") == "connections_full"]
    assert [(e["event"], e["path"], e["status"]) for e in events] == [
        ("upload", "/v1/crashes", 503),
        ("request", "/api/v1/analysis", 503),
    ]
    assert proc.stop() == 0
    with open_store(proc.db, read_only=True) as store:
        assert store.count_crashes() == 0


def test_an_admitted_upload_past_its_deadline_is_refused_not_stored(
    fleet: tuple[CollectorProcess, dict[str, str]],
) -> None:
    proc, tokens = fleet
    # Admitted with a 100 ms deadline (an idle collector expects a few ms), then the body comes
    # 0.5 s later: its client has given up, so it is refused (503 late), not committed. On a
    # busy machine admission itself may refuse such a short deadline (503 overloaded): then
    # it is tried again.
    for _ in range(20):
        head = _slow_upload(proc.port, tokens["web-1"], 100, 0.5)
        if b'"error":"overloaded"' not in head:
            break
    assert head.startswith(b"HTTP/1.1 503"), head[:200]
    assert b'"error":"late"' in head, head
    assert b"retry-after:" in head.lower()
    metrics = proc.client().get("/metrics").text
    assert _metric(metrics, 'corecensus_collector_requests_shed_total{reason="late"}') >= 1
    # The same slow body within a deadline it can meet is stored.
    head = _slow_upload(proc.port, tokens["web-1"], 30_000, 0.5)
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    assert b'"accepted":1' in head


def _send_upload(port: int, token: str, deadline_ms: int, record: int) -> socket.socket:
    """A connection that has sent a whole upload of one crash (the caller reads the answer)."""
    body = encode_batch(RecordKind.CRASHES, [crash(record)])
    s = socket.create_connection(("127.0.0.1", port), timeout=HANG_BOUND_S)
    s.sendall(_upload_head(token, len(body), deadline_ms=deadline_ms) + body)
    return s


def test_an_upload_that_waited_unread_past_its_deadline_is_refused(
    fleet: tuple[CollectorProcess, dict[str, str]],
) -> None:
    proc, tokens = fleet
    assert proc.proc is not None
    # The collector stopped (SIGSTOP: as a saturated CPU leaves it) while two whole uploads
    # arrive and wait in the kernel for 1.5 s. The one whose 1 s deadline passed meanwhile is
    # refused (503 late) when the collector reads it; the one with a minute left is stored.
    proc.proc.send_signal(signal.SIGSTOP)
    try:
        short = _send_upload(proc.port, tokens["web-1"], 1000, 3_100_001)
        long = _send_upload(proc.port, tokens["web-1"], 60_000, 3_100_002)
        time.sleep(1.5)
    finally:
        proc.proc.send_signal(signal.SIGCONT)
    with short, long:
        head_short, head_long = _read_response(short), _read_response(long)
    assert head_short.startswith(b"HTTP/1.1 503"), head_short[:200]
    assert b'"error":"late"' in head_short and b"waiting to be read" in head_short, head_short
    assert b"retry-after:" in head_short.lower()
    assert head_long.startswith(b"HTTP/1.1 200"), head_long[:200]
    assert b'"accepted":1' in head_long
    # Both log lines say how long they waited: at least the 1.5 s the collector was stopped.
    waited = [
        e["waited_ms"]
        for e in proc.events()
        if e.get("event") == "upload" and "waited_ms" in e and e["status"] in (200, 503)
    ]
    assert len([w for w in waited if w >= 1500 - 11]) >= 2, waited[-5:]


def test_health_and_metrics(fleet: tuple[CollectorProcess, dict[str, str]]) -> None:
    proc, tokens = fleet
    client = proc.client()
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"ready": True}
    post(
        proc.client(tokens["web-1"]), RecordKind.HEARTBEATS, [HeartbeatRecord("web-1", 7, "s", "1")]
    )
    text = client.get("/metrics").text
    for name in (
        'corecensus_collector_records_received_total{kind="heartbeats"}',
        'corecensus_collector_records_stored_total{kind="heartbeats"}',
        "corecensus_collector_queue_records",
        "corecensus_collector_commit_seconds_count",
        "corecensus_collector_commit_batch_records_count",
    ):
        assert name in text, name
    assert _metric(text, "corecensus_collector_commit_seconds_count") >= 1


def test_logs_are_json_lines_without_tokens_or_bodies(
    fleet: tuple[CollectorProcess, dict[str, str]],
) -> None:
    proc, tokens = fleet
    marker = "zz-unique-service-name-in-a-body"
    post(
        proc.client(tokens["web-1"]),
        RecordKind.HEARTBEATS,
        [HeartbeatRecord("web-1", 9, marker, "1")],
        headers={AGENT_HEADER: "corecensus-agent/0.1.0"},
    )
    post(proc.client(tokens["web-1"] + "x"), RecordKind.HEARTBEATS, [])
    events = proc.events()
    assert events and all(e["event"] != "not_json" for e in events)
    uploads = [e for e in events if e["event"] == "upload"]
    assert {e["status"] for e in uploads} >= {200, 401}
    assert any(e.get("client") == "corecensus-agent/0.1.0" for e in uploads)
    text = proc.log_path.read_text()
    for token in tokens.values():
        assert token.partition(".")[2] not in text
    assert marker not in text


def test_uploads_keep_starlettes_answers_and_other_methods_stay_starlettes(
    fleet: tuple[CollectorProcess, dict[str, str]],
) -> None:
    """The uploads have a handler of their own in front of Starlette: the same bytes and
    headers as Starlette's JSONResponse, and the paths' other methods still Starlette's 405."""
    proc, tokens = fleet
    with socket.create_connection(("127.0.0.1", proc.port), timeout=HANG_BOUND_S) as s:
        s.sendall(
            b"POST /v1/crashes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\n\r\n{}"
        )
        answer = _read_response(s)
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    assert lines[0] == b"http/1.1 401 unauthorized"
    assert lines[-3:] == [
        b'www-authenticate: bearer realm="corecensus"',
        b"content-length: %d" % len(body),
        b"content-type: application/json",
    ]
    assert body == b'{"error":"unauthenticated","detail":"a valid bearer token is required"}'
    r = post(proc.client(tokens["web-1"]), RecordKind.CRASHES, [crash(950)])
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.content == b'{"schema_version":1,"accepted":1,"rejected":[]}'
    for kind in RecordKind:
        r = proc.client(tokens["web-1"]).get(f"/v1/{kind}")
        assert r.status_code == 405 and r.headers["allow"] == "POST", kind
    assert proc.client().post("/v1/nothing", content=b"{}").status_code == 404


# struct tcp_info (include/uapi/linux/tcp.h): u32 tcpi_data_segs_in at offset 152 (Linux 4.6).
_DATA_SEGS_IN = 152


def test_an_answer_leaves_in_one_segment(fleet: tuple[CollectorProcess, dict[str, str]]) -> None:
    """uvicorn writes a response's head and its body apart; the collector sends them in one
    write (protocol.py): one data segment reaches the client, not two."""
    proc, _tokens = fleet
    requests = [
        b"POST /v1/crashes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n\r\n{}",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ]
    for request in requests:
        with socket.create_connection(("127.0.0.1", proc.port), timeout=HANG_BOUND_S) as s:
            s.sendall(request)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _DATA_SEGS_IN + 4)
        assert data.startswith((b"HTTP/1.1 401 ", b"HTTP/1.1 200 ")), data[:80]
        assert data.endswith(b"}"), data[-80:]
        assert int.from_bytes(info[_DATA_SEGS_IN:], sys.byteorder) == 1, request[:20]


def test_a_log_line_with_text_past_ascii_is_still_one_escaped_line(
    fleet: tuple[CollectorProcess, dict[str, str]],
) -> None:
    proc, tokens = fleet
    # A client name past ASCII (headers are Latin-1), with NEL (U+0085), which splits a line
    # for readers that split on every line break (str.splitlines), unless escaped.
    name = "agent\x85caf\xe9"
    post(
        proc.client(tokens["web-1"]),
        RecordKind.HEARTBEATS,
        [HeartbeatRecord("web-1", 11, "s", "1")],
        headers={AGENT_HEADER: name.encode("latin-1")},  # type: ignore[dict-item]
    )
    events = proc.events()
    assert all(e["event"] != "not_json" for e in events)
    assert any(e.get("client") == name for e in events if e["event"] == "upload")
    assert "\\u0085" in proc.log_path.read_text(encoding="utf-8")


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_gzip_level_does_not_matter_and_decompressed_limit_is_inclusive(
    fleet: tuple[CollectorProcess, dict[str, str]],
) -> None:
    proc, tokens = fleet
    body = encode_batch(RecordKind.HEARTBEATS, [HeartbeatRecord("web-1", 11, "s", "1")])
    r = proc.client(tokens["web-1"]).post(
        "/v1/heartbeats",
        content=gzip.compress(body, 9),
        headers={"Content-Type": "application/json; charset=utf-8", "Content-Encoding": "gzip"},
    )
    assert r.status_code == 200, r.text


def test_bodies_on_the_event_loop_and_on_decode_threads_get_the_same_answers(
    tmp_path: Path,
) -> None:
    """Bodies that decompress to at most inline_decode_bytes are checked on the event loop,
    larger ones on a decode thread, and one that compresses under it but decompresses past it
    on the thread after all: the answers are the same whichever way a body went, and a bomb
    is refused at the real limit, not at the inline one."""
    inline = 4096
    tokens = write_tokens(tmp_path / "tokens", {"a": ("*", "upload")})
    config = f"inline_decode_bytes = {inline}\nagent_rate_per_s = 1000.0\nagent_burst = 1000\n"
    proc = CollectorProcess(tmp_path, tokens=tmp_path / "tokens", config=config).start()
    client = proc.client(tokens["a"])
    one, many = [crash(2000)], [crash(i, "h2") for i in range(2001, 2021)]
    small = encode_batch(RecordKind.CRASHES, one)
    large = encode_batch(RecordKind.CRASHES, many)
    assert len(small) <= inline < len(large)  # the loop, and a thread
    # Compressed under the inline size, decompressed past it: a thread after all.
    assert len(compress(large, ContentEncoding.ZSTD)) <= inline
    zstd = {"Content-Type": "application/json", "Content-Encoding": "zstd"}
    for records, encoding in (
        (one, ContentEncoding.IDENTITY),
        (one[:0], ContentEncoding.GZIP),
        (many, ContentEncoding.IDENTITY),
        (many, ContentEncoding.ZSTD),
        ([crash(i, "h3") for i in range(2100, 2120)], ContentEncoding.GZIP),
    ):
        r = post(client, RecordKind.CRASHES, records, encoding)
        assert (r.status_code, r.json()["accepted"]) == (200, len(records)), r.text
    # Not JSON, corrupt, or a bomb that stops past the inline size: the checker's answers.
    bomb = zstandard.compress(b" " * (40 << 20))
    for body, status, error, detail in (
        (compress(large[:-2], ContentEncoding.ZSTD), 400, "not_json", ""),
        (b"(\xb5/\xfdgarbage", 400, "corrupt_body", ""),
        (bomb, 413, "body_too_large", f"more than {32 << 20} bytes"),
    ):
        r = client.post("/v1/crashes", content=body, headers=zstd)
        assert (r.status_code, r.json()["error"]) == (status, error), r.text
        assert detail in r.json()["detail"]
    assert proc.stop() == 0
    with open_store(proc.db, read_only=True) as store:
        assert store.count_crashes() == 41


def test_the_store_holds_exactly_what_was_acknowledged_after_a_clean_stop(
    tmp_path: Path,
) -> None:
    tokens = write_tokens(tmp_path / "tokens", {"a": ("*", "upload")})
    proc = CollectorProcess(tmp_path, tokens=tmp_path / "tokens").start()
    client = proc.client(tokens["a"])
    sent = [crash(i, f"h{i % 5}") for i in range(1000, 1250)]
    for start in range(0, len(sent), 50):
        assert post(client, RecordKind.CRASHES, sent[start : start + 50]).status_code == 200
    assert proc.stop() == 0
    assert proc.events()[-1]["event"] == "stopped"
    with open_store(proc.db, read_only=True) as store:
        assert store.count_crashes() == 250
        assert all(store.get_crash(r.core_id) == r for r in sent[::37])
