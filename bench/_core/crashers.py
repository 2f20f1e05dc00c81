"""Real core dumps for the benchmarks, built at run time (no committed binaries).

Each crasher is a small C program compiled and run with RLIMIT_CORE raised by the package's
shared harness (corecensus.demo.kernel_cores, also used by the tests and the demo), so the
kernel writes a genuine core into a private directory. One of them maps 4 GiB of anonymous memory
and touches a few pages: the kernel skips pages that were never faulted in (``dump_user_range``
only writes pages ``get_dump_page`` returns, and seeks over the rest), so its core is ~4 GiB long
but sparse on disk.

Also here: a tiny C launcher that reports a child's wall time and peak RSS. A child's
``ru_maxrss`` starts at its *parent's* RSS, because ``exec`` folds the replaced address space's
high-water mark into it (``setmax_mm_hiwater_rss`` in ``exec_mmap``, fs/exec.c); spawning from
the benchmark's own large Python process would therefore report the benchmark's RSS, not the
child's. The launcher is a few hundred KiB, so what it reports is the child's own peak.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from corecensus.demo.kernel_cores import CrasherError, build_program, crash, kernel_core_problem

__all__ = [
    "CRASHERS",
    "Core",
    "Crasher",
    "CrasherError",
    "ProcRun",
    "build_launcher",
    "check_core_pattern",
    "compress_zstd",
    "make_core",
    "run_measured",
]

GIB = 1 << 30
# The flags the published figures were measured with (-g so every tool under test, drgn,
# eu-stack and gdb, gets the same DWARF; -O0 keeps the frames).
CFLAGS = ("-g", "-O0", "-pthread")
RUN_TIMEOUT_S = 120.0  # the 4 GiB sparse core takes a while to write on a slow disk


@dataclass(frozen=True)
class Crasher:
    """A C program that crashes on purpose; ``function`` must appear in any correct backtrace."""

    name: str
    source: str
    signal: signal.Signals
    function: str
    description: str


CRASHERS: tuple[Crasher, ...] = (
    Crasher(
        "null_deref",
        r"""
#include <stdlib.h>
#include <string.h>
/* 1 MiB of non-zero heap makes this the issue's "1 MB core" with real (non-sparse) data. */
static volatile int *target;
char *ballast;
__attribute__((noinline)) static void crash_null_deref(void) { *target = 42; }
int main(void) {
    ballast = malloc(1 << 20);
    if (ballast) memset(ballast, 0xa5, 1 << 20);
    crash_null_deref();
    return 0;
}
""",
        signal.SIGSEGV,
        "crash_null_deref",
        "store through NULL after filling 1 MiB of heap",
    ),
    Crasher(
        "abort_thread",
        r"""
#include <pthread.h>
#include <stdlib.h>
__attribute__((noinline)) static void crash_abort_in_thread(void) { abort(); }
static void *worker(void *arg) { (void)arg; crash_abort_in_thread(); return NULL; }
int main(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0) return 2;
    pthread_join(t, NULL);
    return 0;
}
""",
        signal.SIGABRT,
        "crash_abort_in_thread",
        "abort() in a second thread (2 threads)",
    ),
    Crasher(
        "deep_recursion",
        r"""
/* The "+ 1" keeps every level a real frame (no tail call), even if optimized. */
__attribute__((noinline)) static int recurse(int depth, volatile int *target) {
    if (depth == 0) return *target;
    return recurse(depth - 1, target) + 1;
}
int main(void) { return recurse(50, (volatile int *)0); }
""",
        signal.SIGSEGV,
        "recurse",
        "50 recursive frames, then a NULL load",
    ),
    Crasher(
        "sparse_4g",
        r"""
