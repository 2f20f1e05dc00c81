"""Core dump forensics speed benchmark: corecensus vs drgn alone, eu-stack and gdb.

    python bench/core_bench.py [--reps 20] [--proc-reps 10] [--no-write]

Builds its cores at run time (bench/_core/crashers.py: small C crashers and one 4 GiB sparse core),
then measures on those same cores, in one run:

- corecensus's register-and-anomaly pass, ``inspect_core(path, symbolize=False)``, in-process
  (with NumPy loaded, as in ingest, so the stack window is searched the NumPy way; the
  processes below search it without NumPy, as ``inspect`` does);
- corecensus's full symbolized pass, ``inspect_core(path)``, in-process;
- "drgn alone" (bench/_core/probe.py:drgn_alone), in-process, same warm state;
- ``eu-stack --core CORE -e EXE`` and ``gdb -batch -ex bt EXE CORE`` as subprocesses;
- ``corecensus inspect --json [--no-symbols] CORE`` as subprocesses (Python start-up included),
  so the command-line tools are compared like for like;

plus peak RSS in a fresh process per measurement, cold start-up, zstd-compressed cores, and a
cProfile breakdown of both passes. Prints Markdown and writes it to docs/bench_core.md.
Each round measures every (core, method) once, so noise from other work on the machine falls on
all of them alike; within a round the calls are grouped by method (each method over all cores,
starting at a different core each round), and each in-process method's turn opens with a few
untimed calls, so an in-process pass is timed in the state a fleet's ingest runs it in, one core
after another, not right after a 200 ms drgn call (the register pass then takes twice as long
for a call or two while the interpreter's specializations and the CPU caches settle: a state only
the benchmark's interleaving creates). The first call per core and method is a warm-up and is not
counted (cold start is reported separately).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import logging
import math
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from _core.crashers import (
    CRASHERS,
    Core,
    CrasherError,
    ProcRun,
    build_launcher,
    check_core_pattern,
    compress_zstd,
    make_core,
    run_measured,
)
from _core.probe import drgn_alone

HERE = Path(__file__).resolve().parent
PROBE = HERE / "_core" / "probe.py"
DOC = HERE.parent / "docs" / "bench_core.md"

# The targets.
REG_TARGET_S = 0.010
REG_VS_EU_TARGET = 2.0
# issue 8 (speed as a command): per process, wall.
CLI_REG_TARGET_S = 0.150
CLI_FULL_TARGET_S = 0.300
CLI_HELP_TARGET_S = 0.100
RSS_TARGET_BYTES = 200e6
# "Does not grow with size": a core 4096x larger may cost at most this much more.
GROWTH_TIME_MAX = 1.5
GROWTH_RSS_MAX_BYTES = 10e6

LABELS = {
    "reg": "corecensus register/anomaly pass (in-process)",
    "full": "corecensus full symbolized pass (in-process)",
    "drgn": "drgn alone (in-process)",
    "cli_reg": "`corecensus inspect --json --no-symbols` (process)",
    "cli_full": "`corecensus inspect --json` (process)",
    "cli_help": "`corecensus --help` (process)",
    "eu": "`eu-stack --core CORE -e EXE` (process)",
    "gdb": "`gdb -batch -ex bt EXE CORE` (process)",
    "unzstd_eu": "`zstd -d` to a file, then `eu-stack` (process)",
}


@dataclass
class Series:
    """Repeated wall and CPU timings (s) of one method on one core; ``rss_kib`` for processes."""

    core: str
    method: str
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    ok: bool = True
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    @property
    def cpu_best(self) -> float:
        return min(self.cpu)

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def p90(self) -> float:
        s = sorted(self.times)
        return s[max(0, math.ceil(0.9 * len(s)) - 1)]

    @property
    def per_s(self) -> float:
        return len(self.times) / sum(self.times)


def log(msg: str) -> None:
    print(f"[core_bench] {msg}", file=sys.stderr, flush=True)


# -- in-process methods ---------------------------------------------------------------------------


def _check_record(core: Core, rec: Any, named: bool) -> str:
    """Why the record is not a correct reading of ``core`` ('' if it is)."""
    if str(rec.status) == "unparsed" or rec.signal != core.crasher.signal or not rec.frames:
        return f"status {rec.status}, signal {rec.signal}, {len(rec.frames)} frames: {rec.errors}"
    if named and core.crasher.function not in [f.function for f in rec.frames]:
        return f"{core.crasher.function} not among frames {[f.function for f in rec.frames][:6]}"
    return ""


# Untimed calls that open each method's turn in a round (in-process methods only). Python's
# specializing interpreter and the CPU caches take a few calls to settle after another method
# ran: the register pass measured 1.83, 1.28, 1.09, 1.00, 0.95, 0.93 ms on the calls right after
# a full pass, 0.88 ms from then on.
SWITCH_WARMUP_CALLS = 4


def _round_robin(
    jobs: list[tuple[Series, Callable[[], tuple[float, float]]]], reps: int, warmup: int = 0
) -> None:
    """``reps`` rounds over every (core, method): load on the machine falls on all alike.

    Within a round, method by method (see the module docstring), each method's turn opened by
    ``warmup`` untimed calls; each round starts the method's cores at a different one.
    """
    by_method: dict[str, list[tuple[Series, Callable[[], tuple[float, float]]]]] = {}
    for job in jobs:
        by_method.setdefault(job[0].method, []).append(job)
    for r in range(reps):
        for group in by_method.values():
            k = r % len(group)
            order = group[k:] + group[:k]
            for i in range(warmup):
                order[i % len(order)][1]()
            for series, fn in order:
                wall, cpu = fn()
                series.times.append(wall)
                series.cpu.append(cpu)


def _log_series(kind: str, series: Sequence[Series]) -> None:
    for core in dict.fromkeys(s.core for s in series):
        got = ", ".join(f"{s.method} {s.median * 1e3:.1f} ms" for s in series if s.core == core)
        log(f"{kind} {core}: {got}")


def measure_inprocess(
    cores: Sequence[Core],
    reps: int,
    drgn_phases: dict[str, list[float]],
    warmup: int = SWITCH_WARMUP_CALLS,
) -> list[Series]:
    """Wall (perf_counter) and CPU (process_time: all threads, drgn's too) per call."""
    from corecensus.coredump import inspect_core

    jobs: list[tuple[Series, Callable[[], tuple[float, float]]]] = []
    for core in cores:
        path = str(core.path)

        def reg(p: str = path, c: Core = core) -> str:
            return _check_record(c, inspect_core(p, symbolize=False), False)

        def full(p: str = path, c: Core = core) -> str:
            return _check_record(c, inspect_core(p), True)

        methods: dict[str, Callable[[], str]] = {"reg": reg, "full": full}
        if core.compressed_from is None:  # drgn reads plain files only

            def drgn_method(p: str = path, c: Core = core) -> str:
                names = drgn_alone(p, drgn_phases)
                return "" if c.crasher.function in names else f"frames {names[:6]}"

            methods["drgn"] = drgn_method
        for m, fn in methods.items():
            s = Series(core.name, m)
            s.note = fn()  # warm-up, and the correctness check
            s.ok = s.note == ""

            def timed(fn: Callable[[], str] = fn) -> tuple[float, float]:
                c0, t0 = time.process_time(), time.perf_counter()
                fn()
                return time.perf_counter() - t0, time.process_time() - c0

            jobs.append((s, timed))
    _round_robin(jobs, reps, warmup=warmup)
    out = [s for s, _fn in jobs]
    _log_series("in-process", out)
    return out


# -- subprocess methods ---------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    import corecensus

    env = dict(os.environ)
    # No network lookups for any tool: every one of them gets only what is on this machine.
    env.pop("DEBUGINFOD_URLS", None)
    env["LC_ALL"] = "C"
    # Bytecode cached, as an installed package has it (pip compiles on install): with
    # PYTHONDONTWRITEBYTECODE inherited, every process row would time compiling the sources.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    src = str(Path(corecensus.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    return env


def _check_cli(core: Core, run: ProcRun, *, named: bool) -> str:
    try:
        rec = json.loads(run.stdout)
    except ValueError:
        return f"exit {run.returncode}, no JSON: {run.stderr.strip()[-300:]}"
    names = [f.get("function") for f in rec.get("frames", [])]
    if rec.get("status") == "unparsed" or rec.get("signal") != core.crasher.signal or not names:
        return f"status {rec.get('status')}, signal {rec.get('signal')}: {rec.get('errors')}"
    if named and core.crasher.function not in names:
        return f"{core.crasher.function} not among frames {names[:6]}"
    return ""


def _check_help(run: ProcRun) -> str:
    return "" if run.returncode == 0 and "inspect" in run.stdout else f"exit {run.returncode}"


def _check_text(core: Core, run: ProcRun) -> str:
    if core.crasher.function in run.stdout:
        return ""
    return (
        f"exit {run.returncode}, {core.crasher.function} not in output: {run.stderr.strip()[-300:]}"
    )


def measure_processes(
    cores: Sequence[Core], reps: int, launcher: Path, scratch: Path
) -> list[Series]:
    env = child_env()
    eu, gdb, zstd = shutil.which("eu-stack"), shutil.which("gdb"), shutil.which("zstd")
    py = [sys.executable, "-m", "corecensus", "inspect", "--json"]
    jobs: list[tuple[Series, Callable[[], tuple[float, float]]]] = []
    for core in cores:
        c, exe = str(core.path), str(core.exe)
        methods: dict[str, tuple[list[str], Callable[[ProcRun], str]]] = {
            "cli_reg": ([*py, "--no-symbols", c], partial(_check_cli, core, named=False)),
            "cli_full": ([*py, c], partial(_check_cli, core, named=True)),
            # Not about the core: the first thing a new user runs, timed beside the rest.
            "cli_help": ([sys.executable, "-m", "corecensus", "--help"], _check_help),
        }
        if core.compressed_from is None:
            assert eu is not None and gdb is not None
            methods["eu"] = ([eu, "--core", c, "-e", exe], partial(_check_text, core))
            methods["gdb"] = ([gdb, "-batch", "-ex", "bt", exe, c], partial(_check_text, core))
        elif eu is not None and zstd is not None:
            # Neither eu-stack nor gdb reads a compressed core: decompress first, as
            # coredumpctl does before it starts gdb.
            tmp = str(scratch / "unzstd.core")
            script = (
                'zstd -q -d -f -o "$2" "$1" && eu-stack --core "$2" -e "$3"; '
                'rc=$?; rm -f "$2"; exit $rc'
            )
            methods["unzstd_eu"] = (
                ["sh", "-c", script, "sh", c, tmp, exe],
                partial(_check_text, core),
            )
        for m, (cmd, check) in methods.items():
            s = Series(core.name, m)
            s.note = check(run_measured(launcher, cmd, env, scratch))  # warm-up, and the check
            s.ok = s.note == ""

            def timed(cmd: list[str] = cmd, s: Series = s) -> tuple[float, float]:
                run = run_measured(launcher, cmd, env, scratch)
                s.rss_kib.append(run.maxrss_kib)
                return run.wall_s, run.cpu_s

            jobs.append((s, timed))
    _round_robin(jobs, reps)
    out = [s for s, _fn in jobs]
    _log_series("processes", out)
    return out


# -- memory and cold start (fresh interpreter each) -----------------------------------------------


def probe(launcher: Path, mode: str, core: Path, scratch: Path) -> tuple[ProcRun, dict[str, Any]]:
    run = run_measured(
        launcher, [sys.executable, str(PROBE), mode, str(core)], child_env(), scratch
    )
    if run.returncode != 0:
        raise RuntimeError(f"probe {mode} {core} failed: {run.stderr.strip()[-500:]}")
    return run, json.loads(run.stdout)


def measure_memory(
    cores: Sequence[Core], launcher: Path, scratch: Path, reps: int
) -> dict[tuple[str, str], int]:
    """Peak RSS (KiB, max over ``reps`` fresh processes) per (core name, mode)."""
    out: dict[tuple[str, str], int] = {}
    small = cores[0].path
    jobs = [("-", "import", small), ("-", "import_drgn", small)]
    for core in cores:
        modes = ["reg", "full"] + (["drgn"] if core.compressed_from is None else [])
        jobs.extend((core.name, m, core.path) for m in modes)
    for name, mode, path in jobs:
        peak = 0
        for _ in range(reps):
            run, _res = probe(launcher, mode, path, scratch)
            peak = max(peak, run.maxrss_kib)
        out[(name, mode)] = peak
    log("memory: " + ", ".join(f"{n}/{m} {v / 1024:.0f} MiB" for (n, m), v in out.items()))
    return out


def measure_cold(core: Core, launcher: Path, scratch: Path, reps: int) -> dict[str, float]:
    """Median over fresh interpreters of: whole process, import, 1st/2nd call of each pass (s)."""
    rows: list[dict[str, float]] = []
    for _ in range(reps):
        run, res = probe(launcher, "cold", core.path, scratch)
        res = {k: v for k, v in res.items() if k.endswith("_s")}
        res["process_s"] = run.wall_s
        rows.append(res)
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


# -- profile --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileRow:
    """One function under cProfile: calls per pass, own and cumulative share of all time."""

    where: str
    func: str
    calls_per_pass: float
    own: float
    cum: float


def profile_pass(core: Core, symbolize: bool, calls: int) -> list[ProfileRow]:
    """Every function's share of ``calls`` passes over ``core``, by cumulative share."""
    from corecensus.coredump import inspect_core

    inspect_core(str(core.path), symbolize=symbolize)  # warm, as the timed rows are
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        inspect_core(str(core.path), symbolize=symbolize)
    prof.disable()
    raw: dict[Any, Any] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())
    rows = [
        ProfileRow(
            f"{_short(fname)}:{line}" if line else "", func, nc / calls, tt / total, ct / total
        )
        for (fname, line, func), (_cc, nc, tt, ct, _callers) in raw.items()
    ]
    rows.sort(key=lambda r: -r.cum)
    return rows


