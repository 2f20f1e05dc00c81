"""``kill -9`` of the collector in the middle of a stream, then a restart: every acknowledged
record is in the store exactly once, and the agents' retries add no duplicates. Also the
graceful stop (SIGTERM during uploads) and the tokens file re-read on SIGHUP."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tests.collector.collector_proc import CollectorProcess, write_tokens
from tests.store.store_records import make_record

from corecensus.collector.journal import Journal, decode_rows, journal_path
from corecensus.ingest.wire import BatchAck, ContentEncoding, RecordKind, compress, encode_batch
from corecensus.model import CrashRecord
from corecensus.store import open_store

HANG_BOUND_S = 60.0


def _batches(n_batches: int, size: int, first: int = 10_000) -> list[list[CrashRecord]]:
    return [
        [make_record(first + b * size + i, host=f"web-{(b + i) % 4}") for i in range(size)]
        for b in range(n_batches)
    ]


def _send(client: httpx.Client, batch: list[CrashRecord]) -> httpx.Response:
    body = compress(encode_batch(RecordKind.CRASHES, batch), ContentEncoding.ZSTD)
    return client.post(
        "/v1/crashes",
        content=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "zstd"},
    )


def _stream(
    url: str, token: str, batches: list[list[CrashRecord]], acked: list[int], lock: threading.Lock
) -> None:
    """An agent: sends its batches one after another until the collector goes away."""
    with httpx.Client(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=HANG_BOUND_S
    ) as client:
        for index, batch in enumerate(batches):
            try:
                r = _send(client, batch)
            except httpx.TransportError:
                return
            if r.status_code == 200 and BatchAck.from_json(r.json()).accepted == len(batch):
                with lock:
                    acked.append(index)


Agent = Callable[[str, str, list[list[CrashRecord]], list[int], threading.Lock], None]


def start_agents(
    agent: Agent, url: str, tokens: dict[str, str], streams: dict[str, list[list[CrashRecord]]]
) -> tuple[dict[str, list[int]], threading.Lock, list[threading.Thread]]:
    """One started thread per agent name running ``agent`` on its stream; what each had
    acknowledged (batch indices, appended under the lock) is in the returned dict."""
    acked: dict[str, list[int]] = {name: [] for name in streams}
    lock = threading.Lock()
    threads = [
        threading.Thread(target=agent, args=(url, tokens[n], streams[n], acked[n], lock))
        for n in streams
    ]
    for t in threads:
        t.start()
    return acked, lock, threads


def _stored_ids(db: Path) -> list[str]:
    with open_store(db, read_only=True) as store:
        return [r.core_id for r in store.iter_crashes()]


def _journaled_ids(db: Path) -> list[str]:
    """The crash ids in the journal beside the store ``db`` (acknowledged, maybe not loaded)."""
    journal = Journal(journal_path(db))
    try:
        return [
            r.core_id
            for payload, _ in journal.frames(journal.start, 1 << 40)
            if payload
            for r in decode_rows(payload).crashes
        ]
    finally:
        journal.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("workers", "load_interval_s"),
    [(1, 0.05), (2, 0.05), (1, 600.0)],
    ids=["one-process", "front-ends", "loader-behind"],
)
def test_kill_9_mid_stream_loses_no_acknowledged_record_and_retries_do_not_duplicate(
    tmp_path: Path, workers: int, load_interval_s: float
) -> None:
    """With two workers, ``kill -9`` hits the writer process (the one ``serve`` runs in); its
    front ends lose their link and end too. With the loader behind (a load every ten
    minutes), every acknowledged record is only in the journal when the kill comes; the
    restart loads it, after cutting the frame the kill tore."""
    tokens = write_tokens(
        tmp_path / "tokens", {"agent-a": ("*", "upload"), "agent-b": ("*", "upload")}
    )
    config = (
        f"workers = {workers}\nagent_rate_per_s = 1000.0\nagent_burst = 1000\n"
        f"load_interval_s = {load_interval_s}\n"
    )
    first = CollectorProcess(tmp_path, tokens=tmp_path / "tokens", config=config).start()
    streams = {"agent-a": _batches(80, 10, 100_000), "agent-b": _batches(80, 10, 200_000)}
    acked, lock, threads = start_agents(_stream, first.url, tokens, streams)
    # Kill once both agents have had some batches acknowledged, in the middle of the stream.
    done = threading.Event()

    def enough() -> None:
        while not done.wait(0.01):
            with lock:
                if all(len(a) >= 5 for a in acked.values()):
                    return

    watcher = threading.Thread(target=enough)
    watcher.start()
    watcher.join(HANG_BOUND_S * 4)
    done.set()
    front_ends = {int(e["pid"]) for e in first.events() if "pid" in e}
    first.kill()
    for t in threads:
        t.join(HANG_BOUND_S)
        assert not t.is_alive()
    end = time.monotonic() + HANG_BOUND_S
    while any(Path(f"/proc/{pid}").exists() for pid in front_ends) and time.monotonic() < end:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{pid}").exists() for pid in front_ends)
    with lock:
        acknowledged = {
            r.core_id for name, idx in acked.items() for i in idx for r in streams[name][i]
        }
    assert len(acknowledged) >= 2 * 5 * 10
    # Not every batch got through: the kill really was mid-stream.
    assert len(acknowledged) < 2 * 80 * 10

    # Straight after the kill, before anything else writes: every acknowledged record is in
    # the store or the journal beside it, once in the store.
    after_kill = _stored_ids(first.db)
    assert acknowledged <= set(after_kill) | set(_journaled_ids(first.db))
    assert len(after_kill) == len(set(after_kill))
    torn = b""
    if load_interval_s > 60:
        assert after_kill == []  # nothing loaded yet: the journal alone kept them
        # The kill in the middle of an append, as it may come: half a frame at the end.
        last = max(journal_path(first.db).iterdir())
        torn = last.read_bytes()[:30]
        with open(last, "ab") as f:
            f.write(torn)

    # A restarted collector on the same store; the agents retry everything they sent.
    second = CollectorProcess(
        tmp_path, db=first.db, tokens=tmp_path / "tokens", config=config
    ).start()
    retried: list[int] = []
    retries = [
        threading.Thread(target=_stream, args=(second.url, tokens[n], streams[n], retried, lock))
        for n in streams
    ]
    for t in retries:
        t.start()
    for t in retries:
        t.join(HANG_BOUND_S * 4)
        assert not t.is_alive()
    replayed = second.wait_for("journal_replayed")
    assert replayed["torn_bytes"] == len(torn)
    if load_interval_s > 60:
        assert replayed["records"] >= len(acknowledged)
    assert len(retried) == 2 * 80  # every batch, acknowledged before or not, answered 200
    assert second.stop() == 0
    final = _stored_ids(first.db)
    everything = {r.core_id for batches in streams.values() for b in batches for r in b}
    assert len(final) == len(set(final)) == len(everything)
    assert set(final) == everything


def test_kill_9_between_a_loads_commit_and_the_segment_deletion_stores_nothing_twice(
    tmp_path: Path,
) -> None:
    """The loader stores a batch of frames and how far the journal is applied in one
    transaction, then deletes the segments it applied. Killed between the two (a test hook
    kills the process there), the restart deletes those segments unread and loads only the
    frames after the stored position. Also: a retry whose first copy is only in the journal
    is answered 200 and counted as a duplicate, not journaled again."""
    tokens = write_tokens(tmp_path / "tokens", {"a": ("*", "upload")})
    # A load once about 5 batches of 10 crashes (2 KB each) wait, a segment every 2 batches.
    config = (
        "agent_rate_per_s = 1000.0\nagent_burst = 1000\nload_interval_s = 600.0\n"
        "load_batch_bytes = 100000\njournal_segment_bytes = 40000\n"
    )
    first = CollectorProcess(
        tmp_path,
        tokens=tmp_path / "tokens",
        config=config,
        env={"CORECENSUS_TEST_KILL_AFTER_LOAD": "1"},
    ).start()
    batches = _batches(40, 10)
    client = first.client(tokens["a"])
    assert _send(client, batches[0]).status_code == 200
    retry = _send(client, batches[0])  # the first copy is in the journal, not the store
    assert retry.status_code == 200 and BatchAck.from_json(retry.json()).accepted == 10
    metrics = client.get("/metrics").text
    assert 'corecensus_collector_records_duplicate_total{kind="crashes"} 10.0' in metrics
    acked = [0]
    with pytest.raises(httpx.TransportError):  # the first load kills the collector
        for index in range(1, len(batches)):
            assert _send(client, batches[index]).status_code == 200
            acked.append(index)
    assert first.proc is not None and first.proc.wait(HANG_BOUND_S) == -signal.SIGKILL
    stored = _stored_ids(first.db)
    assert 0 < len(stored) < 400  # the first load's, committed
    # The segments it applied are still there (the kill came before their deletion).
    assert (journal_path(first.db) / f"{1:020d}.seg").exists()

    second = CollectorProcess(tmp_path, db=first.db, tokens=tmp_path / "tokens", config=config)
    second.start()
    replayed = second.wait_for("journal_replayed")
    # Only the frames after the stored position were loaded, each of them new.
    assert replayed["records"] == replayed["new"]
    assert not (journal_path(first.db) / f"{1:020d}.seg").exists()
    assert second.stop() == 0
    final = _stored_ids(first.db)
    assert len(final) == len(set(final)) == len(stored) + replayed["records"]
    assert {r.core_id for i in acked for r in batches[i]} <= set(final)


def test_a_journal_that_cannot_grow_answers_503_acknowledges_nothing_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """A full disk, stood in for by a file size limit (RLIMIT_FSIZE, set with prlimit on the
    collector's process): the append that passes it fails, its requests get 503
    store_unavailable and are not stored, and every request acknowledged before is stored
    once the collector stops. The store's own files stay far below the limit (it is
    checkpointed every MiB); the journal's one segment reaches it."""
    tokens = write_tokens(tmp_path / "tokens", {"a": ("*", "upload")})
    config = (
        "agent_rate_per_s = 1000.0\nagent_burst = 1000\nload_interval_s = 0.05\n"
        "journal_segment_bytes = 1000000000\ncheckpoint_idle_bytes = 1000000\n"
        "checkpoint_max_bytes = 2000000\n"
    )
    proc = CollectorProcess(
        tmp_path,
        tokens=tmp_path / "tokens",
        config=config,
        wrap=["prlimit", f"--fsize={8 << 20}", "--"],
    ).start()
    batches = _batches(100, 50)  # about 100 KB of journal each
    client = proc.client(tokens["a"])
    acked: list[int] = []
    refused: httpx.Response | None = None
    for index, batch in enumerate(batches):
        r = _send(client, batch)
        if r.status_code != 200:
            refused = r
            break
        acked.append(index)
    assert refused is not None, "the journal never reached the limit"
    assert refused.status_code == 503
    assert refused.json()["error"] == "store_unavailable"
    assert "File too large" in refused.json()["detail"]
    assert 10 < len(acked) < len(batches)
    ready = proc.client().get("/readyz")
    assert ready.status_code == 503 and "journal" in ready.json()["reason"]
    assert proc.stop() == 0
    stored = _stored_ids(proc.db)
    assert len(stored) == len(set(stored)) == 50 * len(acked)
    assert set(stored) == {r.core_id for i in acked for r in batches[i]}


