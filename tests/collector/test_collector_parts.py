"""The collector's parts on their own: tokens, rate limits, the backlog estimate, the group-commit
writer on a real DuckDB store, settings, and what the collector's modules import."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.store.store_records import make_record, rows

from corecensus.app.uploads import UploadCounts, store_rows
from corecensus.collector.admission import Backlog, RateLimiter, WriterView, retry_after_s
from corecensus.collector.arrival import kernel_wait_s
from corecensus.collector.config import CollectorConfig, config_from_mapping
from corecensus.collector.journal import (
    Journal,
    JournalRows,
    decode_rows,
    journal_path,
    journal_rows,
    rows_of,
)
from corecensus.collector.loader import JournalAppender, JournalLoader
from corecensus.collector.metrics import CollectorMetrics
from corecensus.collector.run import default_workers
from corecensus.collector.tokens import Scope, TokenTable, hash_secret, new_token
from corecensus.collector.writer import GroupCommitWriter, QueueFull, WriterStopped
from corecensus.errors import ConfigError, StoreError
from corecensus.ingest.wire import RecordKind
from corecensus.store import HEARTBEATS, DuckDBStore, Heartbeat, open_store

# --- tokens -----------------------------------------------------------------------------------


def test_a_new_token_authenticates_as_its_agent_and_nothing_else_does() -> None:
    token, line = new_token("web-1", "web-1,web-2", "upload,read")
    table = TokenTable.parse(line + "\n" + new_token("other", "*")[1], "tokens")
    agent = table.authenticate(f"Bearer {token}")
    assert agent is not None and agent.name == "web-1"
    assert agent.may_speak_for("web-2") and not agent.may_speak_for("web-3")
    assert agent.may(Scope.READ) and agent.may(Scope.UPLOAD)
    name, _, secret = token.partition(".")
    for header in (
        None,
        "",
        token,  # no scheme
        f"Basic {token}",
        f"Bearer {name}.{secret[:-1]}A" if secret[-1] != "A" else f"Bearer {name}.{secret[:-1]}B",
        f"Bearer other.{secret}",  # the right secret under another agent's name
        f"Bearer nobody.{secret}",
        f"Bearer {name}.",
        f"Bearer {name}",
        "Bearer " + "x" * 300,
    ):
        assert table.authenticate(header) is None, header
    assert table.authenticate(f"bearer   {token}  ") == agent  # scheme is case-insensitive


def test_the_file_keeps_only_hashes_and_any_host_means_any() -> None:
    token, line = new_token("relay", "*")
    assert token.partition(".")[2] not in line
    assert hash_secret(token.partition(".")[2]) in line
    agent = TokenTable.parse(line, "t").authenticate(f"Bearer {token}")
    assert agent is not None and agent.may_speak_for("anything.example")
    assert not agent.may(Scope.READ)  # upload is the default scope


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a sha256:" + "0" * 64, "tokens:1: expected 'name sha256:<hex> hosts [scopes]'"),
        ("a.b sha256:" + "0" * 64 + " h", "tokens:1: agent name 'a.b' is not"),
        ("# c\na secret-pasted-here h", "tokens:2: second field is not sha256"),
        ("a sha256:" + "0" * 64 + " bad_host! ", "tokens:1: not a host name: 'bad_host!'"),
        ("a sha256:" + "0" * 64 + " h write", "tokens:1: scopes are upload, read"),
        (
            "a sha256:" + "0" * 64 + " h\na sha256:" + "1" * 64 + " h",
            "tokens:2: agent 'a' listed twice",
        ),
    ],
)
def test_a_malformed_tokens_file_names_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        TokenTable.parse(text, "tokens")
    assert str(err.value).startswith(message)
    assert "secret-pasted-here" not in str(err.value)


def test_comments_blank_lines_and_no_hosts() -> None:
    text = "\n# fleet\n\ndash sha256:" + "a" * 64 + " - read  # the dashboard\n"
    table = TokenTable.parse(text, "t")
    assert len(table) == 1


# --- admission --------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_allows_the_burst_then_the_rate_per_agent() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)
    assert limiter.take("b") == 0.0  # another agent has its own bucket
    clock.now += 0.5
    assert limiter.take("a") == 0.0
    assert limiter.take("a") == pytest.approx(0.5)
    clock.now += 100  # refills only up to the burst
    assert [limiter.take("a") for _ in range(4)][-1] > 0


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert [retry_after_s(x) for x in (0.0, 0.01, 1.0, 1.2, 99.9)] == [1, 1, 1, 2, 100]


def test_backlog_estimate_grows_with_queued_work_and_learns_the_cost() -> None:
    backlog = Backlog(initial_s_per_record=1e-3)
    idle = backlog.expected_wait_s()
    assert idle == 0.005
    backlog.queued(10_000)
    busy = backlog.expected_wait_s()
    assert busy > idle + 9.0  # 10,000 records at 1 ms each, at least
    for _ in range(50):  # commits measure 0.1 ms per record: the estimate follows
        backlog.committed(100, 0.01)
        backlog.queued(100)
    assert backlog.commit_s_per_record == pytest.approx(1e-4, rel=0.01)
    assert backlog.expected_wait_s() < busy / 3
    # Requests admitted but not yet read count too, at the average request size.
    before = backlog.expected_wait_s()
    for _ in range(10):
        backlog.admitted()
    assert backlog.expected_wait_s() > before
    for _ in range(10):
        backlog.left()
    assert backlog.expected_wait_s() == pytest.approx(before)


def test_an_idle_collector_is_not_refused_by_costs_a_burst_inflated() -> None:
    backlog = Backlog()
    backlog.queued(100)
    backlog.committed(100, 0.02)  # the fastest commit: 20 ms
    for _ in range(30):  # then a burst measured under contention: 2 s per record decoded
        backlog.decoded(20, 40.0)
        backlog.queued(20)
        backlog.committed(20, 30.0)
    backlog.admitted()
    assert backlog.expected_wait_s() > 60  # busy: the inflated costs count
    backlog.left()
    # Idle: only the fastest commit seen stands between a request and its answer.
    assert backlog.expected_wait_s() == pytest.approx(0.02)


def test_backlog_measures_the_throughput_of_busy_windows_only() -> None:
    clock = FakeClock()
    backlog = Backlog(clock=clock)
    backlog.queued(1000)
    clock.now += 0.1
    backlog.committed(500, 0.1)
    assert backlog.throughput is None  # a window shorter than WINDOW_S measures nothing
    clock.now += 0.4
    backlog.committed(500, 0.4)
    assert backlog.throughput == pytest.approx(2000.0)  # 1000 records in 0.5 busy seconds
    # The system emptied: the idle time that follows is no slowness of the collector's.
    clock.now += 60.0
    backlog.queued(300)
    clock.now += 0.3
    backlog.committed(300, 0.3)
    assert backlog.throughput == pytest.approx(2000.0 + 0.2 * (1000.0 - 2000.0))


def test_a_short_busy_spell_raises_an_estimate_below_what_it_finished() -> None:
    clock = FakeClock()
    backlog = Backlog(clock=clock)
    backlog.queued(100)
    clock.now += 1.0
    backlog.committed(100, 1.0)  # a slow second: 100 records/s
    assert backlog.throughput == pytest.approx(100.0)
    # Then, mostly shed, the collector only ever holds one request at a time: spells too short
    # to measure, each finishing 20 records in 0.05 s (400/s at least).
    for _ in range(3):
        clock.now += 10.0
        backlog.queued(20)
        clock.now += 0.05
        backlog.committed(20, 0.05)
    assert backlog.throughput == pytest.approx(400.0)
    assert backlog.last_throughput == pytest.approx(400.0)
    # A spell that finished less than the estimate does not lower it (it was not busy enough).
    backlog.queued(1)
    clock.now += 0.1
    backlog.committed(1, 0.1)
    assert backlog.throughput == pytest.approx(400.0)


def test_the_wait_is_the_work_ahead_over_the_measured_throughput() -> None:
    clock = FakeClock()
    backlog = Backlog(clock=clock)
    backlog.decoded(20, 0.02)  # requests of 20 records, 1 ms per record to decode ...
    for _ in range(40):
        backlog.decoded(20, 0.02)
    backlog.queued(2000)
    for _ in range(10):  # ... and 1 ms per record to commit, the stages overlapping
        clock.now += 0.1
        backlog.committed(100, 0.1)
        backlog.queued(100)
    assert backlog.throughput == pytest.approx(1000.0)
    backlog.admitted()
    wait = backlog.expected_wait_s()
    # 2000 queued + 2 requests of 20 (the admitted one and this) at 1000/s, plus one commit:
    # not the 4 s the two stages' costs would add up to one after the other.
    ahead = (2000 + 2 * backlog.records_per_request) / 1000
    assert wait == pytest.approx(ahead + backlog.commit_s)
    assert 0.08 < backlog.commit_s <= 0.1
    assert backlog.records_per_request == pytest.approx(20.0, rel=0.01)
    backlog.left()


def test_a_front_end_counts_what_the_writer_says_the_others_hold() -> None:
    front = Backlog()
    assert front.expected_wait_s() == pytest.approx(0.005)  # idle
    # The writer: the other front ends hold 4000 records; the collector commits 2000/s.
    front.heard(WriterView(4000.0, 2000.0, 2500.0, 0.02, 5e-4, 0.01))
    assert front.records_ahead() == 4000.0
    # This front end holds nothing, and the new request still waits for the others' work.
    ahead = (front.records_per_request + 4000.0) / 2000.0
    assert front.expected_wait_s() == pytest.approx(ahead + 0.02)
    # Once the others hold nothing, it is idle again: the writer's fastest commit.
    front.heard(WriterView(0.0, 2000.0, 2500.0, 0.02, 5e-4, 0.01))
    assert front.expected_wait_s() == pytest.approx(0.01)
    # Before the writer has measured a throughput, its cost per record stands in.
    early = Backlog()
    early.heard(WriterView(1000.0, None, None, 0.01, 1e-3, None))
    assert early.throughput is None
    unread = early.records_per_request * (early.decode_s_per_record + 1e-3)
    assert early.expected_wait_s() == pytest.approx(unread + 1000 * 1e-3 + 0.01)


def test_the_writer_measures_busy_windows_while_a_front_end_holds_work() -> None:
    clock = FakeClock()
    writer = Backlog(clock=clock)
    # A front end holds 500 records (admitted, being read) while the writer's queue is empty:
    # the collector is busy, so the time until they are committed is not idleness.
    writer.elsewhere(500.0)
    clock.now += 0.5
    writer.queued(500)  # its rows arrive before its lower count (link.py's order)
    writer.elsewhere(0.0)
    writer.committed(500, 0.05)
    assert writer.throughput == pytest.approx(1000.0)  # 500 records in 0.5 busy seconds
    view = writer.view(123.0)
    assert (view.others_records, view.throughput) == (123.0, pytest.approx(1000.0))
    assert view.commit_floor_s == pytest.approx(0.05)
    # Not busy: nothing anywhere.
    clock.now += 30.0
    writer.elsewhere(0.0)
    assert writer.expected_wait_s() == pytest.approx(0.05)


# --- the writer -------------------------------------------------------------------------------


def test_writer_groups_waiting_requests_into_one_commit_and_acks_after_it(tmp_path: Path) -> None:
    store = open_store(tmp_path / "w.duckdb")
    gate = threading.Event()
    entered = threading.Event()
    groups: list[int] = []

    def sink(group: Sequence[JournalRows]) -> UploadCounts:
        entered.set()
        gate.wait(60)  # hold the first commit so the next requests queue up behind it
        groups.append(sum(len(rows) for rows in group))
        return store_rows(store, rows_of(group))

    metrics = CollectorMetrics.create()
    writer = GroupCommitWriter(
        sink, Backlog(), metrics, max_queue_records=1000, max_commit_records=500
    )
    writer.start()
    first = writer.submit(journal_rows(RecordKind.CRASHES, rows([make_record(0)])))
    assert entered.wait(60)
    waiting = [
        writer.submit(journal_rows(RecordKind.CRASHES, rows([make_record(i)])))
        for i in range(1, 11)
    ]
    beats = writer.submit(journal_rows(RecordKind.HEARTBEATS, [Heartbeat("h", 1, "s", "1")]))
    assert not any(f.done() for f in [first, *waiting, beats])
    gate.set()
    for f in [first, *waiting, beats]:
        f.result(60)
    # The 11 requests that queued behind the first commit (crashes and heartbeats) share one.
    assert groups == [1, 11]
    samples = {s.name: s.value for s in metrics.commit_batch_records.collect()[0].samples}
    assert samples["corecensus_collector_commit_batch_records_sum"] == 12
    assert samples["corecensus_collector_commit_batch_records_count"] == 2
    assert store.count_crashes() == 11
    assert writer.stop(60)
    with pytest.raises(WriterStopped):
        writer.submit(journal_rows(RecordKind.CRASHES, rows([make_record(99)])))
    store.close()


def test_writer_queue_is_bounded_and_a_store_failure_reaches_every_waiting_request() -> None:
    gate = threading.Event()

    def failing(group: Sequence[JournalRows]) -> UploadCounts:
        gate.wait(60)
        raise StoreError("disk full")

    writer = GroupCommitWriter(
        failing, Backlog(), CollectorMetrics.create(), max_queue_records=10, max_commit_records=5
    )
    writer.start()
    futures = [
        writer.submit(journal_rows(RecordKind.HEARTBEATS, [Heartbeat("h", i, "s", "1")] * 5))
        for i in range(2)
    ]
    with pytest.raises(QueueFull):
        writer.submit(journal_rows(RecordKind.HEARTBEATS, [Heartbeat("h", 9, "s", "1")]))
    gate.set()
    for f in futures:
        with pytest.raises(StoreError, match="disk full"):
            f.result(60)
    assert not writer.healthy and writer.last_error == "disk full"
    assert writer.stop(60)


def test_one_request_larger_than_the_queue_bound_is_still_taken_when_the_queue_is_empty() -> None:
    writer = GroupCommitWriter(
        lambda g: UploadCounts(),
        Backlog(),
        CollectorMetrics.create(),
        max_queue_records=10,
        max_commit_records=5,
    )
    writer.start()
    writer.submit(
        journal_rows(RecordKind.HEARTBEATS, [Heartbeat("h", i, "s", "1") for i in range(20)])
    ).result(60)
    assert writer.stop(60)


@dataclass
class _Journaled:
    """The writer process's parts on a real store and journal, as LocalBackend builds them."""

    store: DuckDBStore
    journal: Journal
    loader: JournalLoader
    appender: JournalAppender
    writer: GroupCommitWriter
    backlog: Backlog
    metrics: CollectorMetrics

    def close(self) -> None:
        assert self.writer.stop(60)
        assert self.loader.stop(60)
        self.journal.close()
        self.store.close()


