"""The libunwind signal race (libunwind issue #927) in real kernel cores: what `inspect` finds.

The oracle is gdb, which delivered SIGUSR2 at the racy instruction and noted where the thread
was (tests/libunwind_race.py); the handler has no SA_SIGINFO, so the frame's siginfo is stale.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from coretools import file_offset

from corecensus.coredump import inspect_core
from corecensus.model import CrashRecord
from libunwind_race import RaceCore

pytestmark = pytest.mark.kernel_cores


@pytest.fixture(scope="module")
def records(libunwind_race_cores: list[RaceCore]) -> list[tuple[RaceCore, CrashRecord]]:
    return [(rc, inspect_core(rc.core)) for rc in libunwind_race_cores]


def test_the_crash_is_a_return_to_null(records: list[tuple[RaceCore, CrashRecord]]) -> None:
    for _rc, rec in records:
        assert rec.signal_name == "SIGSEGV"
        assert rec.registers["rip"] == 0
        assert {"pc_zero", "returned_to_bad_address"} <= set(rec.anomaly_names)


def test_the_dead_signal_frame_says_where_the_signal_struck(
    records: list[tuple[RaceCore, CrashRecord]],
) -> None:
    for rc, rec in records:
        frames = [s for s in rec.signal_frames if s.interrupted_pc == rc.interrupted_pc]
        assert len(frames) == 1, rec.signal_frames
        s = frames[0]
        assert s.offset < 0  # dead stack: the handler returned before the crash
        assert s.function == "_Ux86_64_setcontext"
        assert s.function_offset == rc.interrupted_pc - rc.function_start
        assert s.module is not None and "libunwind" in s.module
        # The window opens after the %rsp switch: the interrupted sp is the landing pad's,
        # which the `ret` left the crash with.
        assert s.interrupted_sp == rc.interrupted_sp == rec.registers["rsp"]
        # A plain sa_handler: the kernel did not write the frame's siginfo.
        assert s.signal is None


def test_fast_pass_finds_the_same_signal_frame(
    records: list[tuple[RaceCore, CrashRecord]],
) -> None:
    for rc, rec in records:
        fast = inspect_core(rc.core, symbolize=False)
        assert [(s.offset, s.interrupted_pc, s.interrupted_sp) for s in fast.signal_frames] == [
            (s.offset, s.interrupted_pc, s.interrupted_sp) for s in rec.signal_frames
        ]


# Byte offsets in the x86-64 rt_sigframe from its pretcode slot (arch/x86/include/asm/
# sigframe.h, uapi/asm/sigcontext.h), written out here independently of the parser.
UC_FLAGS, RSP, RIP, EFLAGS, SEGMENTS, FPSTATE, SIGINFO = 8, 168, 176, 184, 192, 232, 312


def _edited(rc: RaceCore, tmp_path: Path, slot: int, at: int, fmt: str, value: int) -> CrashRecord:
    data = bytearray(rc.core.read_bytes())
    struct.pack_into(fmt, data, file_offset(bytes(data), slot + at), value)
    out = tmp_path / f"core-{at}"
    out.write_bytes(bytes(data))
    return inspect_core(out, symbolize=False)


@pytest.mark.parametrize(
    ("at", "fmt", "value", "why"),
    [
        (UC_FLAGS, "<Q", 0x100, "uc_flags with a bit the kernel never sets"),
        (FPSTATE, "<Q", 0x7FFF_0000_0000, "fpstate pointing far from the frame"),
        (EFLAGS, "<Q", 0x2, "interrupts disabled: not a user-mode context"),
        (SEGMENTS, "<H", 0x10, "a kernel code segment"),
        (RIP, "<Q", 0x1000, "a saved pc in no executable mapping"),
        (RSP, "<Q", 0x10, "a saved sp in no stack"),
    ],
)
def test_a_frame_whose_ucontext_is_implausible_is_not_a_signal_frame(
    libunwind_race_cores: list[RaceCore], tmp_path: Path, at: int, fmt: str, value: int, why: str
) -> None:
    rc = libunwind_race_cores[0]
    [s] = [s for s in inspect_core(rc.core).signal_frames if s.interrupted_pc == rc.interrupted_pc]
    slot = rc.interrupted_sp + s.offset
    rec = _edited(rc, tmp_path, slot, at, fmt, value)
    assert all(f.offset != s.offset for f in rec.signal_frames), why


def test_the_signal_is_reported_only_from_a_written_siginfo(
    libunwind_race_cores: list[RaceCore], tmp_path: Path
) -> None:
    rc = libunwind_race_cores[0]
    [s] = [s for s in inspect_core(rc.core).signal_frames if s.interrupted_pc == rc.interrupted_pc]
    slot = rc.interrupted_sp + s.offset
    data = bytearray(rc.core.read_bytes())
    info = file_offset(bytes(data), slot + SIGINFO)
    # What the kernel writes for SA_SIGINFO: SIGUSR2 from a timer (SI_TIMER), zeros after.
    data[info : info + 128] = struct.pack("<iii", 12, 0, -2) + bytes(116)
    written = tmp_path / "written"
    written.write_bytes(bytes(data))
    [w] = [f for f in inspect_core(written, symbolize=False).signal_frames if f.offset == s.offset]
    assert w.signal == 12
    # The same head with stale bytes in the tail is not a siginfo the kernel wrote.
    data[info + 64] = 0x5A
    stale = tmp_path / "stale"
    stale.write_bytes(bytes(data))
    [t] = [f for f in inspect_core(stale, symbolize=False).signal_frames if f.offset == s.offset]
    assert t.signal is None
