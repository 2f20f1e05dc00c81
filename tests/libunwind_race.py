"""Real cores of the libunwind signal race (libunwind issue #927, fixed by PR #928).

tests/data/libunwind_race/throw_loop.cc throws C++ exceptions in a loop, unwound by Debian's
libunwind 1.6.2 (``-lunwind``), with a plain ``sa_handler`` for SIGUSR2. Waiting for a timer to
hit the one-instruction window takes minutes of CPU, so gdb (batch mode,
tests/data/libunwind_race/deliver_signal.gdb.py) stops the first throw at the racy instruction
of ``_Ux86_64_setcontext`` and delivers SIGUSR2 right there. Everything after that is the real
bug: the kernel pushes the signal frame over libunwind's context, the handler returns, the
``ret`` jumps to what the frame left, and the kernel writes the core when the process dies.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from crashers import CrasherError, is_core_file

RACE_DIR = Path(__file__).resolve().parent / "data" / "libunwind_race"
SOURCE = RACE_DIR / "throw_loop.cc"
GDB_SCRIPT = RACE_DIR / "deliver_signal.gdb.py"
CXX = "g++"
CXXFLAGS = ("-g", "-O1", "-fno-omit-frame-pointer", "-Wall", "-Wextra")
INCLUDE_DIR = Path("/usr/include")
RUN_TIMEOUT_S = 120
# Raise the soft core limit in a shell that then execs gdb; gdb's inferior inherits it.
_ALLOW_CORE = 'ulimit -S -c "$(ulimit -H -c)" && exec "$@"'


def missing_tools() -> str | None:
    """Why these cores cannot be made here, or None."""
    for tool in (CXX, "gdb"):
        if shutil.which(tool) is None:
            return f"{tool} not found on PATH"
    # Debian keeps the header under the multiarch directory (x86_64-linux-gnu/libunwind.h).
    if not any(INCLUDE_DIR.glob("libunwind.h")) and not any(INCLUDE_DIR.glob("*/libunwind.h")):
        return "libunwind-dev is not installed (./dev installs it)"
    return None


def build(build_dir: Path) -> Path:
    """Compile throw_loop against libunwind (cached by a hash of compiler, flags and source)."""
    key = hashlib.sha256(SOURCE.read_bytes() + "\0".join(CXXFLAGS).encode()).hexdigest()[:16]
    exe = build_dir / key / "throw_loop"
    if exe.is_file():
        return exe
    exe.parent.mkdir(parents=True, exist_ok=True)
    tmp = exe.parent / f".throw_loop.{os.getpid()}"
    cmd = [CXX, *CXXFLAGS, "-o", str(tmp), str(SOURCE), "-lunwind"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CrasherError(f"building throw_loop failed ({' '.join(cmd)}):\n{done.stderr}")
    os.replace(tmp, exe)
    return exe


@dataclass(frozen=True)
class RaceCore:
    """A core of the race; ``interrupted_pc``/``interrupted_sp`` are where gdb saw the thread
    when it delivered the signal (the independent oracle for the signal frame)."""

    core: Path
    exe: Path
    path: int
    interrupted_pc: int
    interrupted_sp: int
    function_start: int


# Paddings of the thrower's stack to try (throw_loop.cc's PAD), the one that worked last first:
# where the signal frame's fpstate falls on the context's %rip slot depends on the CPU's XSAVE
# layout, and in some areas of it (MPX's, on CPUs without MPX) the kernel writes nothing.
PADS = tuple(range(0, 4097, 128))
_pad_that_worked = [0]


def pad_that_crashes() -> int:
    """The padding with which the last race_core() got its core (0 before any): the natural
    runs of bench/race_natural_bench.py use it so that the race can kill them on this CPU."""
    return _pad_that_worked[0]


def race_core(exe: Path, path: int, workdir: Path) -> RaceCore:
    """Run throw_loop PATH under gdb, deliver SIGUSR2 in the window, return the kernel's core:
    with the first padding for which the signal frame leaves 0 in the context's %rip slot."""
    tried: list[str] = []
    for pad in dict.fromkeys((_pad_that_worked[0], *PADS)):
        run_dir = workdir / f"pad{pad}"
        core = _race_core_padded(exe, path, run_dir, pad, tried)
        if core is not None:
            _pad_that_worked[0] = pad
            return core
    raise CrasherError(
        "the signal frame never left 0 in libunwind's %rip slot: " + "; ".join(tried[-4:])
    )


def _race_core_padded(
    exe: Path, path: int, workdir: Path, pad: int, tried: list[str]
) -> RaceCore | None:
    workdir.mkdir(parents=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "LC_ALL": "C",
        "RACE_EXE": str(exe),
        "RACE_ARGS": f"{path} 0 2000000000 {pad}",
    }
    cmd = [
        "/bin/sh", "-c", _ALLOW_CORE, "allow-core",
        "gdb", "-batch", "-nx", "-iex", "set debuginfod enabled off", "-x", str(GDB_SCRIPT),
    ]  # fmt: skip
    done = subprocess.run(
        cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    lines = done.stdout.splitlines()
    facts = next((json.loads(ln[11:]) for ln in lines if ln.startswith("RACE_FACTS ")), None)
    target = next((ln[12:] for ln in lines if ln.startswith("RACE_TARGET ")), None)
    if facts is None or target is None:
        raise CrasherError(f"gdb did not reach the race window:\n{done.stdout}\n{done.stderr}")
    if int(target, 16) != 0:
        tried.append(f"pad {pad}: the frame left {target}")
        return None
    if "terminated with signal SIGSEGV" not in done.stdout:
        raise CrasherError(f"throw_loop did not die of SIGSEGV:\n{done.stdout}\n{done.stderr}")
    cores = [p for p in workdir.iterdir() if p.is_file() and is_core_file(p)]
    if len(cores) != 1:
        raise CrasherError(f"expected one core in {workdir}, found {cores}")
    return RaceCore(
        cores[0],
        exe,
        path,
        facts["interrupted_pc"],
        facts["interrupted_sp"],
        facts["function_start"],
    )
