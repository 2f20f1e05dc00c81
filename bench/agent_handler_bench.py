"""Benchmark of the core handler (not a test): how long a dying process is held, against
``cat > file`` (the floor any pipe handler that keeps the core must pay).

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
    results: dict[str, list[tuple[float, float, int]]] = {"handler": [], "cat": []}
    with tempfile.TemporaryDirectory(prefix="ccbench") as tmp:
        for i in range(args.reps):
            state = Path(tmp) / f"s{i}"
            pid = str(stand.pid)
            handler = [sys.executable, "-m", "corecensus", "agent", "--config", os.devnull, "-s", str(state),
                       "handle-core", pid, pid, pid, "11", str(1700000000 + i), "bench", "ledger"]  # fmt: skip
            results["handler"].append(held(handler, core, env))
            results["cat"].append(held(["/bin/sh", "-c", f"cat > {tmp}/cat{i}.core"], core, env))
    assert stand.stdin is not None
    stand.stdin.close()
    stand.wait()
    med = {k: [statistics.median(x[j] for x in v) for j in range(3)] for k, v in results.items()}
    print(f"core: {len(core) / 1024:.0f} KiB, {args.reps} runs each, medians")
    print("| method | process held (ms) | CPU (ms) | peak RSS (MiB) |")
    print("|---|---:|---:|---:|")
    print(
        f"| corecensus agent handle-core | {med['handler'][0] * 1e3:.0f} | {med['handler'][1] * 1e3:.0f} | {med['handler'][2] / 1024:.0f} |"
    )
    print(
        f"| `cat > file` (floor) | {med['cat'][0] * 1e3:.0f} | {med['cat'][1] * 1e3:.0f} | {med['cat'][2] / 1024:.0f} |"
    )
    print(f"ratio held (handler / cat): {med['handler'][0] / med['cat'][0]:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
