"""Real kernel core dumps from programs that crash on purpose: the one harness the demo, the
tests (tests/crashers.py) and the benchmarks (bench/_core/crashers.py) share.

Three steps, the same for every caller:

- `kernel_core_problem`: whether a crashing child here gets a core file in its own working
  directory (kernel.core_pattern a plain file name, a hard RLIMIT_CORE above 0), or why not.
- `build_program`: compile the sources with the machine's C compiler, cached by a hash of
  compiler, flags and sources, written atomically so concurrent builders never see half a file.
- `crash`: run the program in a fresh directory with its soft RLIMIT_CORE raised to the hard
  limit (and, if asked, RLIMIT_STACK pinned), wait for it keeping the raw wait status (its
  WCOREDUMP bit), and find the core the kernel wrote there.  The core is found by content, the
  one ET_CORE ELF file in the directory, so any plain-name pattern works (`core`, `core.%p`, or
  `core.PID` with kernel.core_uses_pid=1).

What a program must crash of, what it notes on the side, and what a caller does with the core
stay with the caller.
"""

from __future__ import annotations

import functools
import hashlib
import os
import resource
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from signal import Signals

from corecensus.errors import CorecensusError

__all__ = [
    "CFLAGS",
    "EM_X86_64",
    "ET_CORE",
    "Crash",
    "CrasherError",
    "build_program",
    "crash",
    "is_core_file",
    "kernel_core_problem",
]

# -O0 with frame pointers keeps every frame the programs document (a crash that returns to a
# NULL it wrote over a saved return address relies on %rbp+8 being that slot); -pthread only
# matters for the threaded crashers but is harmless elsewhere.
CFLAGS = ("-g", "-O0", "-fno-omit-frame-pointer", "-Wall", "-Wextra", "-pthread")
C_COMPILERS = ("gcc", "cc")
STDERR_FILE = "crash-stderr.txt"

ET_CORE = 4
EM_X86_64 = 62


class CrasherError(CorecensusError):
    """A crashing program could not be built, or did not crash as it must, or left no core."""


def kernel_core_problem(proc_root: Path = Path("/proc")) -> str | None:
    """Why a crashing child of this process would get no core file in its own working
    directory, or None if it would.

    Plain file names only: a pipe to a handler (systemd-coredump, apport) or a fixed directory
    sends the core elsewhere.  A soft RLIMIT_CORE of 0 is no obstacle (`crash` raises it in the
    child), a hard one of 0 is.  `proc_root` is injectable so tests can point it at a fake tree.
    """
    path = proc_root / "sys/kernel/core_pattern"
    try:
        pattern = path.read_text().strip()
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if not pattern:
        return "kernel.core_pattern is empty: the kernel writes no core files"
    # Worded as the demo has always said it (it prints this when it falls back to its samples).
    if pattern.startswith("|"):
        return f"kernel.core_pattern pipes cores to a program ({pattern.split()[0][1:]})"
    if "/" in pattern:
        return f"kernel.core_pattern writes cores to a fixed place ({pattern})"
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if hard == 0:
        return "hard RLIMIT_CORE is 0: no process here may write a core file"
    return None


@functools.cache
def _compiler_identity(compiler: str) -> str:
    out = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True)
    return f"{compiler}\n{out.stdout.splitlines()[0]}"


def _compiler(choices: Sequence[str]) -> str:
    for name in choices:
        found = shutil.which(name)
        if found is not None:
            return found
    raise CrasherError(
        f"no compiler ({' or '.join(choices)}) on PATH: it builds the programs that crash on "
        "purpose (apt-get install gcc)"
    )