def test_sigterm_finishes_and_commits_accepted_uploads_then_exits_0(tmp_path: Path) -> None:
    tokens = write_tokens(tmp_path / "tokens", {"a": ("*", "upload")})
    proc = CollectorProcess(
        tmp_path,
        tokens=tmp_path / "tokens",
        config="agent_rate_per_s = 1000.0\nagent_burst = 1000\n",
    ).start()
    batches = _batches(200, 20)
    acked: list[int] = []
    lock = threading.Lock()
    sender = threading.Thread(target=_stream, args=(proc.url, tokens["a"], batches, acked, lock))
    sender.start()
    proc.wait_for("upload", count=5)
    proc.signal(signal.SIGTERM)
    sender.join(HANG_BOUND_S)
    assert proc.proc is not None and proc.proc.wait(HANG_BOUND_S) == 0
    events = proc.events()
    assert events[-1]["event"] == "stopped"
    refused = [e for e in events if e.get("event") == "upload" and e.get("status") != 200]
    assert all(e["status"] == 503 and e["reason"] == "stopping" for e in refused)
    stored = set(_stored_ids(proc.db))
    with lock:
        expected = {r.core_id for i in acked for r in batches[i]}
    assert len(acked) >= 5
    assert expected <= stored


def test_sighup_rereads_the_tokens_file_and_a_broken_file_keeps_the_old_tokens(
    tmp_path: Path,
) -> None:
    tokens_file = tmp_path / "tokens"
    old = write_tokens(tokens_file, {"a": ("*", "upload")})
    proc = CollectorProcess(tmp_path, tokens=tokens_file).start()
    try:
        new = write_tokens(tokens_file, {"b": ("*", "upload")})
        health = proc.client()
        assert _send(proc.client(new["b"]), [make_record(1)]).status_code == 401
        proc.signal(signal.SIGHUP)
        proc.wait_for("tokens_reloaded")
        assert health.get("/healthz").status_code == 200
        assert _send(proc.client(new["b"]), [make_record(1)]).status_code == 200
        assert _send(proc.client(old["a"]), [make_record(2)]).status_code == 401
        tokens_file.write_text("b sha256:nothex *\n")
        proc.signal(signal.SIGHUP)
        failed = proc.wait_for("tokens_reload_failed")
        assert f"{tokens_file}:1" in failed["detail"]
        assert _send(proc.client(new["b"]), [make_record(3)]).status_code == 200
    finally:
        assert proc.stop() == 0


