"""Benchmark (not a test): 10,000 agents coming back after a 10-minute collector outage.

Issue 12: arrivals per second at the collector after the outage, with the agent's jitter and
without it, against the collector's measured capacity (README, "The collector under load").

What is real: every agent is the agent's own ``Uploader`` (full-jitter backoff, ``Retry-After``,
token-bucket rate cap, batches, zstd, the loss counts) over its own ``Spool`` (on tmpfs, so that
10,000 spools' fsyncs do not measure the disk), fed by the daemon's own heartbeat records (the
agent's own and two services', every ``heartbeat_interval_s``); the collector is a real
``corecensus collector serve`` process on loopback with its DuckDB store, and during the outage
the agents' requests go to a bound port that refuses connections (what a stopped collector
looks like to a client).

Time is virtual: the uploaders run on an injected clock (the same code path the daemon's clock
takes), and a discrete-event loop per process advances it from one agent's due moment to the
next, so 10 virtual minutes of outage and 15 of recovery take only the real time their requests
take. Arrivals are counted per virtual second when a request is sent. The collector is never
overloaded in real time this way (requests are sent one after another per process), so the table
is the OFFERED load; where it passes the collector's capacity, the real collector would shed with
503 + Retry-After (bench/collector_bench.py measures that).

Without jitter: the same code with a random source whose ``uniform(a, b)`` is ``b`` -- each
backoff waits its whole window (plain exponential backoff), and ``Retry-After`` gets nothing on
top. First contact is not part of the scenario (the agents were running long before the
outage: ``first_contact_window_s`` 0 in both). Heartbeat phases: ``spread`` (agents started at
different times: uniform over the interval) or ``aligned`` (started together, e.g. by one
deploy), both jitter settings alike.

Usage: python bench/agent_fleet_bench.py [--agents 10000] [--procs 4] [--outage-s 600]
       [--after-s 900] [--phase spread|aligned] [--seed 1]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import multiprocessing
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from corecensus.agent.config import AgentConfig, ServiceSpec  # noqa: E402
from corecensus.agent.exposure import heartbeats  # noqa: E402
from corecensus.agent.spool import Spool  # noqa: E402
from corecensus.agent.uploader import Uploader, UploadOutcome  # noqa: E402
from corecensus.collector.tokens import new_token  # noqa: E402

CAPACITY_RECORDS_S = 269  # README: the collector's measured sustained capacity (crash records)
SERVICES = (ServiceSpec("api", "2.1", comm="api"), ServiceSpec("worker", "2.1", comm="worker"))
RUNNING = Counter({"api": 1, "worker": 1})
T0_WALL = 1_800_000_000.0


class NoJitter(random.Random):
    """The agent's random source with the randomness taken out: every ``uniform(a, b)`` is
    ``b`` (a backoff waits its whole window, plain exponential backoff)."""

    def uniform(self, a: float, b: float) -> float:
        return b


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return T0_WALL + self.now


def simulate(job: dict[str, Any]) -> dict[str, Any]:
    """One process's agents through the outage and after; arrivals per virtual second."""
    first, count = job["first"], job["count"]
    clock = VirtualClock()
    rng_fleet = random.Random(job["seed"] * 1000 + first)
    refuse = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    refuse.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    down_url = f"http://127.0.0.1:{refuse.getsockname()[1]}"
    base = AgentConfig(
        collector_url=down_url,
        first_contact_window_s=0.0,
        request_timeout_s=30.0,
        spool_max_bytes=64 << 20,
    )
    client = httpx.Client()
    agents: list[tuple[str, Spool, Uploader, AgentConfig, AgentConfig]] = []
    for i in range(first, first + count):
        host = f"host-{i:05d}"
        down = base.replace(token=job["tokens"][host])
        up_config = down.replace(collector_url=job["url"])
        spool = Spool(Path(job["spools"]) / host, base.spool_max_bytes)
        rng = NoJitter(i) if job["jitter"] == "off" else random.Random(job["seed"] * 100_003 + i)
        up = Uploader(down, spool, client, rng=rng, clock=clock, wall_clock=clock.wall)
        agents.append((host, spool, up, down, up_config))
    interval = base.heartbeat_interval_s
    events: list[tuple[float, int, int, str]] = []
    seq = 0
    for n in range(count):
        phase = rng_fleet.uniform(0.0, interval) if job["phase"] == "spread" else 0.0
        events.append((phase, seq, n, "beat"))
        seq += 1
    heapq.heapify(events)
    pending_upload: dict[int, float] = {}
    end = job["outage_s"] + job["after_s"]
    requests: Counter[int] = Counter()
    records: Counter[int] = Counter()
    acked: Counter[int] = Counter()
    statuses: Counter[str] = Counter()
    started = time.monotonic()

    def schedule_upload(n: int, at: float) -> None:
        nonlocal seq
        if pending_upload.get(n, float("inf")) <= at:
            return
        pending_upload[n] = at
        heapq.heappush(events, (at, seq, n, "up"))
        seq += 1

    while events:
        at, _, n, kind = heapq.heappop(events)
        if at >= end:
            break
        clock.now = at
        host, spool, up, down, up_config = agents[n]
        if kind == "beat":
            for beat in heartbeats(
                host, int(clock.wall() * 1e6), SERVICES, RUNNING, uptime_s=86_400 + int(at)
            ):
                spool.put("heartbeat", beat.to_json())
            heapq.heappush(events, (at + interval, seq, n, "beat"))
            seq += 1
            schedule_upload(n, at + up.ready_in())
            continue
        if pending_upload.get(n) != at:
            continue  # superseded by an earlier one
        del pending_upload[n]
        up.config = up_config if at >= job["outage_s"] else down
        result = up.upload_once()
        if result.outcome is UploadOutcome.IDLE:
            continue
        if result.outcome is not UploadOutcome.WAIT:
            second = int(at)
            requests[second] += 1
            records[second] += result.records
            statuses[str(result.status or "refused")] += 1
            if result.outcome is UploadOutcome.SENT:
                acked[second] += result.records
        if spool.depth()[0] > 0:
            schedule_upload(n, at + max(up.ready_in(), 1e-3))
    client.close()
    refuse.close()
    return {
        "requests": dict(requests),
        "records": dict(records),
        "acked": dict(acked),
        "statuses": dict(statuses),
        "left": sum(a[1].depth()[0] for a in agents),
        "real_s": time.monotonic() - started,
    }


