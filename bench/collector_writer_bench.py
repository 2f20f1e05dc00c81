"""The collector's writer process alone, CPU per record by thread (issue 11).

With front ends (``--workers N``) the writer process does no per-record work of HTTP, parsing
or signing: it takes signed rows over the link, appends them to its journal, and its loader
moves the journal into DuckDB. This bench runs that process's parts as the collector builds
them -- :class:`~corecensus.collector.backend.LocalBackend` behind a
:class:`~corecensus.collector.link.LinkServer` on a Unix socket, in a process of its own -- and
plays the front ends from this process through :class:`~corecensus.collector.link.RemoteBackend`
(``--front-ends`` links, ``--concurrency`` requests of ``--batch`` crash rows in flight each),
with rows signed from the collector bench's record (about 10 KB of JSON, every row its own id
and time) before the clock starts.

It prints the writer process's CPU per acknowledged record, in all (``wait4``'s rusage, every
thread, to its exit after SIGTERM, which loads what the journal still holds) and by thread
(``/proc/PID/task``, sampled until SIGTERM): the event loop (the link), the writer thread (the
group commit: the journal append), the loader (frames, decode, insert, commit, checkpoints) and
DuckDB's own threads; and this process's CPU per record (the front ends' share of the link:
encoding the rows). Snapshots are left out (``snapshot_interval_s`` is long): a copy of the
whole store every 30 s, not a cost per record.

    python bench/collector_writer_bench.py [--records 40000] [--runs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

_THREADS = {
    "MainThread": "event loop (link)",
    "corecensus-writer": "writer thread (journal append)",
    "corecensus-loader": "loader (decode, insert, commit, checkpoint)",
}


def _child(work: Path) -> None:
    """The writer process: LocalBackend + LinkServer, as ``serve --workers N`` runs them."""
    import threading

    from corecensus.collector.admission import Backlog
    from corecensus.collector.backend import LocalBackend, open_collector_store
    from corecensus.collector.config import CollectorConfig
    from corecensus.collector.link import LinkServer
    from corecensus.collector.logs import JsonLog
    from corecensus.collector.metrics import CollectorMetrics
    from corecensus.collector.run import freeze_startup_heap

    config = CollectorConfig(db=work / "writer.duckdb", snapshot_interval_s=1e6)
    store = open_collector_store(config)
    with open(work / "writer.log", "w") as log_stream:
        backend = LocalBackend(
            config, store, Backlog(), CollectorMetrics.create(), JsonLog(log_stream)
        )

        async def main() -> None:
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            backend.start()
            server = LinkServer(backend)
            link = await loop.create_unix_server(server.protocol, path=str(work / "writer.sock"))
            (work / "threads.json").write_text(
                json.dumps({t.native_id: t.name for t in threading.enumerate()})
            )
            freeze_startup_heap()
            await stop.wait()
            link.close()
            await backend.stop()

        asyncio.run(main())
    store.close()


def _signed_rows(count: int) -> list[Any]:
    """``count`` signed crash rows, each its own record (id, host, time)."""
    from collector_bench import Bodies, record_template
    from corecensus.app.uploads import UploadGroup, upload_rows
    from corecensus.ingest.wire import RecordKind, WireLimits, decompress
    from corecensus.ingest.wire_typed import decode_upload
    from corecensus.signing import TypedSigner

    cached = Path(tempfile.gettempdir()) / "corecensus-bench-record-template.json"
    if not cached.exists():
        cached.write_text(record_template())
    bodies, signer, limits = Bodies(cached.read_text(), 200, "w"), TypedSigner(), WireLimits()
    rows: list[Any] = []
    while len(rows) < count:
        body, _ = bodies.next(len(rows) // 200 % 256)
        plain = decompress(body, "zstd", 1 << 26)
        typed = [r.value for r in decode_upload(RecordKind.CRASHES, plain, limits).records]
        rows += upload_rows(UploadGroup(crashes=typed), signer).crashes
    return rows[:count]


def stages(rows: list[Any], rounds: int = 5) -> None:
    """In one process, CPU ms per record of each stage of the writer process's path, best of
    ``rounds``: the link's decode of a request, the journal append of a group commit (three
    requests of 20 rows, with its ``fdatasync``), and the loader's load of a batch (frames read
    and checked, decoded, inserted and committed in one store transaction), then a checkpoint
    of what the loads left in DuckDB's log."""
    from corecensus.collector.admission import Backlog
    from corecensus.collector.journal import Journal, JournalRows, journal_path, journal_rows
    from corecensus.collector.loader import JournalAppender, JournalLoader
    from corecensus.collector.metrics import CollectorMetrics
    from corecensus.ingest.wire import RecordKind
    from corecensus.store import open_store

    def cpu(fn: Any) -> float:
        c0 = time.process_time()
        fn()
        return time.process_time() - c0

    requests = [journal_rows(RecordKind.CRASHES, rows[i : i + 20]) for i in range(0, len(rows), 20)]
    sent = [(str(r.kind), list(r.keys), r.payload) for r in requests]
    link = min(
        cpu(lambda: [JournalRows.received(RecordKind(k), keys, p) for k, keys, p in sent])
        for _ in range(rounds)
    )
    print("\n| stage (in-process, per crash record) | CPU ms |")
    print("|---|---:|")
    print(f"| link: a request's rows taken off the link | {link / len(rows) * 1000:.4f} |")
    appends, loads, checkpoints = [], [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="collector-stages-") as tmp:
            store = open_store(Path(tmp) / "s.duckdb", threads=1)
            store.defer_checkpoints()
            journal = Journal(journal_path(store.location))
            metrics = CollectorMetrics.create()
            loader = JournalLoader(store, journal, metrics)
            appender = JournalAppender(journal, loader, Backlog(), metrics)
            appends.append(cpu(partial(_append_all, appender, requests)))
            loads.append(cpu(partial(_load_all, loader)))
            checkpoints.append(cpu(store.checkpoint))
            journal.close()
            store.close()
    n = len(rows)
    print(
        f"| writer thread: journal append, groups of 60 (+ fdatasync) | {min(appends) / n * 1000:.4f} |"
    )
    print(
        f"| loader: read, check, decode, insert, commit (batches of 16 MiB) | {min(loads) / n * 1000:.4f} |"
    )
    print(f"| loader: checkpoint | {min(checkpoints) / n * 1000:.4f} |")


