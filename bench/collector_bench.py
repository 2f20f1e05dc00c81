"""Load benchmark of ``corecensus collector serve`` (not a test): prints two tables.

The collector runs as a real server process on loopback; the load generator is a second process
(asyncio streams, one fresh connection per request, bodies built before each phase's clock
starts) sending realistic batches: 20 crash records per request (a record parsed from a core
shipped with the demo, about 10 KB of JSON, made unique per record; with --distinct-stacks each
also one of 4,096 ASLR loads of the program), zstd-compressed, from 256 agents with their own
tokens.

1. Capacity: a closed loop of 32 concurrent agents for ``--seconds``; acknowledged records/s
   (durable: acked only after commit), p50/p99 request latency. The same against the peer,
   ``bench/_collector_peer.py``: the simplest handler a user would write (parse, then
   ``add_crashes`` in its own transaction per request). The ratio is collector / peer.
2. Open loop (requests issued at a fixed rate, whatever the answers) at 50 % of the
   collector's measured capacity, at the issue's target (5,000 records/s, for 30 s: a rate
   sustained, not a burst), then at 100 % and 500 % of the measured capacity, each with a 2 s
   client deadline (``X-Corecensus-Deadline-Ms``): p50/p99 latency of the acknowledged requests, the share shed
   (503/429), client timeouts, other 5xx, and after the 5x phase the time until the collector is
   back to normal (its queue empty and a probe batch acknowledged). At the end every
   acknowledged record is looked up in the store.

Usage: python bench/collector_bench.py [--seconds S] [--batch N] [--concurrency C]
    [--target-rate R] [--target-seconds T]
Runs for about three minutes on 2 cores; traffic only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import httpx  # noqa: E402
import zstandard  # noqa: E402

DEADLINE_MS = 2000
# Closed-loop phases send bodies built before the clock starts, this many records' worth per
# second of the phase (beyond it, bodies are built while sending).
PREBUILT_RECORDS_PER_S = 8000
AGENTS = 256
START_BOUND_S = 120.0


# --- records ----------------------------------------------------------------------------------


def record_template() -> str:
    """A real crash record (a demo sample core, symbolized) as JSON with placeholders."""
    from corecensus.coredump import inspect_core

    samples = ROOT / "src" / "corecensus" / "demo" / "samples"
    rec = inspect_core(samples / "parse.core.zst", binaries=[samples])
    doc = rec.to_json()
    doc["core_id"] = "@@ID@@"
    doc["metadata"] = {
        **doc["metadata"],
        "COREDUMP_HOSTNAME": "@@HOST@@",
        "COREDUMP_TIMESTAMP": "@@TIME@@",
        "CORECENSUS_SERVICE": "ledger",
        "CORECENSUS_VERSION": "2.0",
        "CORECENSUS_CPU": "3",
    }
    return json.dumps(doc, separators=(",", ":"))


# With --distinct-stacks, each record is one of this many loads of the program at different
# addresses, in turn: more than a decode thread's signature cache holds (1024), so every
# record misses it, as a fleet's crashes do under ASLR.
DISTINCT_LOADS = 4096


def aslr_templates(template: str, loads: int) -> list[str]:
    """``template`` as ``loads`` runs of the program would leave it under ASLR: each run's
    modules (and so its frames, stack window, signal frames and pc) a different number of
    pages further, its stack too."""
    base = json.loads(template)
    out = []
    for k in range(1, loads + 1):
        code, stack = k * 0x7000, k * 0x30
        doc = json.loads(template) if k > 1 else base
        for m in doc["modules"]:
            m["base"] += code
            m["end"] += code
        for f in doc["frames"]:
            f["pc"] += code if f["pc"] else 0
        for w in doc["stack_window"]:
            w["address"] += code
        for sf in doc["signal_frames"]:
            sf["interrupted_pc"] += code
            if sf.get("interrupted_sp") is not None:
                sf["interrupted_sp"] += stack
        regs = doc["registers"]
        for name, shift in (("rip", code), ("rsp", stack), ("rbp", stack)):
            if name in regs:
                regs[name] += shift
        out.append(json.dumps(doc, separators=(",", ":")))
    return out


class Bodies:
    """Unique batches, made by filling in the template (cheap enough not to limit the load).
    ``loads`` > 1: the records take turns among that many ASLR loads (:func:`aslr_templates`)."""

    def __init__(self, template: str, batch: int, prefix: str, loads: int = 1) -> None:
        self.templates = [template] if loads <= 1 else aslr_templates(template, loads)
        self.batch = batch
        self.prefix = prefix
        self.count = 0
        self.zstd = zstandard.ZstdCompressor(level=3)

    def next(self, agent: int) -> tuple[bytes, list[str]]:
        ids, parts = [], []
        host = f"host-{agent:04d}"
        for _ in range(self.batch):
            self.count += 1
            cid = f"{self.prefix}{self.count:012x}"
            ids.append(cid)
            t = str(1_700_000_000_000_000 + self.count * 1000)
            template = self.templates[self.count % len(self.templates)]
            parts.append(
                template.replace("@@ID@@", cid).replace("@@HOST@@", host).replace("@@TIME@@", t)
            )
        body = '{"schema_version":1,"kind":"crashes","records":[' + ",".join(parts) + "]}"
        return self.zstd.compress(body.encode()), ids


# --- servers ----------------------------------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    db: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_s(self) -> float:
        """CPU seconds the server has used (user + system, all threads), its processes
        summed: the collector's front ends and writer, or the peer's one."""
        return sum(_proc_cpu_s(pid) for pid in _tree(self.proc.pid))

    def peak_rss_mib(self) -> float:
        """Each of the server's processes' peak resident memory (VmHWM), summed, in MiB: an
        upper bound of what it held at once (the processes' peaks need not coincide)."""
        return sum(_peak_rss_kib(pid) for pid in _tree(self.proc.pid)) / 1024

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(START_BOUND_S)


def _proc_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _peak_rss_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _tree(root: int) -> list[int]:
    """``root`` and its descendants now (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _wait(predicate: Any, proc: subprocess.Popen[bytes], what: str) -> Any:
    end = time.monotonic() + START_BOUND_S
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited {proc.returncode}")
        time.sleep(0.05)
    raise SystemExit(f"{what} did not start")


def start_collector(work: Path, tokens: Path, workers: int, extra_config: str = "") -> Server:
    db, log = work / f"collector-{workers}.duckdb", work / f"collector-{workers}.log"
    cfg = work / f"collector-{workers}.toml"
    # Per-agent rates high enough that the rate limit is not what the benchmark measures.
    cfg.write_text(
        "agent_rate_per_s = 20.0\nagent_burst = 40\nmax_queue_records = 50000\n"
        f"workers = {workers}\n{extra_config}"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "corecensus", "collector", "serve", "--db", str(db),
             "--listen", "127.0.0.1:0", "--tokens", str(tokens), "--config", str(cfg)],
            stderr=fh, stdout=subprocess.DEVNULL, env=env,
        )  # fmt: skip

    def port() -> int | None:
        for line in log.read_text(errors="replace").splitlines():
            if '"listening"' in line:
                return int(json.loads(line)["port"])
        return None

    return Server(proc, _wait(port, proc, "collector"), db, log)


def start_peer(work: Path) -> Server:
    db, port_file, log = work / "peer.duckdb", work / "peer.port", work / "peer.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "_collector_peer.py"), str(db), str(port_file)],
            stderr=fh, stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def port() -> int | None:
        if port_file.exists() and port_file.read_text().strip():
            # Listening once a request gets any answer.
            p = int(port_file.read_text())
            try:
                httpx.get(f"http://127.0.0.1:{p}/", timeout=1.0)
            except httpx.HTTPError:
                return None
            return p
        return None

    return Server(proc, _wait(port, proc, "peer"), db, log)


# --- the load generator (runs in its own process) ---------------------------------------------


@dataclass
class PhaseResult:
    name: str
    seconds: float
    requests: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    latencies_ok: list[float] = field(default_factory=list)
    acked_records: int = 0
    timeouts: int = 0
    recovery_s: float | None = None
    generator_cpu_s: float = 0.0
    deadline: bool = True  # whether its requests carried the deadline header

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seconds": self.seconds,
            "requests": self.requests,
            "statuses": dict(self.statuses),
            "latencies_ok": self.latencies_ok,
            "acked_records": self.acked_records,
            "timeouts": self.timeouts,
            "recovery_s": self.recovery_s,
            "generator_cpu_s": self.generator_cpu_s,
            "deadline": self.deadline,
        }


class _Exchange(asyncio.Protocol):
    """A minimal HTTP/1.1 client connection: :meth:`ask` sends one prepared request, and its
    future gets the response's status once the whole body (by Content-Length) has arrived, or
    the error that ended the connection. One request at a time; ``reusable`` afterwards unless
    the server said ``Connection: close`` or went away."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[int] | None = None
        self.got = bytearray()
        self.status = 0
        self.need = -1  # bytes of the whole response, once its head has arrived
        self.reusable = True
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def ask(self, request: bytes) -> asyncio.Future[int]:
        assert self.transport is not None and (self.answer is None or self.answer.done())
        self.answer = asyncio.get_running_loop().create_future()
        self.got, self.need = bytearray(), -1
        self.transport.write(request)
        return self.answer

    def data_received(self, data: bytes) -> None:
        self.got += data
        if self.need < 0:
            end = self.got.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.got[:end]).decode("latin-1").split("\r\n")
            self.status = int(lines[0].split()[1])
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and value.strip().lower() == "close":
                    self.reusable = False
            self.need = end + 4 + length
        if len(self.got) >= self.need and self.answer is not None and not self.answer.done():
            self.answer.set_result(self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(exc or ConnectionResetError("closed before the answer"))


# How long an agent keeps an idle connection for its next upload, in the phases where agents
# keep theirs: httpx's pool (the agent's client, agent/daemon.py) keeps one 5 s, and uvicorn
# closes an idle one after 5 s (its timeout_keep_alive); a little less here, so that the bench
# does not measure the race of a reuse against the server's close (a real agent retries it).
KEEP_ALIVE_S = 4.0


class Generator:
    def __init__(
        self,
        url: str,
        tokens: list[str],
        template: str,
        batch: int,
        prefix: str,
        acked: Path,
        loads: int = 1,
        keep_alive: bool = False,
    ) -> None:
        self.url = url
        self.tokens = tokens
        self.bodies = Bodies(template, batch, prefix, loads)
        self.acked = open(acked, "a")  # noqa: SIM115 -- closed by generate()
        hostport = url.removeprefix("http://")
        self.host, self.port = hostport.split(":")[0], int(hostport.split(":")[1])
        self.agent = 0
        self.keep_alive = keep_alive
        # Each agent's idle connections, in the phases where agents keep theirs.
        self.idle: dict[str, list[_Exchange]] = {}

    def prepared(self) -> tuple[int, bytes, list[str]]:
        self.agent = (self.agent + 1) % len(self.tokens)
        body, ids = self.bodies.next(self.agent)
        return self.agent, body, ids

    async def one(
        self,
        result: PhaseResult,
        deadline: bool = True,
        batch: tuple[int, bytes, list[str]] | None = None,
    ) -> tuple[int, float]:
        agent, body, ids = batch if batch is not None else self.prepared()
        headers = {
            "Authorization": f"Bearer {self.tokens[agent]}",
            "Content-Type": "application/json",
            "Content-Encoding": "zstd",
        }
        if deadline:
            headers["X-Corecensus-Deadline-Ms"] = str(DEADLINE_MS)
        t0 = time.perf_counter()
        result.requests += 1
        try:
            async with asyncio.timeout(DEADLINE_MS / 1000 + 5.0):
                status = await self.post(body, headers)
        except TimeoutError:
            result.timeouts += 1
            result.statuses["timeout"] += 1
            return 0, time.perf_counter() - t0
        except OSError as exc:
            result.statuses[type(exc).__name__] += 1
            return 0, time.perf_counter() - t0
        latency = time.perf_counter() - t0
        result.statuses[str(status)] += 1
        if status == 200:
            result.latencies_ok.append(latency)
            result.acked_records += len(ids)
            self.acked.write("\n".join(ids) + "\n")
        return status, latency

    async def post(self, body: bytes, headers: dict[str, str]) -> int:
        """One POST, by a minimal HTTP/1.1 client on asyncio's protocol layer
        (:class:`_Exchange`): the generator shares the two CPUs with the collector, and
        asyncio's streams had cost it 0.5 ms of CPU per request -- 0.6 of a CPU at 5x overload,
        taken from the server it measures.

        On a fresh connection (``Connection: close``, as an agent sends its one batch after a
        quiet while), or, with ``keep_alive``, on the agent's idle connection when it has one
        younger than :data:`KEEP_ALIVE_S` (as an agent's httpx client sends the batches of a
        backlog one after another)."""
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        close = "" if self.keep_alive else "Connection: close\r\n"
        request = (
            f"POST /v1/crashes HTTP/1.1\r\nHost: {self.host}\r\n{head}"
            f"Content-Length: {len(body)}\r\n{close}\r\n".encode()
            + body
        )
        idle = self.idle.setdefault(headers["Authorization"], []) if self.keep_alive else []
        conn = None
        now = time.monotonic()
        while idle and conn is None:
            kept = idle.pop()
            if kept.reusable and now - kept.idle_since < KEEP_ALIVE_S:
                conn = kept
            elif kept.transport is not None:
                kept.transport.close()
        if conn is None:
            _, conn = await asyncio.get_running_loop().create_connection(
                _Exchange, self.host, self.port
            )
        try:
            status = await conn.ask(request)
        except BaseException:
            conn.reusable = False
            raise
        finally:
            if not (self.keep_alive and conn.reusable) and conn.transport is not None:
                conn.transport.close()
        if self.keep_alive and conn.reusable:
            conn.idle_since = time.monotonic()
            idle.append(conn)
        return status

    async def closed(
        self, name: str, concurrency: int, seconds: float, prebuilt_records_per_s: float
    ) -> PhaseResult:
        result = PhaseResult(name, seconds, deadline=False)
        # Bodies built before the clock starts, enough for ``prebuilt_records_per_s`` (past
        # that, built as they are sent): filling in 20 records and compressing them is 0.85 ms
        # of the generator's CPU per request, which it took from the collector on two shared
        # CPUs (0.09 ms of its 0.4 ms budget per record at 5,000 records/s).
        ready = [
            self.prepared()
            for _ in range(int(prebuilt_records_per_s * seconds / self.bodies.batch))
        ]
        ready.reverse()
        end = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < end:
                await self.one(result, deadline=False, batch=ready.pop() if ready else None)

        t0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - t0
        result.generator_cpu_s = time.process_time() - cpu0
        return result

    async def open_loop(self, name: str, rate: float, seconds: float, probe: bool) -> PhaseResult:
        result = PhaseResult(name, seconds)
        # Bodies built before the clock starts: the generator shares the CPUs with the
        # collector, and its own work must not be what delays the requests.
        batches = [self.prepared() for _ in range(int(rate * seconds))]
        tasks = []
        t0, cpu0 = time.perf_counter(), time.process_time()
        for i, batch in enumerate(batches):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.one(result, batch=batch)))
        issued_end = time.perf_counter()
        if probe:
            result.recovery_s = await self.recovery(issued_end)
        await asyncio.gather(*tasks)
        result.seconds = issued_end - t0
        result.generator_cpu_s = time.process_time() - cpu0
        return result

    async def recovery(self, since: float) -> float:
        """Seconds from the end of the overload until the queue is empty and a probe batch is
        acknowledged (200)."""
        probe = PhaseResult("probe", 0)
        async with httpx.AsyncClient(base_url=self.url, timeout=30.0) as metrics_client:
            while time.perf_counter() - since < 120:
                text = (await metrics_client.get("/metrics")).text
                queue = next(
                    float(line.split()[-1]) for line in text.splitlines()
                    if line.startswith("corecensus_collector_queue_records ")
                )  # fmt: skip
                if queue == 0:
                    status, _latency = await self.one(probe)
                    if status == 200:
                        return time.perf_counter() - since
                await asyncio.sleep(0.05)
        return float("nan")