def test_an_agent_over_its_rate_gets_429_and_others_do_not(tmp_path: Path) -> None:
    tokens = write_tokens(tmp_path / "tokens", {"noisy": ("*", "upload"), "quiet": ("*", "upload")})
    proc = CollectorProcess(
        tmp_path, tokens=tmp_path / "tokens", config="agent_rate_per_s = 0.01\nagent_burst = 3\n"
    ).start()
    try:
        noisy = [_send(proc.client(tokens["noisy"]), [make_record(i)]) for i in range(4)]
        assert [r.status_code for r in noisy] == [200, 200, 200, 429]
        # 1 request per 100 s: the next is about 100 s away.
        assert 90 <= int(noisy[3].headers["Retry-After"]) <= 101
        assert noisy[3].json()["error"] == "rate_limited"
        assert _send(proc.client(tokens["quiet"]), [make_record(9)]).status_code == 200
    finally:
        assert proc.stop() == 0


def test_without_tokens_only_loopback_is_served(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "corecensus",
            "collector",
            "serve",
            "--db",
            str(tmp_path / "x.duckdb"),
            "--listen",
            "0.0.0.0:0",
        ],
        capture_output=True,
        text=True,
        timeout=HANG_BOUND_S * 2,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: --listen 0.0.0.0: without --tokens the collector serves only on loopback"
    ]
