"""Bad input: truncated, corrupt, zero-length, wrong-architecture and hostile cores.

Every case must end in a record (``unparsed`` or ``partial``) with a clear reason, never an
exception, and must read a bounded amount of data.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard
from coretools import notes, patch_siginfo, phdrs

from corecensus.coredump import inspect_core
from corecensus.model import ParseStatus
from crashers import CrashResult

pytestmark = pytest.mark.kernel_cores


@pytest.fixture()
def core_bytes(kernel_cores: dict[str, CrashResult]) -> bytearray:
    core = kernel_cores["null_deref"].core
    assert core is not None
    return bytearray(core.read_bytes())


def _write(tmp_path: Path, name: str, data: bytes | bytearray) -> Path:
    p = tmp_path / name
    p.write_bytes(bytes(data))
    return p


def test_zero_length(tmp_path: Path) -> None:
    rec = inspect_core(_write(tmp_path, "empty", b""))
    assert rec.status is ParseStatus.UNPARSED
    assert "empty file" in rec.errors[0]


def test_not_elf(tmp_path: Path) -> None:
    rec = inspect_core(_write(tmp_path, "junk", random.Random(4096).randbytes(4096)))
    assert rec.status is ParseStatus.UNPARSED
    assert "not an ELF file" in rec.errors[0]


def test_executable_is_not_a_core(kernel_cores: dict[str, CrashResult]) -> None:
    rec = inspect_core(kernel_cores["null_deref"].exe)
    assert rec.status is ParseStatus.UNPARSED
    assert "not a core dump" in rec.errors[0]


def test_missing_file(tmp_path: Path) -> None:
    rec = inspect_core(tmp_path / "nope")
    assert rec.status is ParseStatus.UNPARSED
    assert "cannot open" in rec.errors[0]


@pytest.mark.parametrize("cut", [63, 100, 1000, 3000])
def test_truncated_heads(tmp_path: Path, core_bytes: bytearray, cut: int) -> None:
    rec = inspect_core(_write(tmp_path, f"cut{cut}", core_bytes[:cut]))
    assert rec.status in (ParseStatus.UNPARSED, ParseStatus.PARTIAL)
    assert rec.errors


def test_truncated_in_the_middle_keeps_registers(tmp_path: Path, core_bytes: bytearray) -> None:
    notes_end = max(n.desc_offset + n.descsz for n in notes(bytes(core_bytes)))
    rec = inspect_core(_write(tmp_path, "half", core_bytes[: notes_end + 8192]))
    assert rec.status is ParseStatus.PARTIAL
    assert rec.registers["rip"] != 0
    assert rec.signal_name == "SIGSEGV"


def test_absurd_note_size(tmp_path: Path, core_bytes: bytearray) -> None:
    first = notes(bytes(core_bytes))[0]
    struct.pack_into("<I", core_bytes, first.header_offset + 4, 0xFFFFFFF0)
    rec = inspect_core(_write(tmp_path, "absurd", core_bytes))
    assert rec.status in (ParseStatus.PARTIAL, ParseStatus.UNPARSED)
    assert any("claims" in e for e in rec.errors)


def test_repeated_note_segment(tmp_path: Path, core_bytes: bytearray) -> None:
    """Every program header points at the same PT_NOTE: read once, not N times."""
    table = phdrs(bytes(core_bytes))
    note = next(p for p in table if p[1] == 4)
    entry = bytes(core_bytes[note[0] : note[0] + 56])
    for off, *_ in table:
        core_bytes[off : off + 56] = entry
    rec = inspect_core(_write(tmp_path, "loop", core_bytes))
    assert any("duplicate PT_NOTE" in e for e in rec.errors)
    assert rec.status is ParseStatus.PARTIAL  # no PT_LOAD left: no memory, so no stack
    assert rec.signal_name == "SIGSEGV"


def test_phnum_in_the_millions(tmp_path: Path, core_bytes: bytearray) -> None:
    # e_phnum = PN_XNUM sends the reader to section header 0's sh_info for the real count.
    struct.pack_into("<H", core_bytes, 56, 0xFFFF)
    shoff = len(core_bytes)
    struct.pack_into("<Q", core_bytes, 40, shoff)
    section0 = bytearray(64)
    struct.pack_into("<I", section0, 44, 50_000_000)
    rec = inspect_core(_write(tmp_path, "phnum", core_bytes + section0))
    assert rec.status is ParseStatus.UNPARSED
    assert "exceeds the limit" in rec.errors[0]


def test_wrong_architecture(tmp_path: Path, core_bytes: bytearray) -> None:
    struct.pack_into("<H", core_bytes, 18, 0x7777)
    rec = inspect_core(_write(tmp_path, "arch", core_bytes))
    assert rec.status is ParseStatus.PARTIAL
    assert any("unsupported architecture" in e for e in rec.errors)
    assert rec.pid is not None and rec.signal == 11  # notes that need no registers still read


def test_sparse_100gb_core(tmp_path: Path, core_bytes: bytearray) -> None:
    """A 100 GB core (sparse) is read like a small one: headers, notes and the stack only."""
    p = _write(tmp_path, "huge", core_bytes)
    os.truncate(p, 100 << 30)
    assert p.stat().st_size == 100 << 30
    rec = inspect_core(p)
    assert rec.status is ParseStatus.OK, rec.errors
    assert rec.frames[0].function == "crash_null_deref"


def test_zstd_bomb_is_refused_fast(tmp_path: Path) -> None:
    """256 MiB of zeros in a few KiB of zstd: rejected after reading its first bytes."""
    cctx = zstandard.ZstdCompressor(level=1)
    chunk = bytes(1 << 20)
    comp = cctx.compressobj()
    data = b"".join(comp.compress(chunk) for _ in range(256)) + comp.flush()
    assert len(data) < 64 << 10
    rec = inspect_core(_write(tmp_path, "bomb.zst", data))
    assert rec.status is ParseStatus.UNPARSED
    assert "not an ELF file" in rec.errors[0]


def test_zstd_core_claiming_far_offsets_stops_at_the_limit(
    tmp_path: Path, core_bytes: bytearray
) -> None:
    """A valid head whose stack segment claims to lie 40 GiB into the stream."""
    for off, ptype, _f, _po, _v, filesz, _m in phdrs(bytes(core_bytes)):
        if ptype == 1 and filesz:
            struct.pack_into("<Q", core_bytes, off + 8, 40 << 30)
    p = _write(tmp_path, "far.zst", zstandard.ZstdCompressor(level=1).compress(bytes(core_bytes)))
    rec = inspect_core(p, max_stream_bytes=64 << 20)
    assert rec.status is ParseStatus.PARTIAL
    assert rec.registers["rip"] != 0
    assert any("limit" in e or "not in the core" in e for e in rec.errors)


def test_corrupt_zstd_stream(tmp_path: Path, core_bytes: bytearray) -> None:
    comp = bytearray(zstandard.ZstdCompressor(level=1).compress(bytes(core_bytes)))
    mid = len(comp) // 2
    comp[mid : mid + 64] = random.Random(64).randbytes(64)
    rec = inspect_core(_write(tmp_path, "corrupt.zst", comp))
    assert rec.status in (ParseStatus.PARTIAL, ParseStatus.OK, ParseStatus.UNPARSED)
    assert rec.errors or rec.status is ParseStatus.OK
    head_corrupt = bytearray(comp)
    head_corrupt[4:40] = b"\xff" * 36
    rec2 = inspect_core(_write(tmp_path, "corrupt-head.zst", head_corrupt))
    assert rec2.status is ParseStatus.UNPARSED
    assert "corrupt zstd stream" in rec2.errors[0]


def test_kernel_crash_dumps_are_refused(tmp_path: Path, core_bytes: bytearray) -> None:
    """makedumpfile's format, and an ELF vmcore with a VMCOREINFO note.

    No kernel crash dump can be taken on this machine (no kdump kernel), so both are synthetic:
    the makedumpfile signature, and a user core whose first note is renamed VMCOREINFO, which is
    the note /proc/vmcore carries.
    """
    kdump = _write(tmp_path, "dumpfile", b"KDUMP   " + bytes(4096))
    rec = inspect_core(kdump)
    assert rec.status is ParseStatus.UNPARSED and "kernel crash dump" in rec.errors[0]
    ehdr = bytearray(core_bytes[:64])
    note_name = b"VMCOREINFO\0"
    desc = b"OSRELEASE=6.1.0\n"
    note = struct.pack("<III", len(note_name), len(desc), 0) + note_name + b"\0" + desc
    struct.pack_into("<Q", ehdr, 32, 64)  # e_phoff
    struct.pack_into("<H", ehdr, 56, 1)  # e_phnum
    phdr = struct.pack("<IIQQQQQQ", 4, 0, 64 + 56, 0, 0, len(note), 0, 0)
    rec2 = inspect_core(_write(tmp_path, "vmcore", ehdr + phdr + note))
    assert rec2.status is ParseStatus.UNPARSED
    assert "kernel crash dump" in rec2.errors[0]


def test_sigbus_memory_error(tmp_path: Path, kernel_cores: dict[str, CrashResult]) -> None:
    """BUS_MCEERR_AR in a real SIGBUS core.

    This kernel has no CONFIG_MEMORY_FAILURE, so MADV_HWPOISON cannot raise a real one (the
    mce_sigbus crasher skips); the si_code of a real SIGBUS core is rewritten to BUS_MCEERR_AR
    (4), which is the only field the kernel sets differently for a machine-check SIGBUS.
    """
    core = kernel_cores["sigbus"].core
    assert core is not None
    data = bytearray(core.read_bytes())
    patch_siginfo(data, code=4)
    rec = inspect_core(_write(tmp_path, "mce", data), symbolize=False)
    assert rec.si_code_name == "BUS_MCEERR_AR"
    assert "sigbus_memory_error" in rec.anomaly_names


def test_fault_address_mismatch(tmp_path: Path, kernel_cores: dict[str, CrashResult]) -> None:
    """A CPU that reports a fault address the instruction did not compute.

    The reported address of a real fault is rewritten (a CPU that computes a wrong effective
    address cannot be summoned on demand): `mov ..., [rax]` with rax = the valid pointer ^ bit 33.
    """
    r = kernel_cores["bit_flip"]
    assert r.core is not None
    data = bytearray(r.core.read_bytes())
    patch_siginfo(data, addr=0x7FFF0000DEAD)
    rec = inspect_core(_write(tmp_path, "mismatch", data), symbolize=False)
    a = next(a for a in rec.anomalies if a.name == "fault_address_mismatch")
    assert a.data["reported"] == 0x7FFF0000DEAD
    assert a.data["computed"] == [r.info_int("fault_addr")]


def test_cli_never_prints_a_traceback(tmp_path: Path, core_bytes: bytearray) -> None:
    cases = {
        "empty": b"",
        "junk": random.Random(512).randbytes(512),
        "cut": bytes(core_bytes[:700]),
    }
    exe = shutil.which("corecensus") or ""
    for name, data in cases.items():
        p = _write(tmp_path, name, data)
        cmd = [exe] if exe else [sys.executable, "-m", "corecensus"]
        for extra in ([], ["--json"]):
            out = subprocess.run(
                [*cmd, "inspect", str(p), *extra], capture_output=True, text=True, timeout=60
            )
            assert "Traceback" not in out.stdout + out.stderr, (name, out.stderr)
            assert out.returncode in (0, 1), (name, out.returncode, out.stderr)
            if name != "cut":
                assert out.returncode == 1


def test_executable_segment_ending_past_the_address_space(
    tmp_path: Path, core_bytes: bytearray
) -> None:
    """An executable PT_LOAD whose end lies past 2**64 (the stack scan once raised
    OverflowError building its numpy ranges; found by the fuzz test): the record keeps its
    registers and stack, and no rule or scan fails."""
    table = phdrs(bytes(core_bytes))
    exe = next(
        p for p in table if p[1] == 1 and struct.unpack_from("<I", core_bytes, p[0] + 4)[0] & 1
    )
    struct.pack_into("<QQQQ", core_bytes, exe[0] + 16, 2**64 - 4096, 0, 0, 1 << 20)
    rec = inspect_core(_write(tmp_path, "wrap", core_bytes), symbolize=False)
    assert rec.signal_name == "SIGSEGV"
    assert rec.status is not ParseStatus.UNPARSED
    assert rec.registers and rec.stack_window
    assert not any("Error" in e for e in rec.errors), rec.errors
