"""Real crashes for the demo: compile ``ledger`` with the machine's compiler and let the kernel
write its core dumps; or, where the kernel sends cores elsewhere, use the shipped samples."""

from __future__ import annotations

import struct
from importlib import resources
from pathlib import Path

from corecensus.demo.kernel_cores import build_program, crash

__all__ = ["build_ledger", "crash_once", "sample_core", "sample_executable"]

SOURCES = ("ledger.c", "ret_off_by_8.S")


def build_ledger(workdir: Path) -> Path:
    """Compile the demo program (cached by compiler, flags and sources); return the executable."""
    pkg = resources.files("corecensus.demo") / "programs"
    src_dir = workdir / "src"
    src_dir.mkdir(parents=True, exist_ok=True)
    # Copied out of the package: it may be installed where the compiler cannot read it (a zip).
    for name in SOURCES:
        (src_dir / name).write_bytes((pkg / name).read_bytes())
    return build_program("ledger", [src_dir / n for n in SOURCES], workdir / "bin")


def crash_once(exe: Path, mode: str, rundir: Path) -> Path:
    """Run ``exe mode`` in the fresh ``rundir`` with core dumps allowed; return the kernel's core
    file."""
    return crash([exe.resolve(), mode], rundir).require_core(f"ledger {mode}")


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
