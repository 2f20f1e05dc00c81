"""The libunwind signal race left to happen by itself (not a test): how many cores per minute a
CPU-time timer gives, and whether they join the gdb-made cores' single population.

tests/data/libunwind_race/throw_loop.cc throws C++ exceptions in a loop, unwound by Debian's
libunwind 1.6.2, under a CPU-time timer raising SIGUSR2 (plain ``sa_handler``) at ``--hz``.
No debugger: the race fires when the timer's tick happens to interrupt the one racy
instruction of ``_Ux86_64_setcontext`` (libunwind issue #927). This script

1. calibrates: one run of ``--calibrate-throws`` throws under the timer gives throws and signals
   per CPU-second (the program prints both when it survives; CPU time from ``wait4``);
2. runs throw_loop ``--jobs`` at a time for ``--minutes`` of wall time, each run until it dies
   (the kernel writes its core) or the time is up, and counts cores per CPU-minute and per
   wall-minute;
3. ingests the natural cores with three gdb-made ones (tests/libunwind_race.py, the suite's
   fixture) and runs ``corecensus analyze --json --signal-hz --event-rate`` with the calibrated
   rates: every core must land in one race population naming ``_Ux86_64_setcontext``, and its
   race-window check sets the rate the window implies beside the observed one (exposure: the
   runs' CPU time, one process).

The peer is the window itself: observed cores per CPU-minute against throws/s x signals/s x
window (1 instruction x 1 ns). Usage:
python bench/race_natural_bench.py [--minutes M] [--jobs J] [--hz HZ] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The race's one harness (build and gdb delivery) lives with the tests that use it.
sys.path.insert(0, str(ROOT / "tests"))

from corecensus.demo.kernel_cores import is_core_file  # noqa: E402
from libunwind_race import build, missing_tools, pad_that_crashes, race_core  # noqa: E402

NS_PER_INSTRUCTION = 1.0


@dataclass
class Run:
    path: int
    cpu_s: float
    wall_s: float
    core: Path | None
    status: str


def _allow_cores() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))


def _spawn(exe: Path, args: list[str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(exe), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        preexec_fn=_allow_cores,  # noqa: PLW1509 - no threads here
    )


def _reap(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    """(wait status, CPU seconds) of a child, from wait4 (so its usage is its own)."""
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return status, usage.ru_utime + usage.ru_stime


def calibrate(exe: Path, hz: int, throws: int, scratch: Path) -> tuple[float, float, float]:
    """(throws per CPU-second, signals per CPU-second, CPU seconds) of one surviving run."""
    for _attempt in range(5):
        proc = _spawn(exe, ["1", str(hz), str(throws)], scratch)
        status, cpu = _reap(proc)
        assert proc.stdout is not None
        out = proc.stdout.read().decode()
        if os.WIFEXITED(status) and out.startswith("throws "):
            _t, n, _s, sigs = out.split()
            return int(n) / cpu, int(sigs) / cpu, cpu
        # the race struck during calibration: that run's core is simply not used
    raise SystemExit("calibration runs kept dying; lower --calibrate-throws")


def natural_runs(exe: Path, hz: int, minutes: float, jobs: int, out: Path, pad: int) -> list[Run]:
    deadline = time.monotonic() + minutes * 60
    runs: list[Run] = []
    live: dict[int, tuple[subprocess.Popen[bytes], int, float, Path]] = {}
    n = 0
    while True:
        while len(live) < jobs and time.monotonic() < deadline:
            n += 1
            cwd = out / f"run{n:04d}"
            cwd.mkdir(parents=True)
            path = 1 + n % 3
            proc = _spawn(exe, [str(path), str(hz), str(2_000_000_000), str(pad)], cwd)
            live[proc.pid] = (proc, path, time.monotonic(), cwd)
        if not live:
            break
        timeout = max(0.0, deadline - time.monotonic())
        pid = _wait_any(timeout)
        if pid is None:  # time is up: stop the survivors (SIGKILL writes no core)
            for proc, _p, _t0, _cwd in live.values():
                proc.send_signal(signal.SIGKILL)
            pid = -1
        for done_pid in list(live) if pid == -1 else [pid]:
            proc, path, t0, cwd = live.pop(done_pid)
            status, cpu = _reap(proc)
            cores = [p for p in cwd.iterdir() if p.is_file() and is_core_file(p)]
            dead = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSEGV
            what = "SIGSEGV" if dead else f"status {status:#x}"
            runs.append(Run(path, cpu, time.monotonic() - t0, cores[0] if cores else None, what))
            print(
                f"  run {cwd.name}: {what}, {cpu:.1f} CPU-s, core: {bool(cores)}",
                file=sys.stderr,
                flush=True,
            )
    return runs


def _wait_any(timeout: float) -> int | None:
    """The pid of a child that has exited (not reaped), or None after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return None
        if info is not None:
            return info.si_pid
        if time.monotonic() >= end:
            return None
        time.sleep(0.2)


def corecensus(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "corecensus", *args], capture_output=True, text=True, check=True
    )
    return done.stdout


def _place(cores: list[Path], fleet: Path, host: str, t0: int) -> None:
    fleet.mkdir()
    for i, core in enumerate(cores):
        d = fleet / f"c{i:03d}"
        d.mkdir()
        shutil.copy(core, d / "core")
        meta = {"COREDUMP_HOSTNAME": host, "COREDUMP_TIMESTAMP": str((t0 + i) * 1_000_000)}
        (d / "core.json").write_text(json.dumps(meta))


