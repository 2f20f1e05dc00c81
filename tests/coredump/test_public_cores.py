"""Real cores from other debugging tools' test suites (tests/data/public), read by inspect_core.

The cores were written by many kernels, gdb and qemu on machines corecensus never saw: elfutils'
backtrace cores for nine architectures, its readelf and addrname cores, and LLDB's MIPS (o32,
n32, n64), s390x, ppc64le, riscv64 and aarch64 cores. The facts checked here come from those
projects' own tests (LLDB's TestLinuxCore.py pids and ``bar``/``foo``/``_start``; elfutils'
``check_main``), from eu-readelf and eu-stack, and from the executables' symbol tables -- never
from corecensus. Where drgn cannot unwind (i386, x32, ppc32, s390, sparc64), libdwfl does; where
no unwinder can (MIPS: libdw 0.188 has no MIPS unwinder), the record is partial and says why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import zstandard

from corecensus.coredump import inspect_core
from corecensus.model import CrashRecord, ParseStatus, ProblemKind

DATA = Path(__file__).resolve().parent.parent / "data" / "public"
ENTRIES: list[dict[str, Any]] = json.loads((DATA / "manifest.json").read_text())["cores"]
IDS = [e["id"] for e in ENTRIES]
BY_ID = {e["id"]: e for e in ENTRIES}


def _unzstd(src: Path, dst: Path) -> Path:
    with src.open("rb") as fin, dst.open("wb") as fout:
        zstandard.ZstdDecompressor().copy_stream(fin, fout)
    return dst


def unpack(entry: dict[str, Any], root: Path) -> tuple[Path, Path]:
    """(core, directory of its binaries) for one manifest entry, decompressed under ``root``."""
    bindir = root / "bin"
    bindir.mkdir(parents=True)
    for b in entry["binaries"]:
        _unzstd(DATA / b, bindir / Path(b).name.removesuffix(".zst")).chmod(0o755)
    return _unzstd(DATA / entry["core"], root / "core"), bindir


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CrashRecord]:
    out = {}
    for entry in ENTRIES:
        core, bindir = unpack(entry, tmp_path_factory.mktemp(entry["id"]))
        out[entry["id"]] = inspect_core(core, binaries=[bindir])
    return out


def _names(rec: CrashRecord) -> list[str]:
    return [f.function for t in rec.threads_detail for f in t.frames if f.function]


@pytest.mark.parametrize("entry_id", IDS)
def test_architecture_named_as_people_read_it(
    entry_id: str, records: dict[str, CrashRecord]
) -> None:
    assert records[entry_id].arch == BY_ID[entry_id]["arch"]


# (core, pid, crashing thread's pc): pids from LLDB's TestLinuxCore.py and eu-readelf -n, pcs
# from eu-stack (elfutils 0.188) and, for MIPS, inside ``bar`` of the .out's symbol table.
LAYOUTS = [
    ("linux-mips64el-gnuabi64", 25619, 0x120000170),  # n64: no 6-slot o32 padding
    ("linux-mips64el-gnuabin32", 3670, 0x10000130),  # n32: 64-bit registers, 32-bit longs
    ("linux-mipsel-gnuabio32", 3532, 0x400130),
    ("testfile-m68k-core", 1963, 0x800003FE),  # pr_pid at 22 (2-byte aligned longs)
    ("backtrace.s390", 58560, 0x40C4A2),  # 31-bit: PSW address without the mode bit
    ("backtrace.sparc", 21612, 0x10C488),
]


@pytest.mark.parametrize(("entry_id", "tid", "pc"), LAYOUTS, ids=[x[0] for x in LAYOUTS])
def test_register_layouts(
    entry_id: str, tid: int, pc: int, records: dict[str, CrashRecord]
) -> None:
    rec = records[entry_id]
    assert rec.crashed_tid == tid
    assert rec.frames[0].pc == pc
    assert rec.anomalies == ()


def test_mips_pc_lies_in_bar() -> None:
    """The three MIPS pcs above are inside ``bar`` by each executable's own symbol table (the
    layouts are checked against the binaries, not against corecensus)."""
    bar = {"linux-mips64el-gnuabi64": (0x120000150, 60), "linux-mips64el-gnuabin32": (0x10000110, 60),
           "linux-mipsel-gnuabio32": (0x400110, 60)}  # fmt: skip
    for entry_id, _tid, pc in LAYOUTS[:3]:
        start, size = bar[entry_id]
        assert start <= pc < start + size


WHOLE = [e["id"] for e in ENTRIES if e["expect"] and e["id"].startswith("backtrace.")]
# The other cores whose upstream test asks for a backtrace, each in the order it asks (LLDB's
# check_stack; elfutils' demangle test and its inline chain as ``eu-stack -i`` prints it).
IN_ORDER = ["linux-x86_64", "linux-i386", "linux-aarch64", "linux-s390x", "testfile-backtrace-demangle.core",
            "testfiledwarfinlines.core"]  # fmt: skip


@pytest.mark.parametrize("entry_id", WHOLE)
def test_whole_backtrace_where_upstream_asks_for_it(
    entry_id: str, records: dict[str, CrashRecord]
) -> None:
    """elfutils' backtrace cores on nine architectures: every thread unwound through ``main``,
    the crashing thread through its callers in order -- by drgn where it can, else libdwfl."""
    rec = records[entry_id]
    entry = BY_ID[entry_id]
    assert rec.status is ParseStatus.OK, rec.problems
    assert set(entry["expect"]) <= set(_names(rec))
    crashed = [f.function for f in rec.frames if f.function]
    positions = [crashed.index(n) for n in entry["expect_crashed"]]
    assert positions == sorted(positions), crashed
    assert len(rec.threads_detail) == 2
    assert all(len(t.frames) >= 2 for t in rec.threads_detail)


def test_partial_only_when_no_unwinder_can(records: dict[str, CrashRecord]) -> None:
    """MIPS: neither drgn 0.3 nor libdw 0.188 unwinds it. The record is partial, names both
    reasons, and still names the crashing function from the symbol table."""
    for entry_id in ("linux-mips64el-gnuabi64", "linux-mipsel-gnuabio32"):
        rec = records[entry_id]
        assert rec.status is ParseStatus.PARTIAL
        (stopped,) = [p for p in rec.problems if p.kind is ProblemKind.UNWIND_STOPPED]
        assert "libdwfl" in stopped.detail
        assert len(rec.frames) == 1
    for entry_id, _tid, _pc in LAYOUTS[:3]:  # the three MIPS ABIs: the pc is in bar
        assert records[entry_id].frames[0].function == "bar"
    # i386 is unwound by libdwfl, not left partial: the counter-case.
    assert records["backtrace.i386"].status is ParseStatus.OK


def test_gcore_without_gdb_note_is_a_snapshot(records: dict[str, CrashRecord]) -> None:
    """LLDB's gcore cores come from a gdb that wrote no GDB note; one NT_SIGINFO per thread
    still says gdb wrote them (the kernel writes one), so SIGSTOP makes them snapshots."""
    for entry_id in ("gcore-linux-i386", "gcore-linux-x86_64"):
        rec = records[entry_id]
        assert rec.writer == "gdb-gcore"
        assert any(p.kind is ProblemKind.NOT_A_CRASH for p in rec.problems)
    assert records["linux-x86_64"].writer == "kernel"


@pytest.mark.parametrize("entry_id", IN_ORDER)
def test_backtrace_names_in_upstream_order(entry_id: str, records: dict[str, CrashRecord]) -> None:
    """C++ frames carry their parameter lists (``cxxfunc(int)``, ``fu(int)``: the mangled ELF
    symbol demangled, as gdb and eu-stack print them) and inlined frames come as a chain."""
    expect = BY_ID[entry_id]["expect"]
    names = [f.function for f in records[entry_id].frames]
    assert names[: len(expect)] == expect


def test_inline_chain_shares_one_pc(records: dict[str, CrashRecord]) -> None:
    frames = records["testfiledwarfinlines.core"].frames
    assert len({f.pc for f in frames[:5]}) == 1  # fubar..fu(int) are all inlined at 0x4006c8
    assert frames[5].pc != frames[0].pc


def test_vdso_is_a_module(records: dict[str, CrashRecord]) -> None:
    """i386 threads sleeping in the vDSO: the frame is ``__kernel_vsyscall`` in ``[vdso]`` (as
    eu-stack prints it), with the vDSO's build-id read from the core's memory."""
    rec = records["backtrace.i386"]
    (vdso,) = [m for m in rec.modules if m.path == "[vdso]"]
    assert vdso.build_id
    for thread in rec.threads_detail:
        assert (thread.frames[0].function, thread.frames[0].module) == ("__kernel_vsyscall",
                                                                          "[vdso]")  # fmt: skip
    # A pc outside it is not given to the vDSO.
    assert rec.threads_detail[0].frames[1].module != "[vdso]"


def test_relative_link_map_names_and_the_second_offset_0_mapping(
    records: dict[str, CrashRecord],
) -> None:
    """elfutils' linkmap-cut core: NT_FILE names the program and its library by relative paths
    (``./////...linkmap-cut-lib.so``), the executable is mapped at offset 0 twice (0x400000 and
    0x600000); the frames are named as run-linkmap-cut.sh asks: libfunc, then main."""
    rec = records["linkmap-cut.core"]
    assert [(f.pc, f.function) for f in rec.frames[:2]] == [
        (0x7F08BC24D681, "libfunc"),
        (0x4006B4, "main"),
    ]
    exe = next(m for m in rec.modules if m.path.endswith("/linkmap-cut"))
    assert exe.build_id == "b4e31b97a269c1ee95f7ded31b027b86395004fb"  # eu-unstrip -n


def test_ppc64_elfv1_function_descriptors(records: dict[str, CrashRecord]) -> None:
    """ppc64 big-endian ELFv1: function symbols point at .opd descriptors, not code; the pc is
    still named (``_start``, as eu-stack names it)."""
    rec = records["testfile66.core"]
    assert rec.arch == "ppc64"
    assert rec.frames[0].function == "_start"


def test_build_id_from_a_second_offset_0_mapping(tmp_path: Path) -> None:
    """With the header page of the first mapping wiped (as when it is not dumped), the build-id
    comes from the second mapping of offset 0 (0x600000), and the module still starts at the
    first (0x400000): frame offsets do not move."""
    core, _bindir = unpack(BY_ID["linkmap-cut.core"], tmp_path)
    data = bytearray(core.read_bytes())
    assert data[0x1000:0x1004] == b"\x7fELF"  # the 0x400000 segment's bytes (eu-readelf -l)
    data[0x1000:0x1040] = bytes(0x40)
    core.write_bytes(bytes(data))
    rec = inspect_core(core, symbolize=False)
    exe = next(m for m in rec.modules if m.path.endswith("/linkmap-cut"))
    assert exe.build_id == "b4e31b97a269c1ee95f7ded31b027b86395004fb"
    assert exe.base == 0x400000