def build_program(
    name: str,
    sources: Sequence[Path],
    build_dir: Path,
    *,
    flags: Sequence[str] = CFLAGS,
    headers: Sequence[Path] = (),
    compilers: Sequence[str] = C_COMPILERS,
) -> Path:
    """Compile `sources` into `build_dir/name-<key>/name` and return the executable's path.

    The key hashes the compiler, the flags and every source and header (name and bytes), so a
    rebuild happens only when one of them changed.  The executable is called `name` because
    the kernel records it as the core's comm (truncated to 15 bytes).
    """
    cc = _compiler(compilers)
    digest = hashlib.sha256()
    digest.update(_compiler_identity(cc).encode())
    digest.update("\0".join(flags).encode())
    for path in (*sources, *headers):
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes())
    out_dir = build_dir / f"{name}-{digest.hexdigest()[:12]}"
    exe = out_dir / name
    if exe.is_file():
        return exe
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{name}.{os.getpid()}.tmp"
    cmd = [cc, *flags, "-o", str(tmp), *(str(s) for s in sources)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CrasherError(f"building {name} failed ({' '.join(cmd)}):\n{proc.stderr.strip()}")
    os.replace(tmp, exe)  # atomic: a concurrent builder never sees a half-written executable
    return exe


def is_core_file(path: Path) -> bool:
    """True if `path` starts with an ELF header of type ET_CORE (read with struct, no parser)."""
    try:
        with path.open("rb") as f:
            head = f.read(20)
    except OSError:
        return False
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return False
    (e_type,) = struct.unpack_from("<H", head, 16)
    return bool(e_type == ET_CORE)


def _find_core(workdir: Path, pid: int) -> Path | None:
    for path in (workdir / "core", workdir / f"core.{pid}"):
        if is_core_file(path):
            return path
    others = sorted(p for p in workdir.iterdir() if p.is_file() and is_core_file(p))
    if len(others) > 1:
        raise CrasherError(f"more than one core file in {workdir}: {others}")
    return others[0] if others else None


@dataclass(frozen=True)
class Crash:
    """What one run of a crashing program left behind.

    `status` is the raw wait status; `core` the core file the kernel wrote into `workdir`, or
    None; `stderr` what the program wrote there.
    """

    argv: tuple[str, ...]
    workdir: Path
    pid: int
    status: int
    core: Path | None
    stderr: str

    @property
    def signal(self) -> Signals | None:
        """The signal that killed the program, or None if it exited."""
        return Signals(os.WTERMSIG(self.status)) if os.WIFSIGNALED(self.status) else None

    @property
    def exit_code(self) -> int | None:
        """The program's exit code, or None if a signal killed it."""
        return os.WEXITSTATUS(self.status) if os.WIFEXITED(self.status) else None

    @property
    def core_dumped(self) -> bool:
        """Whether the kernel said it dumped a core (WCOREDUMP)."""
        return os.WIFSIGNALED(self.status) and os.WCOREDUMP(self.status)

    def require_core(self, label: str, expected: Signals | None = None) -> Path:
        """The core, or CrasherError saying how the program (`label` in the message) failed to
        die of `expected` (any signal when None) and leave one."""
        killed_by = self.signal
        if killed_by is None:
            said = f": {self.stderr.strip()}" if self.stderr.strip() else ""
            raise CrasherError(f"{label} exited with {self.exit_code} instead of crashing{said}")
        if expected is not None and killed_by != expected:
            raise CrasherError(f"{label} died of {killed_by.name}, expected {expected.name}")
        if self.core is None:
            reason = kernel_core_problem() or (
                "core_pattern and RLIMIT_CORE allow one: fs.suid_dumpable, or a full or "
                "read-only filesystem?"
            )
            raise CrasherError(
                f"{label} died of {killed_by.name} but left no core in {self.workdir} "
                f"(kernel reported core dumped: {self.core_dumped}; {reason})"
            )
        return self.core


def _wait(pid: int, timeout_s: float) -> tuple[int, bool]:
    """waitpid with a deadline: the raw wait status (so WCOREDUMP is visible), and whether the
    deadline passed (the program is then killed and reaped)."""
    deadline = time.monotonic() + timeout_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return status, False
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return os.waitpid(pid, 0)[1], True
        time.sleep(0.002)


def _limits_script(stack_limit_bytes: int | None) -> str:
    """A shell line that sets the child's limits, then execs the program (same pid, same argv,
    so the core's psargs and comm are the program's).  A shell rather than a Python preexec_fn:
    that would run Python between fork and exec, which can deadlock when another thread of the
    caller (DuckDB's pool, say) held a lock at fork time; and raising the soft limit to the hard
    one works without privilege where setting `unlimited` does not."""
    script = 'ulimit -S -c "$(ulimit -H -c)"'
    if stack_limit_bytes is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_STACK)
        limit = (
            stack_limit_bytes if hard == resource.RLIM_INFINITY else min(stack_limit_bytes, hard)
        )
        script += f" && ulimit -S -s {limit // 1024}"
    return script + ' && exec "$@"'


def crash(
    argv: Sequence[str | Path],
    workdir: Path,
    *,
    env: Mapping[str, str] | None = None,
    stack_limit_bytes: int | None = None,
    timeout_s: float = 30.0,
) -> Crash:
    """Run `argv` in `workdir` with core dumps allowed, and return what it left behind.

    `workdir` is created if needed and must hold no core yet (the core is recognised as the one
    core file in it).  `env` replaces the environment (None inherits this process's);
    `stack_limit_bytes` pins the soft RLIMIT_STACK, which bounds the stack in the core.  A
    program still running after `timeout_s` seconds is killed and CrasherError raised.  Whether
    it crashed as it should is the caller's to ask (`Crash.require_core`).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    stale = _find_core(workdir, 0)
    if stale is not None:
        raise CrasherError(f"{workdir} already holds a core ({stale.name}); use a fresh directory")
    args = tuple(str(a) for a in argv)
    stderr_path = workdir / STDERR_FILE
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", _limits_script(stack_limit_bytes), "crash-limits", *args],
            cwd=workdir,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        # Our own waitpid, not Popen.wait(): it keeps the raw status, whose WCOREDUMP bit says
        # whether the kernel wrote a core.  Tell Popen the exit code so it does not wait again.
        status, timed_out = _wait(proc.pid, timeout_s)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if timed_out:
        raise CrasherError(f"{args[0]} (pid {proc.pid}) still running after {timeout_s} s; killed")
    return Crash(
        argv=args,
        workdir=workdir,
        pid=proc.pid,
        status=status,
        core=_find_core(workdir, proc.pid),
        stderr=stderr_path.read_text(errors="replace"),
    )