def _journaled(tmp_path: Path, *, max_bytes: int = 128 << 20, **loader: Any) -> _Journaled:
    store = open_store(tmp_path / "j.duckdb")
    store.defer_checkpoints()
    journal = Journal(journal_path(store.location))
    backlog, metrics = Backlog(), CollectorMetrics.create()
    load = JournalLoader(store, journal, metrics, **loader)
    appender = JournalAppender(
        journal, load, backlog, metrics, max_bytes=max_bytes, soft_bytes=max_bytes // 4
    )
    writer = GroupCommitWriter(
        appender,
        backlog,
        metrics,
        max_queue_records=1000,
        max_commit_records=50,
        full=appender.full,
    )
    load.start()
    writer.start()
    return _Journaled(store, journal, load, appender, writer, backlog, metrics)


def _hold(method: Callable[..., Any], gate: threading.Event, entered: threading.Event) -> Any:
    def held(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        assert gate.wait(60)
        return method(*args, **kwargs)

    return held


def test_a_checkpoint_holds_the_loader_and_no_acknowledgement(tmp_path: Path) -> None:
    """DuckDB blocks appends while it checkpoints (duckdb#25988): every request behind one
    waited, the 50 % load's p99. Now the loader checkpoints, and requests are answered from
    the journal meanwhile; the store has them once the checkpoint ends."""
    parts = _journaled(tmp_path, interval_s=0.01, checkpoint_idle_bytes=1, quiet_s=0.0)
    gate, entered = threading.Event(), threading.Event()
    checkpoints: list[int] = []
    checkpoint = parts.store.checkpoint

    def counted() -> None:
        checkpoints.append(parts.store.log_bytes())
        checkpoint()

    parts.store.checkpoint = _hold(counted, gate, entered)  # type: ignore[method-assign]
    parts.writer.submit(journal_rows(RecordKind.CRASHES, rows([make_record(0)]))).result(60)
    assert entered.wait(60)  # the loader loaded it and is checkpointing ...
    # ... and 20 more requests are acknowledged meanwhile, durable in the journal.
    for i in range(1, 21):
        parts.writer.submit(journal_rows(RecordKind.CRASHES, rows([make_record(i)]))).result(60)
    assert parts.store.count_crashes() == 1
    assert parts.loader.unloaded_bytes() > 0
    gate.set()
    parts.close()
    with open_store(tmp_path / "j.duckdb", read_only=True) as store:
        assert store.count_crashes() == 21
    assert checkpoints and checkpoints[0] > 0


def test_a_refused_checkpoint_is_not_a_failed_load(tmp_path: Path) -> None:
    """DuckDB refused the loader's checkpoints during slow snapshot copies ("other write
    transactions active"); taken as a failed load, each refusal paused loading for a second.
    A fake only for the refusal (it did not come on demand in a small test): the checkpoint
    raises DuckDB's words as the store translates them, twice, then the real one runs."""
    deferred: list[str] = []
    parts = _journaled(
        tmp_path,
        interval_s=0.01,
        checkpoint_idle_bytes=1,
        quiet_s=0.0,
        on_checkpoint_deferred=deferred.append,
    )
    failed: list[str] = []
    parts.loader._on_error = failed.append
    checkpoint, refusals, done = parts.store.checkpoint, [2], []

    def refusing() -> None:
        if refusals[0] > 0:
            refusals[0] -= 1
            raise StoreError(
                "j.duckdb: DuckDB error while checkpointing: TransactionContext Error: Cannot "
                "CHECKPOINT: there are other write transactions active"
            )
        checkpoint()
        done.append(True)

    parts.store.checkpoint = refusing  # type: ignore[method-assign]
    for i in range(3):
        parts.writer.submit(journal_rows(RecordKind.CRASHES, rows([make_record(i)]))).result(60)
        assert parts.loader.sync(60)  # loaded (and a checkpoint tried) before the next
    parts.close()
    assert len(deferred) == 2 and "Cannot CHECKPOINT" in deferred[0]
    assert failed == [] and parts.loader.last_error is None
    assert done  # the third load's checkpoint ran
    with open_store(tmp_path / "j.duckdb", read_only=True) as store:
        assert store.count_crashes() == 3


def test_the_loader_checkpoints_only_past_the_bounds(tmp_path: Path) -> None:
    parts = _journaled(tmp_path, interval_s=0.01)  # 16 MiB idle bound: a few rows stay under
    calls: list[int] = []
    checkpoint = parts.store.checkpoint
    parts.store.checkpoint = lambda: (calls.append(1), checkpoint())  # type: ignore[method-assign,func-returns-value]
    for i in range(5):
        parts.writer.submit(journal_rows(RecordKind.CRASHES, rows([make_record(i)]))).result(60)
    parts.close()
    assert calls == []
    with open_store(tmp_path / "j.duckdb", read_only=True) as store:
        assert store.count_crashes() == 5


def test_the_idle_checkpoint_waits_for_a_quiet_journal(tmp_path: Path) -> None:
    """While frames keep coming the loader loads them and leaves DuckDB's log alone below
    checkpoint_max_bytes (each checkpoint rewrites the table's open row group); once nothing
    was appended for quiet_s it checkpoints at checkpoint_idle_bytes. A fake clock that moves
    only when the test moves it: loads are asked for (sync), the quiet moment is the clock's."""
    now = [100.0]
    parts = _journaled(
        tmp_path, interval_s=0.01, checkpoint_idle_bytes=1, quiet_s=5.0, clock=lambda: now[0]
    )
    calls: list[int] = []
    checkpoint = parts.store.checkpoint
    parts.store.checkpoint = lambda: (checkpoint(), calls.append(1))  # type: ignore[method-assign,func-returns-value]
    for i in range(4):
        parts.writer.submit(journal_rows(RecordKind.CRASHES, rows([make_record(i)]))).result(60)
        assert parts.loader.sync(60)
        now[0] += 1.0  # (a second between appends: never quiet for five)
    assert parts.store.count_crashes() == 4 and parts.store.log_bytes() > 0
    assert calls == []
    now[0] += 4.0  # five seconds after the last append
    parts.loader.wake()
    deadline = time.monotonic() + 60
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls == [1]
    assert parts.store.log_bytes() == 0
    parts.close()


def test_a_retry_while_the_first_copy_is_only_in_the_journal_is_already_there(
    tmp_path: Path,
) -> None:
    parts = _journaled(tmp_path, interval_s=0.01)
    gate, entered = threading.Event(), threading.Event()
    add = parts.store.add_uploads
    parts.store.add_uploads = _hold(add, gate, entered)  # type: ignore[method-assign]
    batch = [
        journal_rows(RecordKind.CRASHES, rows([make_record(1), make_record(2)])),
        journal_rows(RecordKind.HEARTBEATS, [Heartbeat("h", 1, "s", "1")]),
    ]
    first = parts.appender(batch)
    assert [(c.new, c.duplicate) for c in (first.crashes, first.heartbeats)] == [(2, 0), (1, 0)]
    assert entered.wait(60)  # the loader holds the first copy, not in the store yet
    frames = len([p for p, _ in parts.journal.frames(parts.journal.start, 1 << 40) if p])
    again = parts.appender(batch)
    assert [(c.new, c.duplicate) for c in (again.crashes, again.heartbeats)] == [(0, 2), (0, 1)]
    # Nothing more was journaled for it.
    assert len([p for p, _ in parts.journal.frames(parts.journal.start, 1 << 40) if p]) == frames
    # A request with one new crash and one pending, and in the same group a copy of that new
    # one (two retries at once) and a request that repeats a crash of its own: each new crash
    # is journaled once, the rest counted as there.
    mixed = parts.appender(
        [
            journal_rows(RecordKind.CRASHES, rows([make_record(2), make_record(3)])),
            journal_rows(RecordKind.CRASHES, rows([make_record(3)])),
            journal_rows(RecordKind.CRASHES, rows([make_record(4), make_record(4)])),
        ]
    )
    assert (mixed.crashes.new, mixed.crashes.duplicate) == (2, 3)
    payloads = [p for p, _ in parts.journal.frames(parts.journal.start, 1 << 40) if p]
    assert [r.core_id for r in decode_rows(payloads[-1]).crashes] == [
        make_record(3).core_id,
        make_record(4).core_id,
    ]
    gate.set()
    parts.close()
    with open_store(tmp_path / "j.duckdb", read_only=True) as store:
        assert store.count_crashes() == 4
        assert len(list(store.rows(HEARTBEATS))) == 1


def test_the_loader_loads_what_was_just_appended_from_memory_and_the_rest_from_the_files(
    tmp_path: Path,
) -> None:
    """Frames the appender hands over are loaded without reading them back; past the bound
    on what it holds (twice ``batch_bytes``) the frames are read from the segments, across
    segment boundaries, in journal order, each once."""
    store = open_store(tmp_path / "m.duckdb")
    store.defer_checkpoints()
    journal = Journal(journal_path(store.location), segment_bytes=25_000)
    backlog, metrics = Backlog(), CollectorMetrics.create()
    # (a frame of one crash row is about 1.5 KB: the loader holds about 13 of them)
    loader = JournalLoader(store, journal, metrics, batch_bytes=20_000)
    appender = JournalAppender(journal, loader, backlog, metrics)
    read_back: list[int] = []
    frames = journal.frames

    def counted(*args: Any) -> Any:
        for payload, position in frames(*args):
            if payload:
                read_back.append(len(payload))
            yield payload, position

    journal.frames = counted  # type: ignore[method-assign]
    for i in range(5):
        appender([journal_rows(RecordKind.CRASHES, rows([make_record(i)]))])
    assert loader.catch_up().records == 5
    assert read_back == []  # all from memory
    for i in range(5, 60):  # more than it holds: the later ones are read from the files
        appender([journal_rows(RecordKind.CRASHES, rows([make_record(i)]))])
    assert len(journal.segments()) > 2
    assert loader.catch_up().records == 55
    assert 0 < len(read_back) < 55
    assert store.count_crashes() == 60
    assert store.crash_columns().row.size == 60
    assert loader.unloaded_bytes() == 0
    # And after more are appended, from memory again.
    read_back.clear()
    appender([journal_rows(RecordKind.CRASHES, rows([make_record(60)]))])
    assert loader.catch_up().records == 1 and read_back == []
    journal.close()
    store.close()


def test_a_full_journal_refuses_work_and_a_loader_behind_is_told_to_admission(
    tmp_path: Path,
) -> None:
    """Bounded: past ``max_bytes`` not loaded the writer refuses (503 queue_full); past a
    quarter of it admission adds the time the loader needs to catch up to every wait."""
    parts = _journaled(tmp_path, max_bytes=200_000, interval_s=0.01)
    gate, entered = threading.Event(), threading.Event()
    add = parts.store.add_uploads
    parts.store.add_uploads = _hold(add, gate, entered)  # type: ignore[method-assign]
    assert parts.backlog.stall_s == 0.0
    acked = 0
    with pytest.raises(QueueFull, match="the journal holds"):
        for i in range(1000):
            parts.writer.submit(journal_rows(RecordKind.CRASHES, rows([make_record(i)]))).result(60)
            acked += 1
    assert 0 < acked < 1000
    assert parts.loader.unloaded_bytes() <= 200_000
    assert parts.backlog.stall_s > 0.0
    assert parts.backlog.expected_wait_s() > parts.backlog.stall_s
    assert parts.writer.healthy  # full is not broken
    gate.set()
    end = time.monotonic() + 60
    while parts.loader.unloaded_bytes() and time.monotonic() < end:
        time.sleep(0.01)
    assert parts.backlog.stall_s == 0.0
    parts.writer.submit(journal_rows(RecordKind.CRASHES, rows([make_record(5000)]))).result(60)
    parts.close()
    with open_store(tmp_path / "j.duckdb", read_only=True) as store:
        assert store.count_crashes() == acked + 1


def test_a_snapshot_is_written_beside_the_commits_not_in_front_of_them() -> None:
    started, release = threading.Event(), threading.Event()
    snapshots = 0
    clock = FakeClock()

    def snapshot() -> None:
        nonlocal snapshots
        snapshots += 1
        if snapshots == 2:  # the one that falls due under load: held until the test says
            started.set()
            release.wait(60)

    def sink(group: Sequence[JournalRows]) -> UploadCounts:
        # Ten minutes pass in each commit: the snapshot falls due, and uploads keep coming
        # past snapshot_busy_every_s, so it does not wait for a quiet moment.
        clock.now += 600.0
        return UploadCounts()

    writer = GroupCommitWriter(
        sink,
        Backlog(),
        CollectorMetrics.create(),
        max_queue_records=1000,
        max_commit_records=5,
        snapshot=snapshot,
        snapshot_every_s=30.0,
        clock=clock,
    )
    writer.start()
    writer.submit(journal_rows(RecordKind.HEARTBEATS, [Heartbeat("h", 1, "s", "1")])).result(60)
    assert started.wait(60)  # the snapshot is copying ...
    # ... and requests are committed and answered meanwhile.
    for i in range(3):
        writer.submit(
            journal_rows(RecordKind.HEARTBEATS, [Heartbeat("h", 2 + i, "s", "1")])
        ).result(60)
    assert not release.is_set()
    release.set()
    assert writer.stop(60)
    # The one at start and the one held (then perhaps one more for the commits made while it
    # copied).
    assert snapshots >= 2


class _SnapshotClock:
    """A writer with a fake clock whose snapshots are counted; commits take no time."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.t0 = self.clock.now
        self.snapshots: list[float] = []
        self.writer = GroupCommitWriter(
            lambda group: UploadCounts(),
            Backlog(),
            CollectorMetrics.create(),
            max_queue_records=1000,
            max_commit_records=5,
            snapshot=lambda: self.snapshots.append(self.clock.now - self.t0),
            snapshot_every_s=30.0,
            snapshot_busy_every_s=300.0,
            clock=self.clock,
        )
        self.writer.start()

    def upload_at(self, t: float) -> None:
        self.clock.now = self.t0 + t
        self.writer.submit(
            journal_rows(RecordKind.HEARTBEATS, [Heartbeat("h", int(t * 10), "s", "1")])
        ).result(60)

    def settle(self) -> list[float]:
        # The writer thread runs its snapshots on a thread of its own: let it catch up.
        time.sleep(0.2)
        return self.snapshots


def test_a_due_snapshot_waits_for_a_quiet_moment_while_uploads_keep_coming() -> None:
    w = _SnapshotClock()
    assert w.settle() == [0.0]  # the one at start
    # An upload every half second for two minutes: the snapshot due at 30 s waits.
    for i in range(1, 241):
        w.upload_at(i * 0.5)
    assert w.settle() == [0.0]
    # Then a quiet second after the last commit (at 120 s): the idle writer finds it due and
    # writes it (its wait for the due time is real time, at most a second; the fake clock
    # says when).
    w.clock.now = w.t0 + 121.1
    end = time.monotonic() + 60
    while len(w.snapshots) < 2 and time.monotonic() < end:
        time.sleep(0.05)
    assert w.settle() == [0.0, pytest.approx(121.1)]
    assert w.writer.stop(60)


def test_a_snapshot_is_written_under_sustained_load_at_the_busy_interval() -> None:
    w = _SnapshotClock()
    # Uploads every half second for six minutes, never a quiet second: the snapshot comes
    # at snapshot_busy_every_s (300 s) after the one at start, not never.
    for i in range(1, 721):
        w.upload_at(i * 0.5)
    snaps = w.settle()
    assert snaps[0] == 0.0
    # (The snapshot thread reads the clock when it runs, a few uploads later at most.)
    assert 300.0 <= snaps[1] < 330.0
    assert len(snaps) == 2
    assert w.writer.stop(60)


# --- the link ---------------------------------------------------------------------------------


def test_the_writer_reads_link_messages_whole_however_the_socket_splits_them() -> None:
    """Small messages many to a read, large payloads and large heads straight into buffers of
    their own, each split across reads at every kind of place: each arrives whole, in order."""
    from corecensus.collector.link import _frame, _MessageReader

    messages: list[tuple[Any, bytes]] = [
        ([-1, "load", 3.0], b""),
        ([1, "store", ["crashes", ["a" * 64] * 20]], bytes(range(256)) * 1200),  # 300 KB
        ([-1, "load", 0.0], b""),
        ([2, "store", ["crashes", [f"{i:064x}" for i in range(2000)]]], b"\x93\x01\x02\x03"),
        ([3, "host", "web-1"], b""),
        ([4, "store", ["heartbeats", [["h", 1, "s", "1"]]]], b"x" * 70_000),
    ]
    stream = b"".join(_frame(header, payload) for header, payload in messages)
    got: list[tuple[Any, bytes]] = []
    lost = threading.Event()

    async def main(sizes: list[int]) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        done = loop.create_future()

        def message(header: Any, payload: memoryview) -> None:
            got.append((header, bytes(payload)))
            if len(got) % len(messages) == 0 and not done.done():
                done.set_result(None)

        await loop.connect_accepted_socket(
            lambda: _MessageReader(lambda t: None, message, lost.set), sock=ours
        )
        theirs.setblocking(False)
        at = 0
        for size in sizes:
            await loop.sock_sendall(theirs, stream[at : at + size])
            at += size
            await asyncio.sleep(0.001)  # (read before the next part comes)
        await loop.sock_sendall(theirs, stream[at:])
        await asyncio.wait_for(done, 60)
        theirs.close()

    for sizes in ([len(stream)], [5, 3, 20, 1000, 70_000, 200_000, 7], [65_536] * 8, [1] * 40):
        got.clear()
        asyncio.run(main(sizes))
        assert got == messages


# --- settings ---------------------------------------------------------------------------------


def test_front_ends_by_default_one_per_cpu_beyond_the_first_and_one_process_on_two() -> None:
    assert [default_workers(n) for n in (1, 2, 3, 4, 16)] == [1, 1, 2, 3, 8]


def test_settings_from_a_table_and_unknown_or_mistyped_ones_refused() -> None:
    base = CollectorConfig(db=Path("x.duckdb"))
    cfg = config_from_mapping(
        base,
        {"agent_rate_per_s": 5, "max_queue_records": 100, "limits": {"max_records": 10}},
        "c.toml",
    )
    assert cfg.agent_rate_per_s == 5.0 and cfg.max_queue_records == 100
    assert cfg.limits.max_records == 10 and cfg.limits.max_body_bytes == base.limits.max_body_bytes
    assert base.store_threads == 1  # the store's DuckDB threads: background work (config.py)
    assert config_from_mapping(base, {"store_threads": 2}, "c.toml").store_threads == 2
    rows = config_from_mapping(base, {"store_row_group_rows": 122_880}, "c.toml")
    assert rows.store_row_group_rows == 122_880  # DuckDB's own default
    for bad, message in (
        ({"agent_rate": 1}, "unknown setting 'agent_rate'"),
        ({"max_queue_records": "many"}, "max_queue_records must be int"),
        ({"max_queue_records": True}, "must be a number"),
        ({"body_timeout_s": 0}, "must be positive"),
        ({"store_threads": 0}, "store_threads must be positive"),
        ({"store_row_group_rows": 3000}, "store_row_group_rows must be a multiple of 2048"),
        ({"store_row_group_rows": 0}, "store_row_group_rows must be positive"),
        ({"limits": {"max_recs": 1}}, "unknown setting limits.max_recs"),
        ({"limits": 3}, "limits must be a table"),
    ):
        with pytest.raises(ConfigError, match=message):
            config_from_mapping(base, bad, "c.toml")


def test_the_collector_never_loads_drgn_or_the_core_reader() -> None:
    code = (
        "import sys, corecensus.collector.server, corecensus.collector.run\n"
        "print(sorted({'drgn', '_drgn', 'capstone', 'corecensus.coredump'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_ports_workers_and_numbers_out_of_range_are_refused_with_the_setting() -> None:
    """A port past 65535 reached bind() (OverflowError, a traceback), ``workers = 100000``
    spawned front ends until the machine's load average passed 400, and ``nan`` passed the
    "must be positive" check."""
    base = CollectorConfig(db=Path("x.duckdb"))
    for bad, message in (
        ({"port": 70000}, "c.toml: port must be 0 .any free port. to 65535"),
        ({"port": -1}, "c.toml: port must be 0"),
        ({"workers": 100_000}, "c.toml: workers must be 0 .from the CPU count. to 64, not 100000"),
        ({"workers": -2}, "workers must be 0"),
        ({"inline_decode_bytes": -1}, "c.toml: inline_decode_bytes must be 0 .off. or more"),
        ({"body_timeout_s": float("nan")}, "c.toml: body_timeout_s must be a finite number"),
        ({"header_timeout_s": float("inf")}, "header_timeout_s must be a finite number"),
    ):
        with pytest.raises(ConfigError, match=message):
            config_from_mapping(base, bad, "c.toml")
    # the bounds themselves are settings
    ok = config_from_mapping(base, {"port": 65535, "workers": 64, "body_timeout_s": 0.5}, "c")
    assert (ok.port, ok.workers, ok.body_timeout_s) == (65535, 64, 0.5)
    assert config_from_mapping(base, {"inline_decode_bytes": 0}, "c").inline_decode_bytes == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "127.0.0.1:99999"], "error: --listen: port 99999 is not 0 (any free port)"),
        (["--listen", "127.0.0.1:\u00b2"], "error: --listen: expected HOST:PORT"),
        # (with --listen refused after --workers: if --workers were let through, the run
        # stops at --listen instead of spawning 100,000 processes)
        (
            ["--workers", "100000", "--listen", "127.0.0.1:99999"],
            "error: --workers: workers must be 0 (from the CPU count) to",
        ),
    ],
)
def test_serve_refuses_a_bad_listen_or_workers_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    from corecensus.cli.main import main

    db = tmp_path / "x.duckdb"
    assert main(["collector", "serve", "--db", str(db), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.strip().splitlines()) == 1, err
    assert not db.exists()  # refused before the store was opened


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_address_in_use_is_named_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], workers: str
) -> None:
    """A port another process listens on (a real socket here) is refused with the address the
    operator gave, in one line, before any front end is spawned."""
    import socket

    from corecensus.cli.main import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        listen = f"127.0.0.1:{port}"
        db = tmp_path / "x.duckdb"
        status = main(
            ["collector", "serve", "--db", str(db), "--listen", listen, "--workers", workers]
        )
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --listen 127.0.0.1:{port}: cannot listen: ") and (
        "in use" in err
    ), err
    assert len(err.strip().splitlines()) == 1, err
    assert not db.exists()  # refused before the store was opened


def test_a_new_token_for_empty_or_spaced_hosts_is_refused() -> None:
    """``collector token x --hosts ''`` printed 'x  sha256:...    upload', a line that reads
    back as a token for a host named "upload"."""
    for hosts, scopes in (("", "upload"), ("h 1", "upload"), ("h", ""), ("h", "upload, read")):
        with pytest.raises(ConfigError, match="a comma-separated list without spaces"):
            new_token("x", hosts, scopes)
    secret, line = new_token("x", "web-1,web-2", "upload,read")
    agent = TokenTable.parse(line, "t").authenticate(f"Bearer {secret}")
    assert agent is not None and agent.hosts == frozenset({"web-1", "web-2"})


def test_the_commit_wait_counts_what_the_writer_holds_not_unread_requests() -> None:
    clock = FakeClock()
    backlog = Backlog(clock=clock)
    backlog.queued(2000)
    for _ in range(10):
        clock.now += 0.1
        backlog.committed(200, 0.1)
        backlog.queued(200)
    assert backlog.throughput == pytest.approx(2000.0)
    held = backlog.commit_wait_s()
    assert held == pytest.approx(2000 / 2000.0 + backlog.commit_s)
    # Requests admitted and not yet read are ahead of a new arrival, not of rows handed to
    # the writer now: the commit wait does not grow with them, the door's estimate does.
    for _ in range(50):
        backlog.admitted()
    assert backlog.commit_wait_s() == pytest.approx(held)
    assert backlog.expected_wait_s() > held + 0.4
    # The other front ends' records are ahead of it; the loader's lag is not (an upload is
    # answered once it is in the journal), though the door counts it.
    backlog.elsewhere(1000.0)
    backlog.stalling(2.0)
    assert backlog.commit_wait_s() == pytest.approx(held + 1000 / 2000.0)
    assert backlog.expected_wait_s() > held + 1000 / 2000.0 + 2.0


def test_a_front_end_reports_the_rows_still_waiting_for_the_link(tmp_path: Path) -> None:
    """Rows behind another message on the link (flow control: _SEND_AHEAD) are in no queue the
    writer can count: the front end reports them with its admitted work until they are
    written, so the writer's view and busy windows include them. A stand-in writer over a
    real Unix socket that reads nothing until told, then records the load notices."""
    from corecensus.collector.link import RemoteBackend, _frame, _read

    async def scenario() -> list[float]:
        loads: list[float] = []
        stores: list[int] = []
        read_now, answer_now = asyncio.Event(), asyncio.Event()
        done = asyncio.Event()

        async def writer(reader: asyncio.StreamReader, out: asyncio.StreamWriter) -> None:
            await read_now.wait()
            while len(stores) < 2 or loads[-1:] != [0]:
                (ident, op, arg), _ = await _read(reader)
                if ident == -1 and op == "load":
                    loads.append(arg)
                elif op == "store":
                    stores.append(ident)
                    if len(stores) == 2:
                        answer_now.set()
                        for i in stores:
                            out.write(_frame([i, "ok", None]))
            done.set()
            await reader.read()  # the front end closes its end
            out.close()
            await out.wait_closed()

        path = tmp_path / "link.sock"
        server = await asyncio.start_unix_server(writer, path=str(path))
        front = RemoteBackend(path, Backlog())
        await front.connect(10.0)
        # 1: large enough to fill the socket and the transport past _SEND_AHEAD; 2: seven
        # records that wait behind it.
        big = [Heartbeat(f"h{i}", i, "s" * 40, "1") for i in range(40_000)]
        first = asyncio.create_task(front.store(RecordKind.HEARTBEATS, big))
        await asyncio.sleep(0.2)
        second = asyncio.create_task(
            front.store(RecordKind.HEARTBEATS, [Heartbeat("w", i, "s", "1") for i in range(7)])
        )
        await asyncio.sleep(0.2)
        assert not second.done()
        read_now.set()
        await asyncio.wait_for(asyncio.gather(first, second, done.wait()), 60)
        await front.stop()
        server.close()
        await server.wait_closed()
        return loads

    loads = asyncio.run(scenario())
    # While the seven waited they were reported (the large one was written at once: the
    # transport took it whole); once all were written the load came back to nothing.
    assert 7 in loads
    assert loads[-1] == 0
    assert all(x in (0, 7, 40_000, 40_007) for x in loads)


# -- a request's wait in the kernel (arrival.py) --------------------------------------------------

# tcp_info's times are in the kernel's ticks (jiffies): up to 10 ms each at HZ=100.
_TICK_S = 0.011


def test_the_kernel_says_how_long_a_request_waited_unread() -> None:
    # A real loopback connection whose request the server does not accept or read for 0.4 s:
    # the kernel's time since its data arrived covers that pause, and never exceeds the real
    # time between sending and asking (bounds that hold however busy the machine is).
    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.create_connection(server.getsockname()) as client:
            client.sendall(b"POST /v1/crashes HTTP/1.1\r\n\r\n")
            sent = time.perf_counter()
            time.sleep(0.4)
            conn, _ = server.accept()
            with conn:
                waited = kernel_wait_s(conn)
                elapsed = time.perf_counter() - sent
            assert 0.4 - _TICK_S <= waited <= elapsed + _TICK_S
        # Asked at once, it is no more than the little time that passed (does not fire).
        with socket.create_connection(server.getsockname()) as client:
            client.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
            sent = time.perf_counter()
            conn, _ = server.accept()
            with conn:
                waited = kernel_wait_s(conn)
                elapsed = time.perf_counter() - sent
            assert 0.0 <= waited <= elapsed + _TICK_S


def test_a_socket_the_kernel_keeps_no_tcp_times_for_waited_zero(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as unix:
        unix.bind(str(tmp_path / "s"))
        assert kernel_wait_s(unix) == 0.0
    assert kernel_wait_s(None) == 0.0