def _populations(db: Path, *extra: str) -> list[dict[str, object]]:
    doc = json.loads(corecensus("analyze", "--db", str(db), "--json", *extra))
    pops: list[dict[str, object]] = doc["populations"]
    return pops


def population_check(
    natural: list[Path], exe: Path, scratch: Path, throws_s: float, signals_s: float, cpu_s: float
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """(populations of the natural cores with the race-window check, populations of the
    natural and three gdb-made cores together)."""
    db = scratch / "race.duckdb"
    t0 = 1_780_000_000
    _place(natural, scratch / "natural_fleet", "natural", t0)
    corecensus("ingest", "--db", str(db), "--jobs", "1", str(scratch / "natural_fleet"))
    # Exposure: the natural runs' CPU time, as one process's hours.
    start = datetime.fromtimestamp(t0, UTC)
    end = datetime.fromtimestamp(t0 + cpu_s, UTC)
    exposure = scratch / "exposure.csv"
    exposure.write_text(
        "host,start,end,service,version,cpu_model\n"
        f"natural,{start.isoformat()},{end.isoformat()},,,\n"
    )
    rates = ("--signal-hz", f"{signals_s:.6g}", "--event-rate", f"{throws_s:.6g}")
    checked = _populations(db, "--exposure", str(exposure), *rates) if natural else []
    gdb_made = [race_core(exe, p, scratch / f"gdb{p}").core for p in (1, 2, 3)]
    _place(gdb_made, scratch / "gdb_fleet", "gdb", t0 + 100_000)
    corecensus("ingest", "--db", str(db), "--jobs", "1", str(scratch / "gdb_fleet"))
    return checked, _populations(db)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="wall minutes of natural runs")
    ap.add_argument("--jobs", type=int, default=1, help="throw_loop processes at a time")
    ap.add_argument("--hz", type=int, default=1000, help="timer rate asked for (per CPU-s)")
    ap.add_argument("--calibrate-throws", type=int, default=100_000)
    ap.add_argument("--dir", type=Path, default=None, help="keep the runs here")
    args = ap.parse_args(argv)
    why = missing_tools()
    if why is not None:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    scratch = args.dir or Path(tempfile.mkdtemp(prefix="race_natural_"))
    scratch.mkdir(parents=True, exist_ok=True)
    exe = build(scratch / "build")
    throws_s, signals_s, cal_cpu = calibrate(exe, args.hz, args.calibrate_throws, scratch)
    print(
        f"calibration: {throws_s:,.0f} throws/CPU-s, {signals_s:.1f} signals/CPU-s "
        f"({cal_cpu:.1f} CPU-s)",
        file=sys.stderr,
    )
    # The thrower's stack padding with which the signal frame zeroes libunwind's %rip slot on
    # this CPU (tests/libunwind_race.py): at 0 the race is benign on some XSAVE layouts.
    race_core(exe, 1, scratch / "probe")
    pad = pad_that_crashes()
    t0 = time.monotonic()
    runs = natural_runs(exe, args.hz, args.minutes, args.jobs, scratch / "natural", pad)
    wall_min = (time.monotonic() - t0) / 60
    cpu_min = sum(r.cpu_s for r in runs) / 60
    cores = [r.core for r in runs if r.core is not None]
    implied_per_min = throws_s * signals_s * NS_PER_INSTRUCTION * 1e-9 * 60
    observed = len(cores) / cpu_min if cpu_min else 0.0
    checked, together = population_check(cores, exe, scratch, throws_s, signals_s, cpu_min * 60)
    races = [p for p in together if str(p["signature"]).startswith("signal race in ")]
    total = len(cores) + 3
    lines = [
        "## The libunwind race, natural (timer only, no debugger)",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}; timer asked at {args.hz} Hz, {args.jobs} job(s), "
        f"{wall_min:.1f} wall-minutes, {len(runs)} runs",
        "",
        "| figure | value |",
        "|---|---:|",
        f"| throws per CPU-second | {throws_s:,.0f} |",
        f"| signals delivered per CPU-second | {signals_s:.1f} |",
        f"| CPU-minutes run | {cpu_min:.1f} |",
        f"| natural cores (SIGSEGV with a core) | {len(cores)} |",
        f"| cores per CPU-minute (observed) | {observed:.3g} |",
        f"| cores per wall-minute | {len(cores) / wall_min if wall_min else 0:.3g} |",
        f"| implied by 1 instruction × {NS_PER_INSTRUCTION:g} ns (peer) | "
        f"{implied_per_min:.3g} per CPU-minute |",
        f"| observed / implied | {observed / implied_per_min:.3g} |",
        f"| effective window (observed / (throws × signals)) | "
        f"{observed / 60 / (throws_s * signals_s) * 1e9:.3g} ns |",
        "",
        f"Populations of the {total} cores (natural + 3 gdb-made): "
        + "; ".join(f"{p['signature']} ×{p['crashes']}" for p in together),
        f"One race population holding every core: {len(races) == 1 and races[0]['crashes'] == total}",
    ]
    for p in checked:
        w = p.get("race_window")
        if isinstance(w, dict):
            where = (
                "measured in " + str(w["window_source"])
                if w["window_measured"]
                else str(w["window_source"])
            )
            offsets = [hex(o) for o in w["interrupted_offsets"]]
            lines.append(
                f"Natural cores' window check: {w['window_instructions']} instruction(s) "
                f"({where}), module offsets {offsets}, implied {w['implied_per_hour']:.3g}/h, "
                f"observed {w['observed_per_hour']:.3g}/h, {w['agreement']}."
            )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
