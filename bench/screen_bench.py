"""Benchmark of ``corecensus screen`` (not a test): prints three tables.

1. Time per CPU for the full battery (one round, scale 1), per check, and the screen's wall time
   per CPU against the same battery run in-process without workers (peer: "in-process battery").
2. Detection probability against injected fault rates (1, 1e-3, 1e-5 per call) within one oneshot
   screen, using the LD_PRELOAD fault shim of the tests on CPU 1; with the number of calls at
   risk per screen and the probability 1 - (1 - rate)^calls that a perfect screen would reach.
3. Background-mode overhead: throughput of a CPU-bound peer workload pinned to CPU 0, alone and
   beside a background screen of CPU 0, alternated; the ratio is with / alone.

Usage: python bench/screen_bench.py [--trials N] [--budget S] [--overhead-window S]
Needs 2 CPUs and a C compiler (for the shim). Runs for a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from corecensus.screening import (  # noqa: E402
    BUILTIN_CHECKS,
    CheckContext,
    Outcome,
    ScreenConfig,
    ScreenResult,
    run_screen,
)
from corecensus.screening.affinity import pin  # noqa: E402
from corecensus.screening.checks import load_check  # noqa: E402

SHIM_SOURCE = ROOT / "tests" / "data" / "sdc_shim" / "sdc_shim.c"
BAD_CPU = 1

PEER = r"""
import os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
end = time.monotonic() + float(sys.argv[2])
n = 0
x = 1
while time.monotonic() < end:
    for i in range(2000):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    n += 1
print(n, time.process_time())
"""


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def build_shim(workdir: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("needs a C compiler for the fault shim")
    out = workdir / "sdc_shim.so"
    subprocess.run(
        [cc, "-O2", "-shared", "-fPIC", "-o", str(out), str(SHIM_SOURCE), "-ldl"], check=True
    )
    return out


def battery_time() -> None:
    result = run_screen(ScreenConfig.for_mode("oneshot", rounds=1, budget_s=60.0, seed=1)).result
    # Peer: the same checks, same seeds, in this process on CPU 0, no workers.
    before = os.sched_getaffinity(0)
    pin(0)
    inproc: dict[str, float] = {}
    t0 = time.monotonic()
    for name, spec in BUILTIN_CHECKS.items():
        check = load_check(spec)
        s = time.monotonic()
        check.run(CheckContext(seed=1, scale=1.0, cpu=0, partner=1))
        inproc[name] = time.monotonic() - s
    inproc_total = time.monotonic() - t0
    os.sched_setaffinity(0, before)
    cpus = [c.cpu for c in result.cpus]
    rows = []
    for name in BUILTIN_CHECKS:
        rows.append(
            [
                name,
                *(f"{result.result(c, name).seconds * 1e3:.1f}" for c in cpus),
                f"{inproc[name] * 1e3:.1f}",
            ]
        )
    runs_total = {c: sum(r.seconds for r in result.results if r.cpu == c) for c in cpus}
    rows.append(
        [
            "(sum of checks)",
            *(f"{runs_total[c] * 1e3:.0f}" for c in cpus),
            f"{inproc_total * 1e3:.0f}",
        ]
    )
    rows.append(
        [
            "(worker wall, incl. start-up)",
            *(f"{result.cpu(c).seconds * 1e3:.0f}" for c in cpus),
            "-",
        ]
    )
    table(
        "1. Full battery, one round, scale 1 (milliseconds)",
        ["check", *(f"CPU {c}" for c in cpus), "peer: in-process"],
        rows,
    )
    ratio = statistics.mean(result.cpu(c).seconds for c in cpus) / inproc_total
    print(
        f"ratio worker wall / in-process battery: {ratio:.2f} "
        f"(whole screen {result.seconds:.2f} s, verdict {result.decision.verdict})"
    )


def detection(shim: Path, trials: int, budget: float) -> None:
    rows = []
    for rate in (1.0, 1e-3, 1e-5):
        detected = quarantined = false_pos = 0
        calls: list[int] = []
        for trial in range(trials):
            with tempfile.TemporaryDirectory() as counts:
                env = {
                    "LD_PRELOAD": str(shim),
                    "SDC_SHIM_CPU": str(BAD_CPU),
                    "SDC_SHIM_RATE": repr(rate),
                    "SDC_SHIM_SEED": str(1000 + trial),
                    "SDC_SHIM_COUNT_DIR": counts,
                }
                config = ScreenConfig.for_mode("oneshot", budget_s=budget, seed=trial)
                result = run_screen(config, worker_env=env).result
                at_risk = 0
                for f in Path(counts).iterdir():
                    pow_calls, crc_calls, _ = (int(x) for x in f.read_text().split())
                    at_risk += pow_calls + crc_calls
                calls.append(at_risk)
            bad = [r for r in result.results if r.outcome.is_failure and r.suspect_cpu == BAD_CPU]
            detected += bool(bad)
            quarantined += BAD_CPU in result.decision.quarantine_cpus
            false_pos += any(
                r.suspect_cpu == 0 and r.outcome not in (Outcome.PASSED, Outcome.SKIPPED)
                for r in result.results
            )
        mean_calls = statistics.mean(calls)
        ideal = 1 - (1 - rate) ** mean_calls
        ideal60 = 1 - (1 - rate) ** (mean_calls * 60.0 / budget)
        rows.append(
            [
                f"{rate:g}",
                f"{detected}/{trials}",
                f"{quarantined}/{trials}",
                f"{false_pos}/{trials}",
                f"{mean_calls:,.0f}",
                f"{ideal:.3f}",
                f"{ideal60:.3f}",
            ]
        )
    table(
        f"2. Detection of a fault on CPU {BAD_CPU} within one oneshot screen "
        f"({budget:g} s per CPU; fault shim on pow and crc32)",
        [
            "rate/call",
            "detected",
            "quarantined",
            "CPU 0 flagged",
            "calls at risk",
            "peer: 1-(1-r)^calls",
            "same, 60 s budget",
        ],
        rows,
    )


def peers(seconds: float) -> list[tuple[float, float]]:
    """The peer workload on CPU 0 and CPU 1 at the same time: for each, iterations per wall
    second (throughput) and iterations per second of its own CPU time (efficiency)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PEER, str(cpu), str(seconds)], stdout=subprocess.PIPE
        )
        for cpu in (0, 1)
    ]
    out = []
    for p in procs:
        text, _ = p.communicate()
        n, cpu_s = text.split()
        out.append((int(n) / seconds, int(n) / float(cpu_s)))
    return out


