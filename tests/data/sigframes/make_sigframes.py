#!/usr/bin/env python3
"""Regenerate the signal-frame cores of other architectures in this directory.

Run on a Debian 12 x86-64 host, from anywhere: ``python3 tests/data/sigframes/make_sigframes.py``.
Needs ``gcc-aarch64-linux-gnu`` ``libc6-dev-arm64-cross`` ``qemu-user`` ``zstd``.

``dead_sigframe.c`` is built static for each architecture and run under qemu-user (guest stack
256 KiB, empty environment), which writes the guest's core itself when it dies: a handler ran
and returned, then the thread crashed, so the signal frame lies in the dead stack below ``sp``.
qemu-user builds signal frames with the kernel's layout (linux-user/ARCH/signal.c mirrors
arch/ARCH/kernel/signal.c). Two runs per architecture:

- ``ARCH/core-siginfo.zst``: SA_SIGINFO handler; it printed the saved pc and sp of its
  ucontext, recorded in ``manifest.json`` (the oracle), and the signal number is SIGUSR1;
- ``ARCH/core-plain.zst``: plain ``sa_handler``: the frame's siginfo is not written; the oracle
  is that the saved pc lies in ``wait_for_signal`` (its address range from ``nm -S``).
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARCHES = {"aarch64": ("aarch64-linux-gnu-gcc", "aarch64-linux-gnu-nm", "qemu-aarch64")}
STACK = 256 * 1024


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    wrapped = ["/bin/sh", "-c", 'ulimit -c unlimited && exec "$@"', "sh", *cmd]
    return subprocess.run(wrapped, cwd=cwd, env={}, capture_output=True, text=True, check=False)


def _one(arch: str, mode: str, exe: Path, work: Path) -> tuple[Path, str]:
    run = work / mode
    run.mkdir()
    done = _run([ARCHES[arch][2], "-s", str(STACK), str(exe), mode], run)
    # qemu re-raises the guest's SIGSEGV on itself: the host may write a core of qemu ("core").
    cores = sorted(run.glob("qemu_*.core"))
    if done.returncode >= 0 or len(cores) != 1:
        raise SystemExit(f"{arch} {mode}: no guest core ({done.returncode}): {done.stderr}")
    return cores[0], done.stdout


def main() -> None:
    manifest: dict[str, object] = {}
    for arch, (cc, nm, _qemu) in ARCHES.items():
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            exe = work / "dead_sigframe"
            subprocess.run(
                [cc, "-g", "-O0", "-static", "-o", str(exe), str(HERE / "dead_sigframe.c")],
                check=True,
            )
            symbols = subprocess.run([nm, "-S", str(exe)], capture_output=True, text=True).stdout
            m = re.search(r"^([0-9a-f]+) ([0-9a-f]+) T wait_for_signal$", symbols, re.M)
            if m is None:
                raise SystemExit("wait_for_signal not in the symbol table")
            start, size = int(m.group(1), 16), int(m.group(2), 16)
            out = HERE / arch
            out.mkdir(exist_ok=True)
            facts: dict[str, object] = {"wait_for_signal": [start, start + size]}
            for mode in ("plain", "siginfo"):
                core, stdout = _one(arch, mode, exe, work)
                subprocess.run(
                    ["zstd", "-q", "-19", "-f", str(core), "-o", str(out / f"core-{mode}.zst")],
                    check=True,
                )
                if mode == "siginfo":
                    got = re.search(
                        r"interrupted_pc=(0x[0-9a-f]+) interrupted_sp=(0x[0-9a-f]+)", stdout
                    )
                    if got is None:
                        raise SystemExit(f"the handler printed no context: {stdout!r}")
                    facts["siginfo"] = {
                        "interrupted_pc": int(got.group(1), 16),
                        "interrupted_sp": int(got.group(2), 16),
                        "signal": 10,
                    }
            manifest[arch] = facts
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print("wrote", ", ".join(f"{a}/core-*.zst" for a in ARCHES), "and manifest.json")


if __name__ == "__main__":
    main()
