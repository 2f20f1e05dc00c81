"""Build and run the programs under tests/data/crashers that crash on purpose, and collect the
real core dumps the kernel writes for them.

Each crasher is a tiny C (or C + assembly) program named after its crash; tests/data/crashers
holds the sources and each source's header comment documents the exact crash state.  Before
crashing, a program appends `key=value` lines to the file named by $CRASHER_INFO (pid, tid, the
address it is about to fault on, ...), which `CrashResult.info` returns.

The kernel writes the core only if RLIMIT_CORE allows it, so the child raises its own soft limit
(a `/bin/sh` wrapper that execs the crasher, leaving the test process unchanged) and pins
RLIMIT_STACK to 8 MiB so the stack_overflow core stays about 8 MiB whatever the caller's
`ulimit -s`.  With the usual
core_pattern `core` the file is `core` in the crasher's cwd, or `core.PID` when
kernel.core_uses_pid is 1; any plain-name pattern works because the core is found by content (the
one ET_CORE ELF file the run left in its fresh working directory).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data"
CRASHERS_DIR = DATA_DIR / "crashers"
GDB_FACTS_SCRIPT = DATA_DIR / "gdb_facts.py"
SHARED_HEADER = "crasher.h"
CC = "gcc"
# -O0 with frame pointers keeps every documented frame (return_to_null relies on %rbp+8 being
# the return address); -pthread only matters for thread_crash but is harmless elsewhere.
CFLAGS = ("-g", "-O0", "-fno-omit-frame-pointer", "-Wall", "-Wextra", "-pthread")
STACK_LIMIT_BYTES = 8 * 1024 * 1024
UNSUPPORTED_EXIT = 77  # a crasher exits with this when the kernel cannot produce its crash
INFO_ENV = "CRASHER_INFO"
RUN_TIMEOUT_S = 30.0
# Where kernel_core_support() looks by default; tests of the skip logic point it at a fake tree.
PROC_ROOT = Path("/proc")

ET_CORE = 4
EM_X86_64 = 62


@dataclass(frozen=True)
class Crasher:
    """One crashing program: its sources (relative to CRASHERS_DIR) and the signal it dies of."""

    name: str
    sources: tuple[str, ...]
    signal: signal.Signals
    summary: str
    # True when some kernels cannot produce this crash (the program then exits 77).
    optional: bool = False


def _c(name: str, sig: signal.Signals, summary: str) -> Crasher:
    return Crasher(name, (f"{name}.c",), sig, summary)


SIGSEGV, SIGBUS = signal.Signals.SIGSEGV, signal.Signals.SIGBUS
CRASHERS: dict[str, Crasher] = {
    c.name: c
    for c in (
        _c("null_deref", SIGSEGV, "store through NULL in crash_null_deref()"),
        _c("abort", signal.Signals.SIGABRT, "abort()"),
        _c("sigfpe", signal.Signals.SIGFPE, "integer divide by zero"),
        _c("sigill", signal.Signals.SIGILL, "ud2"),
        _c("sigbus", SIGBUS, "read a shared mapping of a file truncated to 0 (BUS_ADRERR)"),
        _c("stack_overflow", SIGSEGV, "unbounded recursion"),
        _c("stack_overflow_call", SIGSEGV, "recursion by bare calls: sp stays inside the stack"),
        _c("thread_crash", SIGSEGV, "second of two workers null-derefs in crash_in_thread()"),
        _c("jump_nonexec", SIGSEGV, "call into a PROT_READ|PROT_WRITE page"),
        _c("call_null_fp", SIGSEGV, "call through a NULL function pointer"),
        _c("return_to_null", SIGSEGV, "saved return address overwritten with 0"),
        Crasher(
            "ret_sp_off_by_8",
            ("ret_sp_off_by_8.c", "ret_sp_off_by_8_ret.S"),
            SIGSEGV,
            "ret with %rsp 8 bytes low pops the stale saved %rbp",
        ),
        _c("bit_flip", SIGSEGV, "load through a heap pointer with bit 33 flipped"),
        _c("noncanonical", SIGSEGV, "load through a heap pointer with bit 63 flipped"),
        _c("signal_race", SIGSEGV, "null deref inside a SIGUSR1 handler"),
        _c("dead_signal_frame", SIGSEGV, "null deref after a handler returned"),
        Crasher(
            "mce_sigbus",
            ("mce_sigbus.c",),
            SIGBUS,
            "touch a page poisoned with MADV_HWPOISON (BUS_MCEERR_AR)",
            optional=True,
        ),
    )
}


class CrasherError(RuntimeError):
    """A crasher could not be built, or did not crash the way it must."""


@dataclass(frozen=True)
class CrashResult:
    """What one run of a crasher left behind.

    `signal` is the signal that killed it (None if it exited), `core` the core file (None when the
    crasher reported the crash unsupported here), `info` the lines it wrote to $CRASHER_INFO.
    """

    name: str
    exe: Path
    core: Path | None
    pid: int
    signal: signal.Signals | None
    core_dumped: bool
    exit_code: int | None
    workdir: Path
    stderr: str
    info: Mapping[str, str] = field(default_factory=dict)

    @property
    def unsupported(self) -> str | None:
        """Why this kernel cannot produce the crash, or None if it crashed."""
        if self.exit_code != UNSUPPORTED_EXIT:
            return None
        return self.info.get("unsupported", "crasher reported the crash unsupported")

    @property
    def crash_tid(self) -> int:
        """Thread id of the crashing thread (== pid for single-threaded crashers)."""
        return self.info_int("crash_tid") if "crash_tid" in self.info else self.info_int("tid")

    def info_int(self, key: str) -> int:
        """An integer the crasher noted (hex `0x…` or decimal)."""
        try:
            return int(self.info[key], 0)
        except KeyError:
            raise CrasherError(
                f"{self.name}: crasher noted no {key!r}: {dict(self.info)}"
            ) from None


def kernel_core_support(proc_root: Path | None = None) -> tuple[bool, str]:
    """Whether a crashing child here gets a core file in its own cwd, and if not, why not.

    True only when kernel.core_pattern is a plain file name (no pipe to a handler such as
    systemd-coredump or apport, no directory) and the hard RLIMIT_CORE lets a child raise its
    soft limit.
    """
    pattern_file = (PROC_ROOT if proc_root is None else proc_root) / "sys/kernel/core_pattern"
    try:
        pattern = pattern_file.read_text().strip()
    except OSError as exc:
        return False, f"cannot read {pattern_file}: {exc}"
    if not pattern:
        return False, f"{pattern_file} is empty: the kernel writes no core files"
    if pattern.startswith("|"):
        return False, (
            f"{pattern_file} pipes cores to a handler ({pattern!r}), not to a file in the "
            "crashing process's cwd; set it to 'core' to run these tests"
        )
    if "/" in pattern:
        return False, (
            f"{pattern_file} writes cores into a fixed path ({pattern!r}), not the crashing "
            "process's cwd; set it to 'core' to run these tests"
        )
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if hard == 0:
        return False, "hard RLIMIT_CORE is 0: no process here may write a core file"
    return True, f"core_pattern is the plain file name {pattern!r}"


@functools.cache
def _compiler_identity() -> str:
    cc = shutil.which(CC)
    if cc is None:
        raise CrasherError(f"{CC} not found on PATH: it builds the crashing programs")
    out = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
    return f"{cc}\n{out.splitlines()[0]}"


def _source_key(crasher: Crasher) -> str:
    digest = hashlib.sha256()
    digest.update(_compiler_identity().encode())
    digest.update("\0".join(CFLAGS).encode())
    for rel in (*crasher.sources, SHARED_HEADER):
        digest.update(rel.encode() + b"\0")
        digest.update((CRASHERS_DIR / rel).read_bytes())
    return digest.hexdigest()[:16]


def crasher(name: str) -> Crasher:
    """The crasher called `name`, or CrasherError naming the known ones."""
    try:
        return CRASHERS[name]
    except KeyError:
        raise CrasherError(f"no crasher {name!r}; known: {', '.join(CRASHERS)}") from None


def build_crasher(name: str, build_dir: Path) -> Path:
    """Compile crasher `name` into build_dir and return the executable's path.

    Cached by a hash of compiler, flags and sources: a rebuild happens only when one changed.
    The executable is named `name` so the core's comm (pr_fname) is the crash's name
    (truncated by the kernel to 15 bytes: dead_signal_frame becomes dead_signal_fra).
    """
    spec = crasher(name)
    out_dir = build_dir / _source_key(spec)
    exe = out_dir / name
    if exe.is_file():
        return exe
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{name}.{os.getpid()}.tmp"
    cmd = [CC, *CFLAGS, "-o", str(tmp), *(str(CRASHERS_DIR / s) for s in spec.sources)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CrasherError(f"building {name} failed ({' '.join(cmd)}):\n{proc.stderr}")
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
    preferred = [workdir / "core", workdir / f"core.{pid}"]
    for path in preferred:
        if is_core_file(path):
            return path
    others = sorted(p for p in workdir.iterdir() if p.is_file() and is_core_file(p))
    if len(others) > 1:
        raise CrasherError(f"more than one core file in {workdir}: {others}")
    return others[0] if others else None


# Raises the soft RLIMIT_CORE to the hard limit and sets the soft RLIMIT_STACK, then execs the
# crasher (same pid, same argv[0], so the core's psargs and comm are the crasher's).  A shell
# rather than a Python preexec_fn: that would run Python between fork and exec, which can
# deadlock when another thread of the test process held a lock at fork time.
_LIMITS_WRAPPER = 'ulimit -S -c "$(ulimit -H -c)" && ulimit -S -s "$1" && exec "$2"'


def _stack_limit_kib() -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_STACK)
    limit = STACK_LIMIT_BYTES if hard == resource.RLIM_INFINITY else min(STACK_LIMIT_BYTES, hard)
    return limit // 1024


def _read_info(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    info: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            info[key] = value
    return info


def _wait(pid: int, timeout_s: float) -> int:
    """waitpid with a deadline; returns the raw wait status (so WCOREDUMP is visible)."""
    deadline = time.monotonic() + timeout_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise CrasherError(f"crasher pid {pid} still running after {timeout_s} s; killed")
        time.sleep(0.002)


def run_crasher(
    name: str,
    workdir: Path,
    env: Mapping[str, str] | None = None,
    build_dir: Path | None = None,
) -> CrashResult:
    """Build (if needed) and run crasher `name` in `workdir`, and return what it left behind.

    `workdir` must hold no core file yet: the core is recognised as the one core file in it.
    `env` adds to a minimal environment (PATH, LC_ALL=C, CRASHER_INFO) so stack contents do not
    depend on the caller's.  `build_dir` defaults to `workdir/bin`.
    Raises CrasherError when the program does not crash as specified or leaves no core.
    """
    spec = crasher(name)
    workdir.mkdir(parents=True, exist_ok=True)
    stale = _find_core(workdir, 0)
    if stale is not None:
        raise CrasherError(f"{workdir} already holds a core ({stale.name}); use a fresh directory")
    exe = build_crasher(name, build_dir if build_dir is not None else workdir / "bin")
    info_path = workdir / "crasher-info.txt"
    info_path.unlink(missing_ok=True)
    stderr_path = workdir / "crasher-stderr.txt"
    child_env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", INFO_ENV: str(info_path)}
    child_env.update(env or {})
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", _LIMITS_WRAPPER, "crasher-limits", str(_stack_limit_kib()), str(exe)],
            cwd=workdir,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        # Our own waitpid, not Popen.wait(): it keeps the raw status, whose WCOREDUMP bit says
        # whether the kernel wrote a core.  Tell Popen the exit code so it does not wait again.
        status = _wait(proc.pid, RUN_TIMEOUT_S)
        proc.returncode = os.waitstatus_to_exitcode(status)
    info = _read_info(info_path)
    stderr_text = stderr_path.read_text(errors="replace")
    killed_by = signal.Signals(os.WTERMSIG(status)) if os.WIFSIGNALED(status) else None
    exit_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    core = _find_core(workdir, proc.pid)
    result = CrashResult(
        name=name,
        exe=exe,
        core=core,
        pid=proc.pid,
        signal=killed_by,
        core_dumped=os.WIFSIGNALED(status) and os.WCOREDUMP(status),
        exit_code=exit_code,
        workdir=workdir,
        stderr=stderr_text,
        info=info,
    )
    if result.unsupported is not None:
        return result
    if killed_by is None:
        raise CrasherError(f"{name} exited with {exit_code} instead of crashing: {stderr_text}")
    if killed_by != spec.signal:
        raise CrasherError(f"{name} died of {killed_by.name}, expected {spec.signal.name}")
    if core is None:
        _, reason = kernel_core_support()
        raise CrasherError(
            f"{name} died of {killed_by.name} but left no core in {workdir} "
            f"(kernel reported core dumped: {result.core_dumped}; {reason})"
        )
    return result


# --- Independent oracles: what gdb and elfutils read from a core (no corecensus code). ---


def gdb_facts(exe: Path, core: Path, addrs: Iterable[int] = ()) -> dict[str, Any]:
    """Run tests/data/gdb_facts.py in gdb on (exe, core); see that script for the keys.

    `addrs` are extra addresses whose 8-byte words gdb reads from the core (`facts["words"]`,
    keyed by the decimal address).
    """
    gdb = shutil.which("gdb")
    if gdb is None:
        raise CrasherError("gdb not found on PATH: it is the oracle for the crash fixtures")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "LC_ALL": "C",
        "GDB_FACTS_EXE": str(exe),
        "GDB_FACTS_CORE": str(core),
        "GDB_FACTS_ADDRS": ",".join(hex(a) for a in addrs),
    }
    cmd = [gdb, "-batch", "-nx", "-iex", "set debuginfod enabled off", "-x", str(GDB_FACTS_SCRIPT)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("GDB_FACTS "):
            facts: dict[str, Any] = json.loads(line.removeprefix("GDB_FACTS "))
            return facts
    raise CrasherError(f"gdb printed no facts for {core}:\n{proc.stdout}\n{proc.stderr}")


@dataclass(frozen=True)
class CoreNotes:
    """The notes of a core as elfutils' eu-readelf decodes them.

    `prstatus_pids` are NT_PRSTATUS pr_pid values (thread ids) in file order: the kernel writes
    the thread that took the signal first.  `psargs` is pr_psargs verbatim (the kernel turns the
    argv NULs into spaces, so it ends with one).  `files` are NT_FILE paths in order.
    """

    note_types: tuple[str, ...]
    prstatus_pids: tuple[int, ...]
    cursig: int
    comm: str
    psargs: str
    pid: int
    si_signo: int | None
    si_code: int | None
    files: tuple[str, ...]


_NOTE_HEADER = re.compile(r"^  (\S+)\s+\d+\s+(.+?)\s*$")


def readelf_notes(core: Path) -> CoreNotes:
    """Decode the notes of `core` with `eu-readelf -n` (an oracle independent of corecensus)."""
    tool = shutil.which("eu-readelf")
    if tool is None:
        raise CrasherError("eu-readelf (elfutils) not found on PATH")
    proc = subprocess.run([tool, "-n", str(core)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CrasherError(f"eu-readelf -n {core} failed: {proc.stderr}")
    types: list[str] = []
    prstatus_pids: list[int] = []
    cursig: list[int] = []
    fields: dict[str, str] = {}
    files: list[str] = []
    current = ""
    for line in proc.stdout.splitlines():
        header = _NOTE_HEADER.match(line)
        if header and line.startswith("  ") and not line.startswith("   "):
            current = header.group(2)
            types.append(current)
            continue
        body = line.strip()
        if current == "PRSTATUS":
            if m := re.search(r"cursig: (\d+)", body):
                cursig.append(int(m.group(1)))
            if body.startswith("pid: "):
                prstatus_pids.append(int(body.split(",")[0].removeprefix("pid: ")))
        elif current == "PRPSINFO":
            if m := re.search(r"\bpid: (\d+)", body):
                fields["pid"] = m.group(1)
            # eu-readelf wraps long lines, so fname and psargs share a line or not; psargs is
            # last and keeps its trailing space.
            if m := re.match(r"fname: (.*?)(?:, psargs: |$)", body):
                fields["comm"] = m.group(1)
            if (at := line.find("psargs: ")) >= 0:
                fields["psargs"] = line[at + len("psargs: ") :]
        elif current == "SIGINFO":
            if m := re.match(r"si_signo: (\d+), si_errno: -?\d+, si_code: (-?\d+)", body):
                fields["si_signo"], fields["si_code"] = m.group(1), m.group(2)
        elif current == "FILE" and (
            m := re.match(r"[0-9a-f]+-[0-9a-f]+ [0-9a-f]+ \d+\s+(.*)", body)
        ):
            files.append(m.group(1))
    if not prstatus_pids or "comm" not in fields:
        raise CrasherError(f"eu-readelf found no NT_PRSTATUS/NT_PRPSINFO in {core}")
    return CoreNotes(
        note_types=tuple(types),
        prstatus_pids=tuple(prstatus_pids),
        cursig=cursig[0],
        comm=fields["comm"],
        psargs=fields["psargs"],
        pid=int(fields["pid"]),
        si_signo=int(fields["si_signo"]) if "si_signo" in fields else None,
        si_code=int(fields["si_code"]) if "si_code" in fields else None,
        files=tuple(files),
    )


def build_id(exe: Path) -> str | None:
    """The GNU build-id of `exe` as hex, read with binutils' readelf, or None if it has none."""
    proc = subprocess.run(["readelf", "-n", str(exe)], capture_output=True, text=True, check=True)
    match = re.search(r"Build ID: ([0-9a-f]+)", proc.stdout)
    return match.group(1) if match else None