def _screen_into(config: ScreenConfig, box: dict[str, ScreenResult]) -> None:
    box["result"] = run_screen(config).result


def overhead(window: float, pairs: int) -> None:
    """Each measurement runs the peer on both CPUs at once, one of them beside a background
    screen: both see the same noise from the rest of the machine, so their ratio isolates the
    screen. A run with no screen gives the CPUs' own asymmetry; the screen alternates CPUs."""
    ratios: list[float] = []
    efficiency: list[float] = []
    shares: list[float] = []
    duties: list[float] = []
    slices: list[int] = []
    for i in range(pairs):
        screened = i % 2
        other = 1 - screened
        base = peers(window)
        box: dict[str, ScreenResult] = {}
        config = ScreenConfig.for_mode("background", cpus=(screened,), budget_s=window + 3.0)
        th = threading.Thread(target=_screen_into, args=(config, box))
        th.start()
        time.sleep(1.0)  # the worker starts at idle priority before the measurement
        with_screen = peers(window)
        th.join()
        ws, wo, bs, bo = with_screen[screened], with_screen[other], base[screened], base[other]
        ratios.append((ws[0] / wo[0]) / (bs[0] / bo[0]))
        efficiency.append((ws[1] / wo[1]) / (bs[1] / bo[1]))
        # throughput = (own CPU seconds per second) x (work per own CPU second), so the loss
        # splits into the CPU share the peer lost and what it lost per CPU-second it had.
        shares.append((ws[0] / ws[1] / (wo[0] / wo[1])) / (bs[0] / bs[1] / (bo[0] / bo[1])))
        duty = box["result"].cpus[0].duty
        duties.append(duty.duty_cycle if duty else float("nan"))
        slices.append(duty.slices if duty else 0)
    ratio = statistics.median(ratios)
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratio, ratio, ratio]
    rows = [
        [
            "peer throughput beside / alone",
            f"{ratio:.4f}",
            f"{min(ratios):.4f} .. {max(ratios):.4f} (IQR {q[0]:.4f} .. {q[2]:.4f})",
        ],
        [
            "peer work per own CPU-second, beside / alone",
            f"{statistics.median(efficiency):.4f}",
            f"{min(efficiency):.4f} .. {max(efficiency):.4f}",
        ],
        [
            "peer's share of its CPU, beside / alone",
            f"{statistics.median(shares):.4f}",
            f"{min(shares):.4f} .. {max(shares):.4f}",
        ],
        [
            "screen's measured duty cycle",
            f"{statistics.median(duties):.3%}",
            f"{min(duties):.3%} .. {max(duties):.3%}",
        ],
        [
            "screen's slices per window",
            f"{statistics.median(slices):.0f}",
            f"{min(slices)} .. {max(slices)}",
        ],
    ]
    table(
        f"3. Background-mode overhead ({pairs} measurements of {window:g} s; peer: the same "
        "CPU-bound loop on the other CPU at the same time)",
        ["", "median", "range"],
        rows,
    )
    mean = statistics.fmean(ratios)
    half = 1.96 * statistics.stdev(ratios) / len(ratios) ** 0.5 if len(ratios) > 1 else math.inf
    print(
        f"ratio peer throughput beside / alone: median {ratio:.4f} (loss {1 - ratio:.2%}, target "
        f"<= 1%); mean {mean:.4f}, 95% interval of the mean loss {1 - mean - half:.2%} .. "
        f"{1 - mean + half:.2%}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--budget", type=float, default=10.0, help="oneshot budget per CPU, seconds")
    ap.add_argument("--overhead-window", type=float, default=6.0)
    ap.add_argument("--pairs", type=int, default=12)
    ap.add_argument("--only", choices=("battery", "detection", "overhead"))
    args = ap.parse_args()
    if not {0, BAD_CPU} <= os.sched_getaffinity(0):
        print("needs CPUs 0 and 1", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        shim = build_shim(Path(tmp))
        if args.only in (None, "battery"):
            battery_time()
        if args.only in (None, "detection"):
            detection(shim, args.trials, args.budget)
        if args.only in (None, "overhead"):
            overhead(args.overhead_window, args.pairs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