#include <stdio.h>
#include <sys/mman.h>
#define SIZE (4ULL << 30)
#define TOUCHES 16
__attribute__((noinline)) static void crash_after_touching(volatile char *base) {
    for (unsigned long long i = 0; i < TOUCHES; i++)
        base[(SIZE / TOUCHES) * i + 123] = (char)(i + 1);
    *(volatile int *)0 = 1;
}
int main(void) {
    void *m = mmap(NULL, SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) { perror("mmap 4 GiB"); return 2; }
    /* 4 KiB pages only: a transparent huge page would put 2 MiB of real zeros in the core. */
    madvise(m, SIZE, MADV_NOHUGEPAGE);
    crash_after_touching(m);
    return 0;
}
""",
        signal.SIGSEGV,
        "crash_after_touching",
        "4 GiB anonymous mapping, 16 pages touched, NULL store",
    ),
)


@dataclass(frozen=True)
class Core:
    """A core dump on disk and the program that wrote it."""

    name: str
    crasher: Crasher
    exe: Path
    path: Path
    apparent_bytes: int
    allocated_bytes: int
    compressed_from: Path | None = None

    @property
    def sparse(self) -> bool:
        return self.allocated_bytes < self.apparent_bytes // 2


_LAUNCHER_C = r"""
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/wait.h>
/* launcher REPORT CMD ARGS...: run CMD, write "wall_ns cpu_ns maxrss_kib wait_status" to REPORT. */
int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: launcher REPORT CMD...\n"); return 2; }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return 2; }
    if (pid == 0) { execvp(argv[2], argv + 2); perror(argv[2]); _exit(127); }
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) { perror("wait4"); return 2; }
    clock_gettime(CLOCK_MONOTONIC, &b);
    FILE *f = fopen(argv[1], "w");
    if (!f) { perror(argv[1]); return 2; }
    long long cpu = (long long)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL
                    + (long long)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL;
    fprintf(f, "%lld %lld %ld %d\n",
            (long long)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec),
            cpu, ru.ru_maxrss, status);
    fclose(f);
    return 0;
}
"""


def check_core_pattern(proc_root: Path = Path("/proc")) -> str | None:
    """A reason this machine will not write core files into the cwd, or None if it will."""
    problem = kernel_core_problem(proc_root)
    if problem is None:
        return None
    return (
        f"{problem}; this benchmark needs the kernel to write plain core files into the "
        "crashing process's directory. As root, `echo core > /proc/sys/kernel/core_pattern` "
        "(note the old value and restore it afterwards), then run the benchmark again."
    )


def make_core(crasher: Crasher, workdir: Path) -> Core:
    """Compile ``crasher`` and run it until the kernel writes its core; return that core."""
    d = workdir / crasher.name
    d.mkdir(parents=True, exist_ok=True)
    src = d / f"{crasher.name}.c"
    src.write_text(crasher.source)
    exe = build_program(crasher.name, [src], workdir / "build", flags=CFLAGS)
    run = crash([exe], d, timeout_s=RUN_TIMEOUT_S)
    core = run.require_core(crasher.name, crasher.signal)
    final = d / "core"
    if core != final:
        core.rename(final)
    st = final.stat()
    return Core(crasher.name, crasher, exe, final, st.st_size, st.st_blocks * 512)


def compress_zstd(core: Core, level: int = 3) -> Core:
    """A ``.zst`` copy of ``core``, as systemd-coredump stores cores (zstd, default level 3).

    Holes are fed to the compressor from a zero buffer instead of being read: reading 4 GiB of
    holes through the page cache costs seconds of kernel time and says nothing about corecensus.
    """
    import zstandard

    out = core.path.with_name(core.path.name + ".zst")
    cctx = zstandard.ZstdCompressor(level=level, threads=-1)
    zeros = memoryview(bytes(_CHUNK))
    with (
        open(core.path, "rb") as fin,
        open(out, "wb") as fout,
        cctx.stream_writer(fout, closefd=False) as writer,
    ):
        fd = fin.fileno()
        for start, end, is_data in _extents(fd, core.apparent_bytes):
            pos = start
            while pos < end:
                n = min(_CHUNK, end - pos)
                writer.write(os.pread(fd, n, pos) if is_data else zeros[:n])
                pos += n
    st = out.stat()
    return Core(
        core.name + ".zst",
        core.crasher,
        core.exe,
        out,
        st.st_size,
        st.st_blocks * 512,
        compressed_from=core.path,
    )


_CHUNK = 4 << 20


def _extents(fd: int, size: int) -> list[tuple[int, int, bool]]:
    """(start, end, is_data) runs covering ``[0, size)``, from SEEK_DATA/SEEK_HOLE."""
    out: list[tuple[int, int, bool]] = []
    pos = 0
    while pos < size:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole remains
            data = size
        if data > pos:
            out.append((pos, data, False))
        if data >= size:
            break
        hole = os.lseek(fd, data, os.SEEK_HOLE)
        out.append((data, hole, True))
        pos = hole
    return out


def build_launcher(workdir: Path) -> Path:
    src = workdir / "launcher.c"
    src.write_text(_LAUNCHER_C)
    return build_program("launcher", [src], workdir / "build", flags=("-O2",))


@dataclass(frozen=True)
class ProcRun:
    """One measured subprocess: wall and CPU (user+sys) time (s), its own peak RSS (KiB)."""

    wall_s: float
    cpu_s: float
    maxrss_kib: int
    returncode: int
    stdout: str
    stderr: str


def run_measured(
    launcher: Path, cmd: Sequence[str], env: Mapping[str, str], scratch: Path
) -> ProcRun:
    """Run ``cmd`` under the launcher; wall time covers fork to reap, nothing of Python's."""
    report = scratch / "launcher.report"
    out_path = scratch / "launcher.stdout"
    err_path = scratch / "launcher.stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        done = subprocess.run(
            [str(launcher), str(report), *cmd],
            stdout=out,
            stderr=err,
            env=dict(env),
            check=False,
            timeout=600,
        )
    if done.returncode != 0:
        raise RuntimeError(f"launcher failed for {cmd}: {err_path.read_text(errors='replace')}")
    wall_ns, cpu_ns, maxrss, status = (int(x) for x in report.read_text().split())
    return ProcRun(
        wall_ns / 1e9,
        cpu_ns / 1e9,
        maxrss,
        os.waitstatus_to_exitcode(status),
        out_path.read_text(errors="replace"),
        err_path.read_text(errors="replace"),
    )