async def generate(spec: dict[str, Any]) -> list[dict[str, Any]]:
    gen = Generator(
        spec["url"],
        spec["tokens"],
        spec["template"],
        spec["batch"],
        spec["prefix"],
        Path(spec["acked"]),
        spec.get("loads", 1),
        spec.get("keep_alive", False),
    )
    out = []
    for phase in spec["phases"]:
        # The generator's CPU is counted from each phase's clock start (bodies are built
        # before it).
        if phase["mode"] == "closed":
            r = await gen.closed(
                phase["name"],
                phase["concurrency"],
                phase["seconds"],
                spec.get("prebuilt_records_per_s", PREBUILT_RECORDS_PER_S),
            )
        else:
            r = await gen.open_loop(
                phase["name"], phase["rate"], phase["seconds"], phase.get("probe", False)
            )
        out.append(r.to_json())
    gen.acked.close()
    return out


def run_generator(spec: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    """The generator in a second process; its phases' results."""
    spec_file = work / f"spec-{time.monotonic_ns()}.json"
    spec_file.write_text(json.dumps(spec))
    out = subprocess.run(
        [sys.executable, __file__, "--generate", str(spec_file)],
        capture_output=True, text=True, check=True, timeout=3600,
    )  # fmt: skip
    results: list[dict[str, Any]] = json.loads(out.stdout)
    return results


# --- the report -------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def measured(server: Server, spec: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    """run_generator, with the server's CPU seconds over the run in each phase's result (the
    run's total in its first phase)."""
    before = server.cpu_s()
    results = run_generator(spec, work)
    results[0]["server_cpu_s"] = server.cpu_s() - before
    return results


def row(label: str, r: dict[str, Any], batch: int) -> str:
    st = Counter(r["statuses"])
    total = max(1, r["requests"])
    shed = st["503"] + st["429"]
    other_5xx = sum(v for k, v in st.items() if k.startswith("5") and k != "503")
    rec_s = r["acked_records"] / r["seconds"]
    recovery = "" if r["recovery_s"] is None else f"{r['recovery_s']:.2f}"
    cpu = r.get("server_cpu_s")
    cpu_ms = (
        "" if cpu is None or not r["acked_records"] else f"{cpu / r['acked_records'] * 1000:.3f}"
    )
    # An agent gives up at its deadline (agent/uploader.py sends its request timeout as the
    # deadline header), so an acknowledgement later than that is, to a real agent, a timeout
    # and a retry: the share of acknowledged requests past it, for the phases that send one.
    ok = r["latencies_ok"]
    late = sum(1 for x in ok if x > DEADLINE_MS / 1000)
    late_pct = f"{100 * late / len(ok):.1f}" if ok and r.get("deadline", True) else ""
    gen = r.get("generator_cpu_s") or 0.0
    gen_share = f"{gen / r['seconds']:.2f}"
    return (
        f"| {label} | {r['requests'] * batch / r['seconds']:,.0f} | {rec_s:,.0f} | "
        f"{pct(r['latencies_ok'], 0.5):.0f} | {pct(r['latencies_ok'], 0.99):.0f} | "
        f"{late_pct} | {100 * shed / total:.1f} | {r['timeouts']} | {other_5xx} | {recovery} | {cpu_ms} | "
        f"{gen_share} |"
    )


def tail_report(log: Path, since: float, until: float, client_p99_ms: float) -> list[str]:
    """Where the slowest 1 % of a phase's acknowledged requests spent their time, from the
    collector's own log lines (each admitted upload's ``body_ms``, ``decode_ms``, ``commit_ms``;
    the writer's ``checkpoint`` and ``snapshot`` lines), for requests answered between
    ``since`` and ``until`` (time.time())."""
    events = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    ok = [
        e
        for e in events
        if e.get("event") == "upload" and e.get("status") == 200 and since <= e["ts"] <= until
    ]
    if not ok:
        return ["(no acknowledged uploads in the collector's log for this phase)"]
    # Checkpoints hold the commits behind them; snapshots are written beside the commits.
    stalls = [
        (e["ts"] - e["ms"] / 1000, e["ts"], e["event"])
        for e in events
        if e.get("event") == "checkpoint" and since - 5 <= e["ts"] <= until + 5
    ]
    in_phase = [s for s in stalls if s[1] >= since and s[0] <= until]

    def overlaps(e: dict[str, Any], spans: list[tuple[float, float, str]] = in_phase) -> bool:
        start = e["ts"] - e["ms"] / 1000
        return any(a < e["ts"] and b > start for a, b, _kind in spans)

    # Snapshots are copied on a thread and connection of their own, beside the commits: they
    # take CPU, not the writer's turn.
    snaps = [
        (e["ts"] - e["ms"] / 1000, e["ts"], e["event"])
        for e in events
        if e.get("event") == "snapshot" and e["ts"] >= since and e["ts"] - e["ms"] / 1000 <= until
    ]

    ok.sort(key=lambda e: e["ms"])
    slow = ok[-max(3, len(ok) // 100) :]

    def med(key: str, rows: list[dict[str, Any]]) -> float:
        values = sorted(float(r.get(key, 0.0)) for r in rows)
        return values[len(values) // 2]

    server_p99 = ok[min(len(ok) - 1, int(0.99 * len(ok)))]["ms"]
    stalled_ms = sum((b - a) * 1000 for a, b, _k in in_phase)
    seconds = max(1e-9, until - since)
    return [
        f"server-side p50 {med('ms', ok):.0f} ms, p99 {server_p99:.0f} ms (the client's p99 "
        f"{client_p99_ms:.0f} ms adds connecting and waiting to be read); median of all: "
        f"decode {med('decode_ms', ok):.0f}, commit {med('commit_ms', ok):.0f} ms",
        f"slowest {len(slow)} (1 %): median body {med('body_ms', slow):.1f}, decode "
        f"{med('decode_ms', slow):.0f}, commit (queue + group commit) {med('commit_ms', slow):.0f}"
        f" ms; {sum(map(overlaps, slow))} of them overlapped a checkpoint "
        f"({sum(map(overlaps, ok))} of all {len(ok)})",
        f"checkpoints in the phase: {len(in_phase)}, "
        f"{stalled_ms:.0f} ms in all ({100 * stalled_ms / 1000 / seconds:.1f} % of the phase), "
        f"longest {max([(b - a) * 1000 for a, b, _k in in_phase], default=0):.0f} ms; "
        f"snapshots in the phase: {len(snaps)} "
        f"({sum(overlaps(e, snaps) for e in slow)} of the slowest overlapped one)",
    ]


def checkpoint_report(log: Path, since: float, until: float) -> str:
    """The writer's checkpoints between ``since`` and ``until`` (time.time()), from its log:
    under load they are the ones taken at ``checkpoint_max_bytes`` with requests waiting."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"checkpoint"' in line:
            e = json.loads(line)
            if e.get("event") == "checkpoint" and since <= e["ts"] <= until:
                found.append(e)
    if not found:
        return "no checkpoint"
    return ", ".join(
        f"{e['ms']:.0f} ms for {e['log_bytes'] / (1 << 20):.0f} MiB"
        f"{' with requests waiting' if e.get('waiting') else ''}"
        for e in found
    )


def per_record_costs(template: str, rounds: int = 3) -> None:
    """In one process, no HTTP: the collector's per-record work, stage by stage (best of
    ``rounds``; wall and CPU time, the CPU being what a loaded machine does not inflate), and
    a group commit's cost by group size; the figures docs/collector.md scales from."""
    import dataclasses as dc

    from corecensus.app.uploads import UploadGroup, store_uploads, upload_rows
    from corecensus.collector.journal import Journal, encode_rows, journal_rows
    from corecensus.ingest.wire import (
        RecordKind,
        WireLimits,
        decode_batch,
        decode_body,
        decompress,
    )
    from corecensus.ingest.wire_typed import decode_upload
    from corecensus.model import CrashRecord
    from corecensus.signing import TypedSigner, sign_records
    from corecensus.store import open_store

    limits = WireLimits()
    bodies = Bodies(template, 200, "k")

    def typed(n: int) -> list[Any]:
        out: list[Any] = []
        while len(out) < n:
            body, _ = bodies.next(0)
            plain = decompress(body, "zstd", 1 << 26)
            out += [r.value for r in decode_upload(RecordKind.CRASHES, plain, limits).records]
        return out[:n]

    def best(fn: Any) -> tuple[float, float]:
        walls, cpus = [], []
        for _ in range(rounds):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        return min(walls), min(cpus)

    def line(label: str, seconds: tuple[float, float], n: int) -> None:
        print(f"| {label} | {seconds[0] / n * 1000:.3f} | {seconds[1] / n * 1000:.3f} |")

    body, _ = bodies.next(0)
    plain = decompress(body, "zstd", 1 << 26)
    checked = [r.value for r in decode_batch(RecordKind.CRASHES, decode_body(plain)).records]
    sample = typed(200)
    # Cache misses: records whose stacks all differ (each frame's pc moved), as ASLR makes them.
    distinct = [
        dc.replace(r, frames=tuple(dc.replace(f, pc=f.pc + 16 * i) for f in r.frames))
        for i, r in enumerate(checked)
    ]
    from corecensus.ingest.wire import encode_batch

    distinct_typed = [
        r.value
        for r in decode_upload(
            RecordKind.CRASHES, encode_batch(RecordKind.CRASHES, distinct), limits
        ).records
    ]
    assert all(not isinstance(r, CrashRecord) for r in distinct_typed)
    print("\n| stage (in-process, per crash record) | wall ms | CPU ms |")
    print("|---|---:|---:|")
    line("zstd decompress", best(lambda: decompress(body, "zstd", 1 << 26)), 200)
    line(
        "parse + strict check, typed pass (wire_typed.decode_upload)",
        best(lambda: decode_upload(RecordKind.CRASHES, plain, limits)),
        200,
    )
    line(
        "parse + strict check, the checker (wire.decode_batch; bad batches only)",
        best(lambda: decode_batch(RecordKind.CRASHES, decode_body(plain, limits), limits)),
        200,
    )
    line(
        "sign, the checker's records (sign_records)", best(lambda: list(sign_records(checked))), 200
    )
    warm = TypedSigner()
    list(warm.rows(sample))
    line("sign, typed, signature cache hit", best(lambda: list(warm.rows(sample))), 200)
    line(
        "sign, typed, every stack distinct (cache misses)",
        best(lambda: list(TypedSigner().rows(distinct_typed))),
        200,
    )
    # What a front end does with a typed batch since the rows go to the journal as it encodes
    # them: rows made for it (JournalCrashRow), their keys and msgpack (collector/journal.py).
    line(
        "sign for the journal + encode, cache hit (the collector's rows)",
        best(lambda: journal_rows(RecordKind.CRASHES, warm.journal_rows(sample))),
        200,
    )

    def per_group(header: str, store_group: Any) -> None:
        """Wall ms per group and per record, CPU ms per record, by group size (best of
        ``rounds`` groups each)."""
        print(f"\n| {header} | CPU ms per record |")
        print("|---:|---:|---:|---:|")
        for size in (1, 20, 200, 1000):
            walls, cpus = [], []
            for group in [typed(size) for _ in range(rounds)]:
                t0, c0 = time.perf_counter(), time.process_time()
                store_group(group)
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            print(
                f"| {size} | {min(walls) * 1000:.1f} | {min(walls) / size * 1000:.3f} | "
                f"{min(cpus) / size * 1000:.3f} |"
            )

    with tempfile.TemporaryDirectory(prefix="collector-costs-") as tmp:
        store = open_store(Path(tmp) / "costs.duckdb")
        signer = TypedSigner()
        per_group(
            "records per store transaction (the loader's; before the journal, each group "
            "commit's) | ms per commit (wall) | ms per record: sign + insert + commit (wall)",
            lambda group: store_uploads(store, UploadGroup(crashes=group), signer),
        )
        store.close()
        # The acknowledgement path since the journal (collector/loader.py): sign, encode, one
        # write and fdatasync per group; the inserts above happen on the loader's thread.
        journal = Journal(Path(tmp) / "costs.duckdb.journal")
        per_group(
            "records per group commit | ms per journal append (wall) | ms per record: sign + "
            "encode + append + fdatasync (wall)",
            lambda group: journal.append(
                encode_rows(upload_rows(UploadGroup(crashes=group), signer))
            ),
        )
        journal.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--target-rate",
        type=float,
        default=5000.0,
        help="records/s of the open-loop phase at the issue's target (default 5,000)",
    )
    parser.add_argument("--target-seconds", type=float, default=30.0)
    parser.add_argument(
        "--workers", type=int, default=2, help="the collector's front ends for the open-loop phases"
    )
    parser.add_argument("--generate", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--costs-only", action="store_true", help="only the in-process costs")
    parser.add_argument(
        "--keep-log", type=Path, default=None, help="copy the collector's log here at the end"
    )
    parser.add_argument(
        "--distinct-stacks",
        action="store_true",
        help=f"every record one of {DISTINCT_LOADS} ASLR loads of the program (signature cache "
        "misses, as a fleet's crashes); default: one load, every record a cache hit",
    )
    parser.add_argument(
        "--checkpoint-idle-mib",
        type=float,
        default=None,
        help="the collector's checkpoint_idle_bytes in MiB (default: the collector's own)",
    )
    args = parser.parse_args()
    if args.generate is not None:
        spec = json.loads(args.generate.read_text())
        print(json.dumps(asyncio.run(generate(spec))))
        return

    from corecensus.collector.tokens import new_token
    from corecensus.store import open_store

    template = record_template()
    if args.costs_only:
        per_record_costs(template)
        return
    with tempfile.TemporaryDirectory(prefix="collector-bench-") as tmp:
        work = Path(tmp)
        tokens, lines = [], []
        for i in range(AGENTS):
            token, line = new_token(f"agent-{i:04d}", f"host-{i:04d}")
            tokens.append(token)
            lines.append(line)
        (work / "tokens").write_text("\n".join(lines) + "\n")
        base = {
            "template": template,
            "batch": args.batch,
            "tokens": tokens,
            "loads": DISTINCT_LOADS if args.distinct_stacks else 1,
        }

        peer = start_peer(work)
        peer_res = measured(
            peer,
            {**base, "url": peer.url, "prefix": "p", "acked": str(work / "peer.acked"),
             "phases": [{"name": "capacity", "mode": "closed", "concurrency": args.concurrency, "seconds": args.seconds}]},
            work,
        )  # fmt: skip
        peer_rss = peer.peak_rss_mib()
        peer.stop()

        # One process first (workers = 1), as a row of its own, then the collector under test.
        extra = (
            ""
            if args.checkpoint_idle_mib is None
            else f"checkpoint_idle_bytes = {int(args.checkpoint_idle_mib * (1 << 20))}\n"
        )
        single = start_collector(work, work / "tokens", 1, extra)
        single_cap = measured(
            single,
            {**base, "url": single.url, "prefix": "s", "acked": str(work / "single.acked"),
             "phases": [{"name": "capacity", "mode": "closed", "concurrency": args.concurrency, "seconds": args.seconds}]},
            work,
        )[0]  # fmt: skip
        single_rss = single.peak_rss_mib()
        single.stop()

        coll = start_collector(work, work / "tokens", args.workers, extra)
        acked = work / "collector.acked"
        cap = measured(
            coll,
            {**base, "url": coll.url, "prefix": "c", "acked": str(acked),
             "phases": [{"name": "capacity", "mode": "closed", "concurrency": args.concurrency, "seconds": args.seconds}]},
            work,
        )[0]  # fmt: skip
        capacity_req = cap["requests"] / cap["seconds"]
        half_since = time.time()
        half = measured(
            coll,
            {**base, "url": coll.url, "prefix": "h", "acked": str(acked),
             "phases": [{"name": "50%", "mode": "open", "rate": capacity_req / 2, "seconds": args.seconds}]},
            work,
        )[0]  # fmt: skip
        half_tail = tail_report(coll.log, half_since, time.time(), pct(half["latencies_ok"], 0.99))
        # The target as an open loop of its own, longer than the other phases: a rate
        # the collector sustains is one it carries, whatever the closed loop's burst measured.
        target_since = time.time()
        target = measured(
            coll,
            {**base, "url": coll.url, "prefix": "t", "acked": str(acked),
             "phases": [{"name": "target", "mode": "open", "rate": args.target_rate / args.batch, "seconds": args.target_seconds}]},
            work,
        )[0]  # fmt: skip
        target_tail = tail_report(
            coll.log, target_since, time.time(), pct(target["latencies_ok"], 0.99)
        )
        # The same, its agents keeping their connections between uploads (KEEP_ALIVE_S).
        kept_since = time.time()
        kept = measured(
            coll,
            {**base, "url": coll.url, "prefix": "k", "acked": str(acked), "keep_alive": True,
             "phases": [{"name": "target, kept", "mode": "open", "rate": args.target_rate / args.batch, "seconds": args.target_seconds}]},
            work,
        )[0]  # fmt: skip
        kept_tail = tail_report(coll.log, kept_since, time.time(), pct(kept["latencies_ok"], 0.99))
        rest_since = time.time()
        rest = run_generator(
            {**base, "url": coll.url, "prefix": "o", "acked": str(acked),
             "phases": [{"name": "100%", "mode": "open", "rate": capacity_req, "seconds": args.seconds}]},
            work,
        )  # fmt: skip
        # The overload phase on its own, so its tail can be read off the log like the 50 %'s.
        over_since = time.time()
        rest += run_generator(
            {**base, "url": coll.url, "prefix": "v", "acked": str(acked),
             "phases": [{"name": "500%", "mode": "open", "rate": capacity_req * 5, "seconds": args.seconds, "probe": True}]},
            work,
        )  # fmt: skip
        over_tail = tail_report(
            coll.log, over_since, time.time(), pct(rest[-1]["latencies_ok"], 0.99)
        )
        rest_checkpoints = checkpoint_report(coll.log, rest_since, time.time())
        if args.keep_log is not None:
            shutil.copy(coll.log, args.keep_log)
        coll_rss = coll.peak_rss_mib()
        status = coll.stop()
        with open_store(coll.db, read_only=True) as store:
            stored = {r.core_id for r in store.iter_crashes()}
        acked_ids = [line for line in acked.read_text().splitlines() if line]
        lost = sum(1 for cid in acked_ids if cid not in stored)

    b = args.batch
    print(f"\nCollector load benchmark: {b} crash records per request, zstd, {AGENTS} agents, "
          f"{args.seconds:.0f} s per phase, {os.cpu_count()} CPUs (server, generator and the "
          f"machine's other work share them); "
          f"{'every record its own ASLR load (signature cache misses)' if args.distinct_stacks else 'one load of the program (signature cache hits)'}\n")  # fmt: skip
    print(
        "| target, phase | offered records/s | acknowledged records/s | p50 ms | p99 ms | acknowledged past the 2 s deadline % | shed % | client timeouts | 5xx other than 503 | recovery s | server CPU ms per acknowledged record | load generator CPUs |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        row(
            f"peer (plain handler, one transaction per request), closed loop x{args.concurrency}",
            peer_res[0],
            b,
        )
    )
    print(row(f"collector, 1 process, closed loop x{args.concurrency}", single_cap, b))
    w = args.workers
    print(row(f"collector, {w} front ends, closed loop x{args.concurrency} (capacity)", cap, b))
    print(row(f"collector, {w} front ends, open loop at 50 % of capacity", half, b))
    print(
        row(
            f"collector, {w} front ends, open loop at the target, {args.target_rate:,.0f} "
            f"records/s for {args.target_seconds:.0f} s",
            target,
            b,
        )
    )
    print(
        row(
            f"collector, {w} front ends, the same, agents keeping their connections "
            f"({KEEP_ALIVE_S:.0f} s)",
            kept,
            b,
        )
    )
    for r in rest:
        print(row(f"collector, {w} front ends, open loop at {r['name']} of capacity", r, b))
    ratio = (cap["acked_records"] / cap["seconds"]) / max(
        1e-9, peer_res[0]["acked_records"] / peer_res[0]["seconds"]
    )
    print(f"\ncollector / peer sustained acknowledged records/s: {ratio:.2f}x")
    print(
        "peak memory (each server process's VmHWM, summed): "
        f"peer {peer_rss:.0f} MiB, collector as 1 process {single_rss:.0f} MiB, "
        f"collector with {w} front ends {coll_rss:.0f} MiB after every phase (5x overload "
        f"included); collector / peer {coll_rss / max(peer_rss, 1e-9):.2f}x"
    )
    print("\nThe 50 % phase's tail, from the collector's log:")
    for line in half_tail:
        print(f"- {line}")
    print(f"- checkpoints in the 100 % and 500 % phases: {rest_checkpoints}")
    print(
        f"\nThe target phase's tail ({args.target_rate:,.0f} records/s), from the collector's log:"
    )
    for line in target_tail:
        print(f"- {line}")
    print("\nThe same with agents keeping their connections, from the collector's log:")
    for line in kept_tail:
        print(f"- {line}")
    print("\nThe 500 % phase's tail, from the collector's log:")
    for line in over_tail:
        print(f"- {line}")
    print(
        f"acknowledged records: {len(acked_ids)}, missing from the store: {lost}; collector exit status {status}"
    )
    per_record_costs(template)


if __name__ == "__main__":
    main()