def _short(fname: str) -> str:
    for marker in ("/corecensus/", "/site-packages/", "/lib/python3.11/"):
        if marker in fname:
            return fname.split(marker, 1)[1]
    return fname


def _find(rows: Sequence[ProfileRow], func: str) -> ProfileRow | None:
    return next((r for r in rows if r.func == func), None)


# -- report ---------------------------------------------------------------------------------------


def _ms(s: float) -> str:
    return f"{s * 1e3:.1f}" if s < 10 else f"{s * 1e3:.0f}"


def _size(n: int) -> str:
    for unit, k in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k:
            return f"{n / k:.2f} {unit}" if n < 10 * k else f"{n / k:.1f} {unit}"
    return f"{n} B"


def _mb(kib: int) -> str:
    return f"{kib * 1024 / 1e6:.0f}"


def _first_line(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError:
        return f"{cmd[0]} not installed"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "?"


def machine(load_start: tuple[float, ...]) -> list[str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import capstone
    import drgn

    load_end = os.getloadavg()
    return [
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: nproc {len(os.sched_getaffinity(0))}, {model}, kernel {platform.release()}; "
        f"1-min load average {load_start[0]:.1f} at start, {load_end[0]:.1f} at end (a load "
        "above nproc means wall times include waiting for a CPU; CPU times do not)",
        f"- Python {platform.python_version()}, drgn {drgn.__version__}, "
        f"capstone {capstone.__version__}; {_first_line(['eu-stack', '--version'])}; "
        f"{_first_line(['gdb', '--version'])}",
    ]


@dataclass
class Results:
    cores: list[Core]
    zcores: list[Core]
    series: list[Series]
    rss: dict[tuple[str, str], int]
    cold: dict[str, float]
    profiles: dict[str, list[ProfileRow]]
    reps: dict[str, int]
    drgn_phases: dict[str, list[float]]
    wall_s: float = 0.0

    def get(self, core: str, method: str) -> Series | None:
        return next((s for s in self.series if s.core == core and s.method == method), None)

    @property
    def plain(self) -> list[str]:
        return [c.name for c in self.cores]


def render(r: Results, header: list[str]) -> str:
    lines = ["# Core dump forensics benchmark", "", *header, ""]
    lines += [
        "Reproduce: `python bench/core_bench.py` (or `./dev bench`). The cores are built at "
        "run time from the C crashers in bench/_core/crashers.py, and every tool reads the same "
        "cores in the same run. In-process rows time one call with the core in the page cache "
        "and everything imported (the first call per core is a warm-up, not counted; see cold "
        "start below); process rows time fork to exit, start-up included. Each round of "
        "repetitions measures every core with every method, so background load falls on all of "
        "them alike; within a round the calls run method by method (each over all cores), and "
        f"each in-process method's turn opens with {SWITCH_WARMUP_CALLS} untimed calls, so an "
        "in-process pass is timed as a fleet's ingest runs it, core after core, not in the "
        "first calls after another method ran (see bench/core_bench.py).",
        "",
        "## Summary",
        "",
        *summary(r),
        "",
        "## Targets",
        "",
        *targets(r),
        "",
        "## Interpretation",
        "",
        *interpret(r),
        "",
        "## Cores",
        "",
        "| core | what it does | size | on disk |",
        "|---|---|---:|---:|",
    ]
    for c in r.cores + r.zcores:
        what = c.crasher.description if c.compressed_from is None else f"zstd -3 of {c.name[:-4]}"
        lines.append(
            f"| {c.name} | {what} | {_size(c.apparent_bytes)} | {_size(c.allocated_bytes)} |"
        )
    big = next((c for c in r.cores if c.name == "sparse_4g"), None)
    if big is not None:
        lines.append("")
        if big.sparse:
            lines.append(
                f"sparse_4g is {_size(big.apparent_bytes)} long but only "
                f"{_size(big.allocated_bytes)} is allocated: the kernel seeks over never-touched "
                "pages when it dumps, and this filesystem keeps the holes."
            )
        else:
            lines.append(
                f"**The filesystem did not keep sparse_4g's holes**: {_size(big.allocated_bytes)} "
                "is allocated. It is still a 4 GiB core to every reader."
            )
    lines += [
        "",
        "## Time per core",
        "",
        f"Repetitions: {r.reps['small']} per core in-process, {r.reps['proc']} as processes, "
        f"{r.reps['zbig']} for sparse_4g.zst. Wall-clock median, 90th percentile and best "
        "(minimum); median CPU time (user + system, all threads); cores/s = repetitions ÷ total "
        'wall time. "vs eu-stack" and "vs drgn alone" = the peer\'s median wall time ÷ this '
        "row's (above 1: faster than the peer; for .zst cores the peer is `zstd -d` + "
        "eu-stack); in-process rows against eu-stack compare a call with a whole process, which "
        "is how each is used on a fleet's cores.",
        "",
        "| core | method | median ms | p90 ms | best ms | CPU ms | cores/s | vs eu-stack "
        "| vs drgn alone | peak RSS MB | output |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in r.cores + r.zcores:
        eu = r.get(c.name, "eu") or r.get(c.name, "unzstd_eu")
        dg = r.get(c.name, "drgn")
        for s in (x for x in r.series if x.core == c.name):
            vs_eu = f"{eu.median / s.median:.2f}×" if eu and s is not eu else ""
            in_process = s.method in ("reg", "full")
            vs_dg = f"{dg.median / s.median:.2f}×" if dg and in_process else ""
            rss = _mb(max(s.rss_kib)) if s.rss_kib else ""
            ok = "correct" if s.ok else f"WRONG: {s.note}"
            lines.append(
                f"| {c.name} | {LABELS[s.method]} | {_ms(s.median)} | {_ms(s.p90)} | "
                f"{_ms(s.best)} | {_ms(s.cpu_median)} | {s.per_s:.1f} | {vs_eu} | {vs_dg} | "
                f"{rss} | {ok} |"
            )
    lines += [
        "",
        '"correct": each method\'s output was checked on its warm-up run: the crashing '
        "function is in the backtrace (full pass, drgn, eu-stack, gdb), or the record has the "
        "right signal and frames (register pass, which names no functions by design). Peak RSS "
        "of processes: the largest over the repetitions.",
        "",
        "## Peak memory, fresh process per measurement (MB)",
        "",
        "Each figure is the peak RSS of a fresh `python bench/_core/probe.py MODE CORE` (the "
        f"largest of {r.reps['rss']}), read with wait4() by a small C launcher. (A child's "
        "ru_maxrss starts at its parent's RSS, because exec folds the old address space's "
        "high-water mark into it; spawned straight from the benchmark's own Python process, "
        "every figure would be at least the benchmark's size.) Baseline, the interpreter with "
        "corecensus.coredump imported and nothing parsed: "
        f"{_mb(r.rss[('-', 'import')])} MB; with drgn imported too: "
        f"{_mb(r.rss[('-', 'import_drgn')])} MB.",
        "",
        "| core | size | register pass | full pass | drgn alone | eu-stack | gdb |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in r.cores + r.zcores:
        eu = r.get(c.name, "eu") or r.get(c.name, "unzstd_eu")
        gdb = r.get(c.name, "gdb")
        cells = [
            _mb(r.rss[(c.name, m)]) if (c.name, m) in r.rss else "" for m in ("reg", "full", "drgn")
        ]
        cells += [_mb(max(s.rss_kib)) if s and s.rss_kib else "" for s in (eu, gdb)]
        lines.append(f"| {c.name} | {_size(c.apparent_bytes)} | " + " | ".join(cells) + " |")
    cold = r.cold
    lines += [
        "",
        f"## Cold start (fresh interpreter, null_deref, median of {r.reps['cold']})",
        "",
        "| step | ms |",
        "|---|---:|",
        f"| whole process: interpreter, imports, the 4 calls below | {_ms(cold['process_s'])} |",
        f"| `from corecensus.coredump import inspect_core` | {_ms(cold['import_s'])} |",
        f"| first register pass | {_ms(cold['reg1_s'])} |",
        f"| second register pass | {_ms(cold['reg2_s'])} |",
        f"| first full pass (imports drgn) | {_ms(cold['full1_s'])} |",
        f"| second full pass | {_ms(cold['full2_s'])} |",
        "",
    ]
    for name, rows in r.profiles.items():
        lines += [
            f"## Where the time goes: {name}",
            "",
            "cProfile, functions by cumulative share of all profiled time (callees included); "
            "own = time in the function itself. cProfile inflates the cost of Python calls, so "
            "shares are indicative.",
            "",
            "| function | calls per pass | cumulative | own |",
            "|---|---:|---:|---:|",
        ]
        shown = [x for x in rows if x.cum < 0.97][:15]
        lines += [
            f"| `{x.func}` {x.where} | {x.calls_per_pass:.0f} | {x.cum:.0%} | {x.own:.0%} |"
            for x in shown
        ]
        lines.append("")
    lines.append(f"Whole benchmark run: {r.wall_s:.0f} s.")
    return "\n".join(lines) + "\n"


def summary(r: Results) -> list[str]:
    """Median wall ms per plain core and method, cores/s over all of them, peak RSS."""
    sizes = {c.name: _size(c.apparent_bytes) for c in r.cores}
    head = " | ".join(f"{n} ({sizes[n]})" for n in r.plain)
    out = [
        f"| method | {head} | cores/s | peak RSS MB |",
        "|---|" + "---:|" * (len(r.plain) + 2),
    ]
    for m in ("reg", "full", "drgn", "eu", "gdb", "cli_reg", "cli_full", "cli_help"):
        ss = [s for n in r.plain if (s := r.get(n, m))]
        if not ss:
            continue
        per_s = sum(len(s.times) for s in ss) / sum(sum(s.times) for s in ss)
        if m in ("reg", "full", "drgn"):
            peaks = [v for (n, mode), v in r.rss.items() if mode == m and n in r.plain]
        else:
            peaks = [max(s.rss_kib) for s in ss if s.rss_kib]
        cells = " | ".join(_ms(s.median) for s in ss)
        rss = _mb(max(peaks)) if peaks else ""
        out.append(f"| {LABELS[m]} | {cells} | {per_s:.1f} | {rss} |")
    out += [
        "",
        "Median wall ms per core on the same cores in one run; cores/s over all four. Memory "
        "for in-process rows is the peak RSS of a fresh process doing one pass.",
    ]
    return out


def _reg_vs_eu(r: Results, cpu: bool = False) -> dict[str, float]:
    out = {}
    for n in r.plain:
        eu, reg = r.get(n, "eu"), r.get(n, "reg")
        if eu and reg:
            out[n] = eu.cpu_median / reg.cpu_median if cpu else eu.median / reg.median
    return out


def _full_vs_drgn(r: Results) -> dict[str, float]:
    out = {}
    for n in r.plain:
        full, dg = r.get(n, "full"), r.get(n, "drgn")
        if full and dg:
            out[n] = dg.median / full.median
    return out


def _growth(r: Results) -> tuple[bool, list[str]]:
    """Judged on the best (minimum) CPU time of each series.

    Neighbours on a shared machine only ever add time (CPU contention, cache and memory
    bandwidth), so the minimum is the estimate of the work itself; the medians are shown too.
    """
    small, big = "null_deref", "sparse_4g"
    ok, parts = True, []
    for m in ("reg", "full"):
        a, b = r.get(small, m), r.get(big, m)
        if a and b:
            ratio = b.cpu_best / a.cpu_best
            ok &= ratio <= GROWTH_TIME_MAX
            parts.append(
                f"{m} pass best CPU {_ms(a.cpu_best)} → {_ms(b.cpu_best)} ms ({ratio:.2f}×), "
                f"median wall {_ms(a.median)} → {_ms(b.median)} ms"
            )
        if (small, m) in r.rss and (big, m) in r.rss:
            ok &= (r.rss[(big, m)] - r.rss[(small, m)]) * 1024 <= GROWTH_RSS_MAX_BYTES
            parts.append(f"{m} RSS {_mb(r.rss[(small, m)])} → {_mb(r.rss[(big, m)])} MB")
    return ok and bool(parts), parts


def _peak_rss(r: Results) -> tuple[str, str, int]:
    cc = {k: v for k, v in r.rss.items() if k[0] != "-" and k[1] in ("reg", "full")}
    (core, mode), peak = max(cc.items(), key=lambda kv: kv[1])
    return core, mode, peak


def targets(r: Results) -> list[str]:
    out = ["| target | measured | met |", "|---|---|---|"]
    regs = {n: s for n in r.plain if (s := r.get(n, "reg"))}
    worst = max(regs.values(), key=lambda s: s.median)
    out.append(
        "| register/anomaly pass ≤ 10 ms median per core | "
        + ", ".join(f"{n} {_ms(s.median)} ms" for n, s in regs.items())
        + f" (CPU {', '.join(_ms(s.cpu_median) for s in regs.values())} ms) | "
        + ("yes" if worst.median <= REG_TARGET_S else "**no**")
        + " |"
    )
    wall, cpu = _reg_vs_eu(r), _reg_vs_eu(r, cpu=True)
    cli = {
        n: e.median / c.median
        for n in r.plain
        if (e := r.get(n, "eu")) and (c := r.get(n, "cli_reg"))
    }
    met = bool(wall) and min(wall.values()) >= REG_VS_EU_TARGET
    out.append(
        "| register/anomaly pass ≥ 2× faster than eu-stack | in-process vs eu-stack's process, "
        "wall: "
        + ", ".join(f"{n} {v:.2f}×" for n, v in wall.items())
        + "; CPU: "
        + ", ".join(f"{v:.2f}×" for v in cpu.values())
        + "; process vs process (`inspect --no-symbols`): "
        + ", ".join(f"{v:.2f}×" for v in cli.values())
        + " | "
        + ("yes (in-process)" if met else "**no**")
        + " |"
    )
    vs = _full_vs_drgn(r)
    out.append(
        "| full pass no slower than drgn alone | drgn alone ÷ full pass, wall: "
        + ", ".join(f"{n} {v:.2f}×" for n, v in vs.items())
        + " | "
        + ("yes" if vs and min(vs.values()) >= 1.0 else "**no**")
        + " |"
    )
    for method, target in (
        ("cli_reg", CLI_REG_TARGET_S),
        ("cli_full", CLI_FULL_TARGET_S),
        ("cli_help", CLI_HELP_TARGET_S),
    ):
        runs = {n: s for n in r.plain if (s := r.get(n, method))}
        if runs:
            slowest = max(s.median for s in runs.values())
            out.append(
                f"| {LABELS[method]} ≤ {target * 1000:.0f} ms per process | "
                + ", ".join(f"{n} {_ms(s.median)} ms" for n, s in runs.items())
                + f" (CPU {', '.join(_ms(s.cpu_median) for s in runs.values())} ms) | "
                + ("yes" if slowest <= target else "**no**")
                + " |"
            )
    core, mode, peak = _peak_rss(r)
    out.append(
        f"| peak RSS < 200 MB for any core | largest: {_mb(peak)} MB ({mode} pass, {core}) | "
        + ("yes" if peak * 1024 < RSS_TARGET_BYTES else "**no**")
        + " |"
    )
    ok, parts = _growth(r)
    out.append(
        "| time and memory do not grow with core size: 1 MB core → 4 GB sparse core (taken "
        f"as: at most {GROWTH_TIME_MAX}× the best CPU time, "
        f"+{GROWTH_RSS_MAX_BYTES / 1e6:.0f} MB) | "
        + "; ".join(parts)
        + " | "
        + ("yes" if ok else "**no**")
        + " |"
    )
    return out


def interpret(r: Results) -> list[str]:
    from corecensus.coredump.source import HEAD_CACHE_BYTES

    out: list[str] = []
    regs = {n: s for n in r.plain if (s := r.get(n, "reg"))}
    worst_name, worst = max(regs.items(), key=lambda kv: kv[1].median)
    wall, cpu = _reg_vs_eu(r), _reg_vs_eu(r, cpu=True)
    eus = [s for n in r.plain if (s := r.get(n, "eu"))]
    eu_med = statistics.median(s.median for s in eus)
    eu_cpu = statistics.median(s.cpu_median for s in eus)
    out.append(
        f"- **Register/anomaly pass ≤ 10 ms: {'met' if worst.median <= REG_TARGET_S else 'not met'}"
        f"** — slowest core {worst_name}, {_ms(worst.median)} ms median wall, "
        f"{_ms(worst.cpu_median)} ms median CPU, {_ms(worst.best)} ms best wall; the others "
        + ", ".join(f"{n} {_ms(x.median)} ms" for n, x in regs.items() if n != worst_name)
        + " (median wall)."
    )
    lo_wall = min(wall.values())
    prof = r.profiles.get(REG_PROFILE, [])
    why = ""
    if prof:
        parts = []
        for func, what in (
            ("scan_stack", "the stack-window scan"),
            (
                "local_file",
                "`BinaryResolver.local_file` (finds the binary to read program text from)",
            ),
            ("build_id_of_file", "`build_id_of_file` (opens the binary, reads its build-id)"),
            ("call_before", "`call_before` (capstone-decodes the bytes before each code address)"),
            ("disasm", "capstone's `disasm`"),
            ("parse_core", "`parse_core` (headers and notes)"),
        ):
            row = _find(prof, func)
            if row is not None and row.cum >= 0.03:
                n = round(row.calls_per_pass)
                parts.append(f"{what} {row.cum:.0%} ({n} call{'s' if n != 1 else ''} per core)")
        if parts:
            why = " The register pass's time (cProfile, null_deref): " + "; ".join(parts) + "."
    out.append(
        f"- **≥ 2× faster than eu-stack: {'met' if lo_wall >= REG_VS_EU_TARGET else 'not met'}** — "
        f"in-process register pass vs a whole eu-stack process: {min(wall.values()):.2f}–"
        f"{max(wall.values()):.2f}× by wall time, {min(cpu.values()):.2f}–{max(cpu.values()):.2f}× "
        f"by CPU time. eu-stack is C (libdwfl): exec, dynamic linking, reading the core's notes, "
        f"unwinding and naming every thread's frames take it {_ms(eu_med)} ms wall, "
        f"{_ms(eu_cpu)} ms CPU (median over the cores).{why}"
    )
    vs = _full_vs_drgn(r)
    load = statistics.median(r.drgn_phases.get("load_debug_info", [0.0]))
    fulls = [s.median for n in r.plain if (s := r.get(n, "full"))]
    out.append(
        "- **Full pass no slower than drgn alone: "
        f"{'met' if vs and min(vs.values()) >= 1 else 'not met'}** — drgn alone takes "
        f"{min(vs.values()):.2f}–{max(vs.values()):.2f}× as long as the full pass. Its "
        f"`load_debug_info(default=True)` step alone takes {_ms(load)} ms (median), against "
        f"{_ms(min(fulls))}–{_ms(max(fulls))} ms for corecensus's whole full pass (which "
        "creates drgn's modules itself from the core's file list and build-ids and loads them "
        "with `load_module_debug_info`, instead of calling `load_debug_info(default=True)`)."
    )
    core, mode, peak = _peak_rss(r)
    zrss = r.rss.get(("sparse_4g.zst", "reg"))
    extra = ""
    if zrss is not None and ("sparse_4g", "reg") in r.rss:
        extra = (
            f" The largest figures are for the compressed 4 GiB core: a stream keeps the first "
            f"{HEAD_CACHE_BYTES >> 20} MiB of the decompressed core in memory so headers and "
            f"notes can be re-read without restarting it (register pass "
            f"{_mb(r.rss[('sparse_4g', 'reg')])} MB plain, {_mb(zrss)} MB compressed)."
        )
    out.append(
        f"- **Peak RSS < 200 MB: {'met' if peak * 1024 < RSS_TARGET_BYTES else 'not met'}** — "
        f"largest {_mb(peak)} MB ({mode} pass, {core}); the interpreter with corecensus and drgn "
        f"imported is {_mb(r.rss[('-', 'import_drgn')])} MB of that.{extra}"
    )
    ok, parts = _growth(r)
    out.append(
        f"- **No growth with core size: {'met' if ok else 'not met'}** — "
        + "; ".join(parts)
        + ". A plain core is read with a handful of pread() calls (headers, notes, 16 KiB of "
        "stack, a few pages of ELF headers), wherever they lie in the file."
    )
    zs, zb = r.get("null_deref.zst", "reg"), r.get("sparse_4g.zst", "reg")
    pz = r.get("sparse_4g.zst", "unzstd_eu")
    if zs and zb:
        out.append(
            f"- **Compressed cores (no target)**: zstd cannot seek, so a compressed core is "
            f"decompressed up to the stack, which the kernel writes near the end of the core: "
            f"register pass {_ms(zs.median)} ms on null_deref.zst, {_ms(zb.median)} ms on "
            f"sparse_4g.zst (4 GiB of zeros decompressed and skipped)"
            + (f"; the peer, `zstd -d` to a file then eu-stack: {_ms(pz.median)} ms" if pz else "")
            + ". Time grows with the decompressed size; memory stays bounded."
        )
    clis = [s for n in r.plain if (s := r.get(n, "cli_reg"))]
    if clis:
        cli_med = statistics.median(s.median for s in clis)
        out.append(
            f"- **As command-line processes** `corecensus inspect --no-symbols` takes "
            f"{_ms(cli_med)} ms per core against eu-stack's {_ms(eu_med)} ms: Python start-up "
            f"and imports dominate (`from corecensus.coredump import inspect_core` alone is "
            f"{_ms(r.cold['import_s'])} ms cold; the whole cold process "
            f"{_ms(r.cold['process_s'])} ms). The per-core figures that matter for a fleet are "
            "the in-process ones, since ingest and backfill parse many cores per process."
        )
    return out


# -- main -----------------------------------------------------------------------------------------

REG_PROFILE = "register pass, null_deref"
FULL_PROFILE = "full pass, null_deref"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--reps", type=int, default=20, help="in-process repetitions per core")
    ap.add_argument("--proc-reps", type=int, default=10, help="process repetitions per core")
    ap.add_argument("--zbig-reps", type=int, default=2, help="repetitions on the 4 GiB .zst core")
    ap.add_argument("--rss-reps", type=int, default=2, help="fresh processes per RSS figure")
    ap.add_argument("--cold-reps", type=int, default=3, help="fresh processes for cold start")
    ap.add_argument("--no-write", action="store_true", help=f"do not write docs/{DOC.name}")
    ap.add_argument("--keep", action="store_true", help="keep the work directory with the cores")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    load_start = os.getloadavg()
    logging.getLogger("drgn").setLevel(logging.ERROR)

    problem = check_core_pattern()
    if problem:
        print(f"core_bench: {problem}", file=sys.stderr)
        return 2
    missing = [t for t in ("gcc", "eu-stack", "gdb") if shutil.which(t) is None]
    if missing:
        print(
            f"core_bench: {', '.join(missing)} not installed: the compiler and the peers of "
            "this benchmark. `./dev bench` installs them (or `apt-get install gcc elfutils gdb`).",
            file=sys.stderr,
        )
        return 2

    work = Path(tempfile.mkdtemp(prefix="corecensus-bench-"))
    try:
        cores = []
        for cr in CRASHERS:
            cores.append(make_core(cr, work))
            c = cores[-1]
            log(f"core {c.name}: {_size(c.apparent_bytes)}, {_size(c.allocated_bytes)} on disk")
        zcores = []
        for c in cores:
            if c.name in ("null_deref", "sparse_4g"):
                t = time.perf_counter()
                zcores.append(compress_zstd(c))
                z = zcores[-1]
                log(f"zstd {c.name}: {time.perf_counter() - t:.1f} s → {_size(z.apparent_bytes)}")
        launcher = build_launcher(work)

        # Every core in one round-robin, so the 1 MB vs 4 GB comparison sees the same load;
        # only the compressed 4 GiB core (seconds per pass) gets its own, shorter series.
        quick = [c for c in cores + zcores if c.name != "sparse_4g.zst"]
        slow = [c for c in zcores if c.name == "sparse_4g.zst"]
        drgn_phases: dict[str, list[float]] = {}
        series = measure_inprocess(quick, args.reps, drgn_phases)
        # Seconds of decompression per call: nothing for a warm-up to settle.
        series += measure_inprocess(slow, args.zbig_reps, drgn_phases, warmup=0)
        series += measure_processes(quick, args.proc_reps, launcher, work)
        series += measure_processes(slow, args.zbig_reps, launcher, work)
        mem = [c for c in cores + zcores if c.name not in ("abort_thread", "deep_recursion")]
        rss = measure_memory(mem, launcher, work, args.rss_reps)
        cold = measure_cold(cores[0], launcher, work, args.cold_reps)
        profiles = {
            REG_PROFILE: profile_pass(cores[0], False, 100),
            FULL_PROFILE: profile_pass(cores[0], True, 10),
        }
        reps = {
            "small": args.reps,
            "proc": args.proc_reps,
            "zbig": args.zbig_reps,
            "rss": args.rss_reps,
            "cold": args.cold_reps,
        }
        res = Results(cores, zcores, series, rss, cold, profiles, reps, drgn_phases)
        res.wall_s = time.perf_counter() - t_start
        text = render(res, machine(load_start))
    except CrasherError as exc:
        print(f"core_bench: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            log(f"cores kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(text)
    if not args.no_write:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        tmp = DOC.with_suffix(".md.tmp")
        tmp.write_text(text)
        tmp.replace(DOC)
        log(f"wrote {DOC}")
    return 0 if all(s.ok for s in series) else 1


if __name__ == "__main__":
    raise SystemExit(main())
