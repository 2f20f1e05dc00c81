"""The uploader against a real HTTP server on loopback (collector_stub.py says why a stub), with
an injected clock: delays are asserted as what the uploader decides, never by sleeping."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from collector_stub import Scripted, StubCollector

from corecensus.agent.backoff import first_contact_delay, full_jitter, parse_retry_after
from corecensus.agent.config import AgentConfig
from corecensus.agent.exposure import AGENT_SERVICE
from corecensus.agent.handler import minimal_record
from corecensus.agent.spool import Spool
from corecensus.agent.uploader import Uploader, UploadOutcome
from corecensus.ingest.wire import HeartbeatRecord
from corecensus.model import Problem, ProblemKind


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


_CLIENTS: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


@pytest.fixture
def collector() -> Iterator[StubCollector]:
    c = StubCollector().start()
    try:
        yield c
    finally:
        c.stop()


def crash(i: int, host: str = "web-1") -> dict[str, Any]:
    meta = {"COREDUMP_HOSTNAME": host, "COREDUMP_PID": str(100 + i), "COREDUMP_TIMESTAMP": str(i)}
    return minimal_record(meta, [Problem(ProblemKind.UNREADABLE, "test record")]).to_json()


def make(tmp_path: Path, url: str, clock: FakeClock, **overrides: Any) -> Uploader:
    settings: dict[str, Any] = {
        "state_dir": tmp_path,
        "collector_url": url,
        "first_contact_window_s": 0.0,
        "requests_per_s": 1000.0,
        "request_burst": 1000,
        "backoff_base_s": 2.0,
        "backoff_max_s": 60.0,
        **overrides,
    }
    config = AgentConfig(**settings)
    spool = Spool(config.spool_dir, config.spool_max_bytes)
    client = httpx.Client()
    _CLIENTS.append(client)
    return Uploader(
        config, spool, client, rng=random.Random(7), clock=clock, wall_clock=lambda: 1.7e9
    )


def test_batches_arrive_valid_and_leave_the_spool(tmp_path: Path, collector: StubCollector) -> None:
    up = make(tmp_path, collector.url, FakeClock(), batch_records=4)
    for i in range(10):
        up.spool.put("crash", crash(i))
    up.spool.put("heartbeat", HeartbeatRecord("web-1", 5, "svc", "1.0").to_json())
    results = [up.upload_once() for _ in range(5)]
    assert [r.outcome for r in results] == [UploadOutcome.SENT] * 4 + [UploadOutcome.IDLE]
    assert [a.records for a in collector.arrivals] == [4, 4, 2, 1]
    assert len(collector.stored["crashes"]) == 10 and len(collector.stored["heartbeats"]) == 1
    assert up.spool.depth() == (0, 0) and up.spool.lost() == {}
    headers = collector.arrivals[0].headers
    assert headers["content-encoding"] == "zstd"
    assert headers["x-corecensus-deadline-ms"] == "10000"
    assert headers["x-corecensus-agent"].startswith("corecensus-agent/")


def test_503_retry_after_is_a_floor_then_the_batch_goes_once(
    tmp_path: Path, collector: StubCollector
) -> None:
    clock = FakeClock()
    up = make(tmp_path, collector.url, clock)
    up.spool.put("crash", crash(1))
    collector.script.append(Scripted(503, {"Retry-After": "7"}, {"error": "overloaded"}))
    first = up.upload_once()
    assert first.outcome is UploadOutcome.RETRY and first.status == 503
    assert 7.0 <= first.wait_s <= 7.0 + 2.0  # Retry-After plus at most the first jitter window
    assert up.upload_once().outcome is UploadOutcome.WAIT  # no request before the wait is over
    assert len(collector.arrivals) == 1
    clock.t += first.wait_s
    assert up.upload_once().outcome is UploadOutcome.SENT
    assert len(collector.stored["crashes"]) == 1 and collector.duplicates == 0
    assert up.stats.consecutive_failures == 0


def test_429_with_an_http_date(tmp_path: Path, collector: StubCollector) -> None:
    clock = FakeClock()
    up = make(tmp_path, collector.url, clock)
    up.spool.put("crash", crash(1))
    # 1.7e9 + 30 s as an HTTP-date (the wall clock is injected as 1.7e9).
    collector.script.append(Scripted(429, {"Retry-After": "Tue, 14 Nov 2023 22:13:50 GMT"}))
    r = up.upload_once()
    assert r.outcome is UploadOutcome.RETRY and 30.0 <= r.wait_s <= 32.0


def test_server_errors_back_off_with_full_jitter_and_growing_windows(
    tmp_path: Path, collector: StubCollector
) -> None:
    clock = FakeClock()
    up = make(tmp_path, collector.url, clock)
    up.spool.put("crash", crash(1))
    waits = []
    for _ in range(8):
        collector.script.append(Scripted(500))
        r = up.upload_once()
        assert r.outcome is UploadOutcome.RETRY
        waits.append(r.wait_s)
        clock.t += r.wait_s
    for k, w in enumerate(waits):
        assert 0.0 <= w <= min(60.0, 2.0 * 2**k)
    assert max(waits[5:]) > 2.0 * 2**2  # the window grew
    assert up.upload_once().outcome is UploadOutcome.SENT  # then the batch went, unharmed


def test_full_jitter_spreads_a_fleet() -> None:
    rng = random.Random(1)
    waits = [full_jitter(4, 2.0, 600.0, rng) for _ in range(2000)]
    assert all(0.0 <= w <= 32.0 for w in waits)
    # Spread over the whole window, not bunched: each eighth of it holds 8-17 % of the fleet.
    for i in range(8):
        share = sum(4 * i <= w < 4 * (i + 1) for w in waits) / len(waits)
        assert 0.08 < share < 0.17


def test_first_contact_is_jittered_over_the_window(tmp_path: Path) -> None:
    rng = random.Random(3)
    delays = [first_contact_delay(120.0, rng) for _ in range(1000)]
    assert all(0.0 <= d < 120.0 for d in delays)
    assert min(delays) < 5.0 and max(delays) > 115.0
    clock = FakeClock()
    up = make(tmp_path, "http://127.0.0.1:9", clock, first_contact_window_s=120.0)
    up.spool.put("crash", crash(1))
    wait = up.ready_in()
    assert 0.0 < wait < 120.0
    assert up.upload_once().outcome is UploadOutcome.WAIT  # no connection attempted


def test_rate_cap(tmp_path: Path, collector: StubCollector) -> None:
    clock = FakeClock()
    up = make(tmp_path, collector.url, clock, requests_per_s=0.5, request_burst=2, batch_records=1)
    for i in range(5):
        up.spool.put("crash", crash(i))
    assert [up.upload_once().outcome for _ in range(3)] == [
        UploadOutcome.SENT,
        UploadOutcome.SENT,
        UploadOutcome.WAIT,
    ]
    assert up.ready_in() == pytest.approx(2.0)
    clock.t += 2.0
    assert up.upload_once().outcome is UploadOutcome.SENT
    assert len(collector.arrivals) == 3


def test_refused_records_are_dropped_and_counted_by_reason(
    tmp_path: Path, collector: StubCollector
) -> None:
    up = make(tmp_path, collector.url, FakeClock())
    up.spool.put("crash", crash(1))
    bad = crash(2)
    bad["metadata"]["COREDUMP_HOSTNAME"] = "not a host!"
    up.spool.put("crash", bad)
    r = up.upload_once()
    assert r.outcome is UploadOutcome.SENT and r.status == 422
    assert up.spool.lost() == {"rejected:host": 1}
    assert len(collector.stored["crashes"]) == 1 and up.spool.depth()[0] == 0


def test_batch_refused_as_such_is_dropped_and_counted(
    tmp_path: Path, collector: StubCollector
) -> None:
    up = make(tmp_path, collector.url, FakeClock())
    for i in range(3):
        up.spool.put("crash", crash(i))
    collector.script.append(Scripted(400, body={"error": "not_json", "detail": "x"}))
    assert up.upload_once().outcome is UploadOutcome.DROPPED
    assert up.spool.lost() == {"refused:not_json": 3} and up.spool.depth()[0] == 0


def test_413_splits_the_batch_and_drops_only_a_single_oversized_record(
    tmp_path: Path, collector: StubCollector
) -> None:
    up = make(tmp_path, collector.url, FakeClock(), batch_records=8)
    for i in range(8):
        up.spool.put("crash", crash(i))
    collector.script.append(Scripted(413, body={"error": "body_too_large", "detail": "x"}))
    assert up.upload_once().outcome is UploadOutcome.RETRY
    assert up.upload_once().outcome is UploadOutcome.SENT
    assert collector.arrivals[-1].records == 4
    assert up.spool.lost() == {}
    up.batch_records = 1
    collector.script.append(Scripted(413, body={"error": "body_too_large", "detail": "x"}))
    assert up.upload_once().outcome is UploadOutcome.DROPPED
    assert up.spool.lost() == {"too_large": 1}


def test_401_keeps_the_records_and_pauses(tmp_path: Path, collector: StubCollector) -> None:
    up = make(tmp_path, collector.url, FakeClock())
    up.spool.put("crash", crash(1))
    collector.script.append(Scripted(401, body={"error": "unauthenticated", "detail": "x"}))
    r = up.upload_once()
    assert r.outcome is UploadOutcome.UNAUTHORIZED and r.wait_s >= 3600
    assert up.spool.depth()[0] == 1 and up.spool.lost() == {}


def test_collector_down_then_back_loses_nothing(tmp_path: Path) -> None:
    clock = FakeClock()
    first = StubCollector().start()
    port = first.port
    first.stop()  # down: connection refused
    up = make(tmp_path, f"http://127.0.0.1:{port}", clock, batch_records=3)
    for i in range(7):
        up.spool.put("crash", crash(i))
    r = up.upload_once()
    assert r.outcome is UploadOutcome.RETRY and r.status is None
    clock.t += r.wait_s
    back = StubCollector(port).start()
    try:
        outcomes = [up.upload_once().outcome for _ in range(4)]
        assert outcomes == [UploadOutcome.SENT] * 3 + [UploadOutcome.IDLE]
        assert len(back.stored["crashes"]) == 7 and back.duplicates == 0
    finally:
        back.stop()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("5", 5.0), ("0", 0.0), (" 12 ", 12.0), ("99999999", 86400.0), ("soon", None), (None, None)],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, 1.7e9) == expected


def test_losses_ride_on_the_next_heartbeat_and_are_cleared_when_acknowledged(
    tmp_path: Path, collector: StubCollector
) -> None:
    clock = FakeClock()
    up = make(tmp_path, collector.url, clock)
    up.spool.count_lost("spool_full", 3)
    up.spool.count_lost("rejected:schema", 1)
    up.spool.put("crash", crash(1))
    assert up.upload_once().outcome is UploadOutcome.SENT
    assert "lost=" not in collector.arrivals[-1].headers["x-corecensus-agent"]  # crashes: no
    # Must not report: a heartbeat batch without the agent's own heartbeat has no place for them.
    up.spool.put("heartbeat", HeartbeatRecord("web-1", 5, "svc", "1.0").to_json())
    assert up.upload_once().outcome is UploadOutcome.SENT
    assert "lost=" not in collector.arrivals[-1].headers["x-corecensus-agent"]
    assert up.spool.lost() == {"spool_full": 3, "rejected:schema": 1}
    own = HeartbeatRecord("web-1", 6, AGENT_SERVICE, "0.1.0", uptime_s=99, agent_uptime_s=7)
    up.spool.put("heartbeat", own.to_json())
    collector.script.append(Scripted(503, {"Retry-After": "1"}))
    r = up.upload_once()
    assert r.outcome is UploadOutcome.RETRY
    assert up.spool.lost() == {"spool_full": 3, "rejected:schema": 1}  # not delivered: kept
    clock.t += r.wait_s
    assert up.upload_once().outcome is UploadOutcome.SENT
    header = collector.arrivals[-1].headers["x-corecensus-agent"]
    assert header.endswith(" lost=rejected:schema:1,spool_full:3")  # for an older collector
    # In the record itself, as the collector stores it.
    stored = collector.stored["heartbeats"][own.record_id]
    assert stored["lost"] == {"rejected:schema": 1, "spool_full": 3}
    assert (stored["uptime_s"], stored["agent_uptime_s"]) == (99, 7)
    assert up.spool.lost() == {}
