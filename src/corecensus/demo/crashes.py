"""Real crashes for the demo: compile ``ledger`` with the machine's compiler and let the kernel
write its core dumps; or, where the kernel sends cores elsewhere, use the shipped samples."""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
from importlib import resources
from pathlib import Path

from corecensus.errors import CorecensusError

__all__ = ["DemoError", "build_ledger", "core_pattern_problem", "crash_once", "sample_core"]

SOURCES = ("ledger.c", "ret_off_by_8.S")


class DemoError(CorecensusError):
    """The demo could not build or run its crashing program."""


def core_pattern_problem(proc: Path = Path("/proc")) -> str | None:
    """Why the kernel will not write a core into the crashing program's directory, or None."""
    try:
        pattern = (proc / "sys/kernel/core_pattern").read_text().strip()
    except OSError as exc:
        return f"cannot read core_pattern: {exc.strerror}"
    if pattern.startswith("|"):
        return f"kernel.core_pattern pipes cores to a program ({pattern.split()[0][1:]})"
    if "/" in pattern:
        return f"kernel.core_pattern writes cores to a fixed place ({pattern})"
    return None


def build_ledger(workdir: Path) -> Path:
    """Compile the demo program (cached by source hash) and return the executable."""
    pkg = resources.files("corecensus.demo") / "programs"
    digest = hashlib.sha256()
    src_dir = workdir / "src"
    src_dir.mkdir(parents=True, exist_ok=True)
    for name in SOURCES:
        data = (pkg / name).read_bytes()
        digest.update(data)
        (src_dir / name).write_bytes(data)
    exe = workdir / "bin" / f"ledger-{digest.hexdigest()[:12]}" / "ledger"
    if exe.exists():
        return exe
    exe.parent.mkdir(parents=True, exist_ok=True)
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise DemoError("no C compiler (gcc) found; install gcc or run ./dev demo")
    cmd = [cc, "-g", "-O0", "-fno-omit-frame-pointer", "-o", str(exe)] + [
        str(src_dir / n) for n in SOURCES
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise DemoError(f"compiling the demo program failed:\n{proc.stderr.strip()}")
    return exe


def crash_once(exe: Path, mode: str, rundir: Path) -> Path:
    """Run ``exe mode`` in ``rundir`` with core dumps enabled; return the kernel's core file."""
    rundir.mkdir(parents=True, exist_ok=True)
    exe = exe.resolve()
    # ulimit in a shell that then execs the program: the core limit is set in the child alone.
    proc = subprocess.run(
        ["/bin/sh", "-c", 'ulimit -c unlimited && exec "$0" "$1"', str(exe), mode],
        cwd=rundir,
        capture_output=True,
        timeout=30,
    )
    if proc.returncode >= 0:
        raise DemoError(f"ledger {mode} exited with {proc.returncode} instead of crashing")
    cores = [p for p in rundir.iterdir() if p.name == "core" or p.name.startswith("core.")]
    if not cores:
        raise DemoError(
            f"ledger {mode} crashed (signal {-proc.returncode}) but left no core in {rundir}"
        )
    return cores[0]


def sample_core(mode: str, serial: int, dest: Path) -> Path:
    """A shipped sample core of ``mode``, made unique by rewriting its pid to ``serial``.

    The samples are real kernel cores of this program; copies of one core would be the same
    crash (and ingest stores a core once), so each copy gets its own pid in NT_PRSTATUS and
    NT_PRPSINFO, as distinct crashes would have.
    """
    import zstandard

    pkg = resources.files("corecensus.demo") / "samples"
    data = bytearray(
        zstandard.ZstdDecompressor().decompress(
            (pkg / f"{mode}.core.zst").read_bytes(), max_output_size=64 << 20
        )
    )
    _rewrite_pid(data, 100000 + serial)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(bytes(data))
    return dest


def sample_executable(dest: Path) -> Path:
    pkg = resources.files("corecensus.demo") / "samples"
    dest.mkdir(parents=True, exist_ok=True)
    exe = dest / "ledger"
    exe.write_bytes((pkg / "ledger").read_bytes())
    exe.chmod(0o755)
    return exe


def _rewrite_pid(core: bytearray, pid: int) -> None:
    (phoff,) = struct.unpack_from("<Q", core, 32)
    (phnum,) = struct.unpack_from("<H", core, 56)
    for i in range(phnum):
        ptype, _f, off, _v, _p, filesz = struct.unpack_from("<IIQQQQ", core, phoff + i * 56)
        if ptype != 4:
            continue
        pos = off
        while pos + 12 <= off + filesz:
            namesz, descsz, ntype = struct.unpack_from("<III", core, pos)
            desc = pos + 12 + ((namesz + 3) & ~3)
            if ntype == 1:  # NT_PRSTATUS: pr_pid at 32
                struct.pack_into("<i", core, desc + 32, pid)
            elif ntype == 3:  # NT_PRPSINFO: pr_pid at 24
                struct.pack_into("<i", core, desc + 24, pid)
            pos = (desc + descsz + 3) & ~3
