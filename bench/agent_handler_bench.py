"""Benchmark of the core handler (not a test): how long a dying process is held, against
``cat > file`` (the floor any pipe handler that keeps the core must pay).

Rows: the launcher ``install-handler`` writes into core_pattern (``python -I -S``, the lean
hold of ``corecensus.agent.corehold``, the rest after the release), the same handler through the
``corecensus agent handle-core`` command (Click and the package imported first: what the kernel
ran before), and ``cat > file``.

The kernel writes the core into the handler's stdin and (with ``core_pipe_limit`` set) waits
until the handler lets go of the pipe; that is the time the dying process is held. Here the
writer is this script: it starts the handler with the pattern's arguments, writes a real core,
and waits for the pipe to report no reader (``POLLERR`` on the write end), as the kernel does.
A live stand-in process provides ``/proc/<pid>`` facts. Also reported: the handler's CPU time
and peak RSS (from ``wait4``), which include the work after the release (parse, spool).

Usage: python bench/agent_handler_bench.py [--reps N] [--core PATH]
(default core: the demo's sample core, decompressed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zstandard

from corecensus.agent.corepattern import write_launcher

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src" / "corecensus" / "demo" / "samples" / "commit.core.zst"


def held(argv: list[str], core: bytes, env: dict[str, str]) -> tuple[float, float, int]:
    """(seconds until the reader let go of the pipe, CPU seconds of the child, peak RSS KiB).

    Like the kernel: write the whole core, close the write end (EOF), then wait until the
    child no longer holds the read end (its fd 0 is something else, or it exited).
    """
    r, w = os.pipe()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv, stdin=r, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    os.close(r)
    pipe = os.readlink(f"/proc/{proc.pid}/fd/0") if os.path.exists(f"/proc/{proc.pid}/fd/0") else ""
    view = memoryview(core)
    try:
        while view:
            view = view[os.write(w, view[: 1 << 16]) :]
    except BrokenPipeError:
        pass
    os.close(w)
    link = f"/proc/{proc.pid}/fd/0"
    while True:  # not proc.poll(): it would reap the child before wait4 reads its usage
        try:
            if os.readlink(link) != pipe:
                break
        except OSError:
            break
        time.sleep(0.0005)
    t1 = time.monotonic()
    _, _status, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return t1 - t0, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--core", type=Path, default=None)
    args = ap.parse_args()
    if args.core is None:
        with SAMPLE.open("rb") as fh:
            core = zstandard.ZstdDecompressor().stream_reader(fh).read()
    else:
        core = args.core.read_bytes()
    stand = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORECENSUS_")}
    results: dict[str, list[tuple[float, float, int]]] = {"launcher": [], "cli": [], "cat": []}
    module_dir = str(ROOT / "src" / "corecensus" / "agent")
    with tempfile.TemporaryDirectory(prefix="ccbench") as tmp:
        for i in range(args.reps):
            pid = str(stand.pid)
            crash = [pid, pid, pid, "11", str(1700000000 + i), "bench", "ledger"]
            state = Path(tmp) / f"l{i}"
            launcher = write_launcher(state, sys.executable, module_dir)
            # The kernel's helper environment (kernel/umh.c).
            helper = {"HOME": "/", "PATH": "/sbin:/bin:/usr/sbin:/usr/bin"}
            results["launcher"].append(held([str(launcher), *crash], core, helper))
            cli = [sys.executable, "-m", "corecensus", "agent", "--config", os.devnull,
                   "-s", str(Path(tmp) / f"c{i}"), "handle-core", *crash]  # fmt: skip
            results["cli"].append(held(cli, core, env))
            results["cat"].append(held(["/bin/sh", "-c", f"cat > {tmp}/cat{i}.core"], core, env))
    assert stand.stdin is not None
    stand.stdin.close()
    stand.wait()
    med = {k: [statistics.median(x[j] for x in v) for j in range(3)] for k, v in results.items()}
    print(f"core: {len(core) / 1024:.0f} KiB, {args.reps} runs each, medians")
    print("| method | process held (ms) | CPU (ms) | peak RSS (MiB) |")
    print("|---|---:|---:|---:|")
    names = {
        "launcher": "installed launcher (`python -I -S`, lean hold)",
        "cli": "`corecensus agent handle-core` (Click, whole package first)",
        "cat": "`cat > file` (floor)",
    }
    for key, name in names.items():
        held_ms, cpu_ms, rss = med[key][0] * 1e3, med[key][1] * 1e3, med[key][2] / 1024
        print(f"| {name} | {held_ms:.0f} | {cpu_ms:.0f} | {rss:.0f} |")
    print(f"ratio held (launcher / cat): {med['launcher'][0] / med['cat'][0]:.1f}x")
    print(f"ratio held (command / cat): {med['cli'][0] / med['cat'][0]:.1f}x")
    print("CPU and peak RSS include the work after the release (compression, parse, spool).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