def _append_all(appender: Any, requests: list[Any]) -> None:
    """Each three requests in turn as one group commit."""
    for i in range(0, len(requests), 3):
        appender(requests[i : i + 3])


def _load_all(loader: Any) -> None:
    """Every frame into the store, without the checkpoint ``catch_up`` adds."""
    while loader._load() is not None:
        pass


def _thread_cpu(pid: int) -> dict[int, float]:
    out: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


async def _feed(
    link: Path, rows: list[Any], batch: int, front_ends: int, concurrency: int
) -> float:
    from corecensus.collector.admission import Backlog
    from corecensus.collector.link import RemoteBackend
    from corecensus.collector.writer import QueueFull
    from corecensus.ingest.wire import RecordKind

    backends = [RemoteBackend(link, Backlog()) for _ in range(front_ends)]
    for b in backends:
        await b.connect(60.0)
    requests = [rows[i : i + batch] for i in range(0, len(rows), batch)]
    nxt = iter(requests)

    async def worker(backend: RemoteBackend) -> None:
        for request in nxt:
            while True:
                try:
                    await backend.store(RecordKind.CRASHES, request)
                    break
                except QueueFull:  # the loader is behind: admission would shed; wait
                    await asyncio.sleep(0.05)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(b) for b in backends for _ in range(concurrency)))
    seconds = time.perf_counter() - t0
    for b in backends:
        await b.stop()
    return seconds


def run_once(args: argparse.Namespace, rows: list[Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="collector-writer-bench-") as tmp:
        work = Path(tmp)
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", str(work)],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while not (work / "threads.json").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the writer process did not start")
            time.sleep(0.05)
        names = {int(k): v for k, v in json.loads((work / "threads.json").read_text()).items()}
        import corecensus.collector.link  # noqa: F401 (imported before the clock)

        before = _thread_cpu(proc.pid)
        feeder0 = time.process_time()
        try:
            seconds = asyncio.run(
                _feed(work / "writer.sock", rows, args.batch, args.front_ends, args.concurrency)
            )
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        feeder = time.process_time() - feeder0
        after = _thread_cpu(proc.pid)
        proc.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(proc.pid, 0)
        if status != 0:
            raise SystemExit(f"the writer process exited with status {status}")
        log = [json.loads(line) for line in (work / "writer.log").read_text().splitlines()]
    by_thread: dict[str, float] = {}
    for tid, cpu in after.items():
        label = _THREADS.get(names.get(tid, ""), "DuckDB's threads and others")
        by_thread[label] = by_thread.get(label, 0.0) + cpu - before.get(tid, 0.0)
    n = len(rows)
    total = usage.ru_utime + usage.ru_stime - sum(before.values())
    return {
        "records": n,
        "seconds": seconds,
        "total_ms": total / n * 1000,
        "stop_ms": (total - sum(by_thread.values())) / n * 1000,
        "threads_ms": {k: v / n * 1000 for k, v in by_thread.items()},
        "feeder_ms": feeder / n * 1000,
        "checkpoints": sum(1 for e in log if e.get("event") == "checkpoint"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--records", type=int, default=40_000)
    parser.add_argument("--batch", type=int, default=20, help="rows per request")
    parser.add_argument("--front-ends", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16, help="requests per front end")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--stages", action="store_true", help="only the in-process stages")
    args = parser.parse_args()
    if args.child is not None:
        _child(args.child)
        return
    rows = _signed_rows(args.records)
    if args.stages:
        stages(rows)
        return
    print(f"load average {os.getloadavg()[0]:.2f} at start")
    results = [run_once(args, rows) for _ in range(args.runs)]
    labels = [*_THREADS.values(), "DuckDB's threads and others"]
    print(
        "\n| run | records/s | writer process CPU ms / record | "
        + " | ".join(labels)
        + " | at SIGTERM (last load, checkpoint, close) | front-end side (encode + link) "
        "| checkpoints |"
    )
    print("|---:|---:|---:|" + "---:|" * len(labels) + "---:|---:|---:|")
    for i, r in enumerate(results, 1):
        cells = " | ".join(f"{r['threads_ms'].get(k, 0.0):.4f}" for k in labels)
        print(
            f"| {i} | {r['records'] / r['seconds']:,.0f} | {r['total_ms']:.4f} | {cells} | "
            f"{r['stop_ms']:.4f} | {r['feeder_ms']:.4f} | {r['checkpoints']} |"
        )
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
