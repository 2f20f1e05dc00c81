"""Build and run the programs under tests/data/crashers that crash on purpose, and collect the
real core dumps the kernel writes for them.

Each crasher is a tiny C (or C + assembly) program named after its crash; tests/data/crashers
holds the sources and each source's header comment documents the exact crash state.  Before
crashing, a program appends `key=value` lines to the file named by $CRASHER_INFO (pid, tid, the
address it is about to fault on, ...), which `CrashResult.info` returns.

Building, raising RLIMIT_CORE in the child, checking core_pattern and finding the core are the
package's shared harness (corecensus.demo.kernel_cores, also used by the demo and the
benchmarks).  Here: the catalogue of crashers, what each must die of, RLIMIT_STACK pinned to
8 MiB so the stack_overflow core stays about 8 MiB whatever the caller's `ulimit -s`, a minimal
environment so stack contents do not depend on the caller's, and the independent oracles (gdb,
elfutils, binutils) that check the cores without corecensus code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corecensus.demo.kernel_cores import (
    CFLAGS,
    EM_X86_64,
    ET_CORE,
    CrasherError,
    build_program,
    crash,
    is_core_file,
    kernel_core_problem,
)

__all__ = [
    "CRASHERS",
    "EM_X86_64",
    "ET_CORE",
    "INFO_ENV",
    "CoreNotes",
    "CrashResult",
    "Crasher",
    "CrasherError",
    "build_crasher",
    "build_id",
    "crasher",
    "gdb_facts",
    "is_core_file",
    "kernel_core_support",
    "readelf_notes",
    "run_crasher",
]

DATA_DIR = Path(__file__).resolve().parent / "data"
CRASHERS_DIR = DATA_DIR / "crashers"
GDB_FACTS_SCRIPT = DATA_DIR / "gdb_facts.py"
SHARED_HEADER = "crasher.h"
STACK_LIMIT_BYTES = 8 * 1024 * 1024
UNSUPPORTED_EXIT = 77  # a crasher exits with this when the kernel cannot produce its crash
INFO_ENV = "CRASHER_INFO"
RUN_TIMEOUT_S = 30.0
# Where kernel_core_support() looks by default; tests of the skip logic point it at a fake tree.
PROC_ROOT = Path("/proc")


@dataclass(frozen=True)
class Crasher:
    """One crashing program: its sources (relative to CRASHERS_DIR) and the signal it dies of."""

    name: str
    sources: tuple[str, ...]
    signal: signal.Signals
    summary: str
    # True when some kernels cannot produce this crash (the program then exits 77).
    optional: bool = False
    # Compiler/linker flags after CFLAGS (e.g. -Wl,-z,execstack).
    flags: tuple[str, ...] = ()


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
        _c("stale_return", SIGSEGV, "return to NULL with a stale return address above rsp"),
        Crasher(
            "ret_sp_off_by_8",
            ("ret_sp_off_by_8.c", "ret_sp_off_by_8_ret.S"),
            SIGSEGV,
            "ret with %rsp 8 bytes low pops the stale saved %rbp",
        ),
        _c("bit_flip", SIGSEGV, "load through a heap pointer with bit 33 flipped"),
        _c("noncanonical", SIGSEGV, "load through a heap pointer with bit 63 flipped"),
        _c("signal_race", SIGSEGV, "null deref inside a SIGUSR1 handler"),
        Crasher(
            "execstack_main",
            ("execstack_main.c",),
            SIGSEGV,
            "null deref on an executable (RWX) main stack",
            flags=("-Wl,-z,execstack",),
        ),
        Crasher(
            "execstack_thread",
            ("execstack_thread.c",),
            SIGSEGV,
            "null deref on an executable (RWX) thread stack with a guard page",
            flags=("-Wl,-z,execstack",),
        ),
        _c("dead_signal_frame", SIGSEGV, "null deref after a handler returned"),
        _c("vdso_time", SIGSEGV, "time() with a bad pointer faults inside __vdso_time"),
        Crasher(
            "mce_sigbus",
            ("mce_sigbus.c",),
            SIGBUS,
            "touch a page poisoned with MADV_HWPOISON (BUS_MCEERR_AR)",
            optional=True,
        ),
    )
}


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
    """Whether a crashing child here gets a core file in its own cwd, and if not, why not
    (`PROC_ROOT` by default)."""
    problem = kernel_core_problem(PROC_ROOT if proc_root is None else proc_root)
    if problem is not None:
        return False, problem
    return True, "core_pattern is a plain file name"


def crasher(name: str) -> Crasher:
    """The crasher called `name`, or CrasherError naming the known ones."""
    try:
        return CRASHERS[name]
    except KeyError:
        raise CrasherError(f"no crasher {name!r}; known: {', '.join(CRASHERS)}") from None


def build_crasher(name: str, build_dir: Path) -> Path:
    """Compile crasher `name` under build_dir and return the executable's path (cached by
    compiler, flags and sources; dead_signal_frame's comm is cut to dead_signal_fra)."""
    spec = crasher(name)
    return build_program(
        name,
        [CRASHERS_DIR / s for s in spec.sources],
        build_dir,
        headers=[CRASHERS_DIR / SHARED_HEADER],
        flags=(*CFLAGS, *spec.flags),
    )


def _read_info(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    info: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            info[key] = value
    return info


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
    exe = build_crasher(name, build_dir if build_dir is not None else workdir / "bin")
    info_path = workdir / "crasher-info.txt"
    info_path.unlink(missing_ok=True)
    child_env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", INFO_ENV: str(info_path)}
    child_env.update(env or {})
    run = crash(
        [exe],
        workdir,
        env=child_env,
        stack_limit_bytes=STACK_LIMIT_BYTES,
        timeout_s=RUN_TIMEOUT_S,
    )
    result = CrashResult(
        name=name,
        exe=exe,
        core=run.core,
        pid=run.pid,
        signal=run.signal,
        core_dumped=run.core_dumped,
        exit_code=run.exit_code,
        workdir=workdir,
        stderr=run.stderr,
        info=_read_info(info_path),
    )
    if result.unsupported is None:
        run.require_core(name, spec.signal)
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