def start_collector(db: Path, tokens: Path) -> tuple[subprocess.Popen[bytes], str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    argv = [sys.executable, "-m", "corecensus", "collector", "serve", "--db", str(db)]
    argv += ["--listen", f"127.0.0.1:{port}", "--tokens", str(tokens)]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the collector did not start")


def run(args: argparse.Namespace, jitter: str) -> dict[str, Any]:
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    work = Path(tempfile.mkdtemp(prefix="ccfleet", dir=shm))
    db_dir = Path(tempfile.mkdtemp(prefix="ccfleetdb"))
    # One token per agent, bound to its host, as a fleet has them: the collector's per-agent rate
    # limit (and its auth) then applies to each agent, not to one shared "anonymous" agent.
    tokens: dict[str, str] = {}
    lines = []
    for i in range(args.agents):
        host = f"host-{i:05d}"
        tokens[host], line = new_token(host, host)
        lines.append(line)
    (db_dir / "tokens").write_text("\n".join(lines) + "\n")
    proc, url = start_collector(db_dir / "fleet.duckdb", db_dir / "tokens")
    try:
        per = args.agents // args.procs
        jobs = [
            {
                "first": p * per,
                "count": per if p < args.procs - 1 else args.agents - per * (args.procs - 1),
                "seed": args.seed,
                "jitter": jitter,
                "phase": args.phase,
                "url": url,
                "tokens": tokens,
                "spools": str(work),
                "outage_s": args.outage_s,
                "after_s": args.after_s,
            }
            for p in range(args.procs)
        ]
        with multiprocessing.get_context("fork").Pool(args.procs) as pool:
            parts = pool.map(simulate, jobs)
    finally:
        proc.terminate()
        proc.wait(timeout=120)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(db_dir, ignore_errors=True)
    out: dict[str, Any] = {k: Counter() for k in ("requests", "records", "acked", "statuses")}
    for part in parts:
        for k in ("requests", "records", "acked", "statuses"):
            out[k].update({(int(s) if k != "statuses" else s): v for s, v in part[k].items()})
    out["left"] = sum(p["left"] for p in parts)
    out["real_s"] = max(p["real_s"] for p in parts)
    return out


def summarize(r: dict[str, Any], outage_s: int, after_s: int) -> dict[str, float]:
    after = range(outage_s, outage_s + after_s)
    rec = [r["records"].get(s, 0) for s in after]
    req = [r["requests"].get(s, 0) for s in after]
    backlog_done = max((s for s in after if r["acked"].get(s, 0)), default=outage_s)
    return {
        "peak_records": max(rec),
        "p99_records": sorted(rec)[int(0.99 * (len(rec) - 1))],
        "mean_records_first_5min": statistics.fmean(rec[:300]),
        "peak_requests": max(req),
        "first_minute_records": sum(rec[:60]),
        "last_ack_s": backlog_done - outage_s,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agents", type=int, default=10_000)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--outage-s", type=int, default=600)
    ap.add_argument("--after-s", type=int, default=900)
    ap.add_argument("--phase", choices=("spread", "aligned"), default="spread")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    results: dict[str, dict[str, Any]] = {}
    for j in ("on", "off"):
        results[j] = run(args, j)
        part = summarize(results[j], args.outage_s, args.after_s)
        print(f"jitter {j} done: {part}", flush=True)  # each as it ends: a run takes a while
    print(
        f"{args.agents} agents in {args.procs} processes, outage {args.outage_s} s, then "
        f"{args.after_s} s (virtual), heartbeat phases {args.phase}, seed {args.seed}"
    )
    print("\narrivals at the collector after it is back (virtual seconds from its return):")
    print("| window | with jitter: records/s mean (max) | requests/s max | without jitter: records/s mean (max) | requests/s max |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    edges = [0, 10, 30, 60, 120, 300, 600, args.after_s]
    for lo, hi in itertools.pairwise(edges):
        if lo >= args.after_s:
            break
        cells = []
        for j in ("on", "off"):
            secs = range(args.outage_s + lo, args.outage_s + min(hi, args.after_s))
            rec = [results[j]["records"].get(s, 0) for s in secs]
            req = [results[j]["requests"].get(s, 0) for s in secs]
            cells += [f"{statistics.fmean(rec):.0f} ({max(rec)})", f"{max(req)}"]
        print(f"| {lo}-{hi} s | " + " | ".join(cells) + " |")
    print("\n| | with jitter | without jitter |")
    print("|---|---:|---:|")
    sums = {j: summarize(results[j], args.outage_s, args.after_s) for j in ("on", "off")}
    for key, label in (
        ("peak_records", "peak records/s"),
        ("p99_records", "p99 records/s"),
        ("peak_requests", "peak requests/s"),
        ("first_minute_records", "records in the first minute"),
        ("last_ack_s", "last acknowledged batch (s after return)"),
    ):
        print(f"| {label} | {sums['on'][key]:.0f} | {sums['off'][key]:.0f} |")
    for j in ("on", "off"):
        peak = sums[j]["peak_records"]
        print(
            f"jitter {j}: peak {peak:.0f} records/s = {peak / CAPACITY_RECORDS_S:.2f}x the "
            f"collector's measured capacity ({CAPACITY_RECORDS_S}/s); answers "
            f"{dict(results[j]['statuses'])}; records left in spools {results[j]['left']}; "
            f"{results[j]['real_s']:.0f} s real"
        )
    ratio = sums["off"]["peak_records"] / max(1, sums["on"]["peak_records"])
    print(f"peak without / with jitter: {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
