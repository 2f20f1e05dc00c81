"""Callers recovered from the stack above a bad pc: trusted only where the call fits.

stale_return (tests/data/crashers/stale_return.c) returns to NULL with a whole stale chain of
return addresses (crasher_note_hex <- leaf <- leave_stale <- main) left in a live buffer between
the crash and the real caller; the crasher noted the stale word and victim()'s real return
address into main, the oracles here.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path

import pytest
from coretools import notes

from corecensus.coredump import inspect_core
from corecensus.model import CrashRecord, FrameTrust
from crashers import CrashResult

pytestmark = pytest.mark.kernel_cores

SCANNED = {
    FrameTrust.FRAME_POINTER,
    FrameTrust.SCAN_CALL_TARGET,
    FrameTrust.SCAN_PLT_CALL,
    FrameTrust.SCAN_INDIRECT_CALL,
    FrameTrust.SCAN,
}
NT_PRSTATUS = 1
PR_REG = 112  # offset of pr_reg in x86-64 struct elf_prstatus
RBP = 4  # index of rbp in struct user_regs_struct


def _check_stale_return(r: CrashResult, rec: CrashRecord) -> None:
    stale, real = r.info_int("stale_ret"), r.info_int("real_ret")
    # Not vacuous: the stale word is in the live stack the scan reads, below the real one.
    offsets = {w.address: w.offset for w in rec.stack_window if w.offset >= 0 and w.after_call}
    assert 0 <= offsets[stale] < offsets[real]
    pcs = [f.pc for f in rec.frames]
    assert pcs[0] == 0
    assert pcs[1] == real
    assert stale not in pcs
    assert all(f.trust in SCANNED and f.recovered for f in rec.frames[1:])


@pytest.mark.parametrize("symbolize", [True, False])
def test_the_frame_pointer_names_the_real_caller(
    kernel_cores: Mapping[str, CrashResult], symbolize: bool
) -> None:
    r = kernel_cores["stale_return"]
    assert r.core is not None
    rec = inspect_core(r.core, symbolize=symbolize)
    _check_stale_return(r, rec)
    assert rec.frames[1].trust is FrameTrust.FRAME_POINTER
    if symbolize:
        assert [f.function for f in rec.frames[1:3]] == ["main", "__libc_start_call_main"]


@pytest.mark.parametrize("symbolize", [True, False])
def test_without_a_frame_pointer_the_stale_chain_is_still_skipped(
    kernel_cores: Mapping[str, CrashResult], tmp_path: Path, symbolize: bool
) -> None:
    """The same core with %rbp zeroed (code built without frame pointers): the chain must start
    where no later candidate has to be skipped as stale, at the real caller."""
    r = kernel_cores["stale_return"]
    assert r.core is not None
    data = bytearray(r.core.read_bytes())
    first = next(n for n in notes(bytes(data)) if n.type == NT_PRSTATUS)
    struct.pack_into("<Q", data, first.desc_offset + PR_REG + 8 * RBP, 0)
    core = tmp_path / "core"
    core.write_bytes(bytes(data))
    rec = inspect_core(core, symbolize=symbolize)
    assert rec.registers["rbp"] == 0
    _check_stale_return(r, rec)
    assert rec.frames[1].trust is not FrameTrust.FRAME_POINTER


def test_unwound_frames_say_so(kernel_cores: Mapping[str, CrashResult]) -> None:
    r = kernel_cores["null_deref"]
    assert r.core is not None
    rec = inspect_core(r.core)
    assert rec.frames[0].trust is FrameTrust.CONTEXT
    assert {f.trust for f in rec.frames[1:]} == {FrameTrust.UNWOUND}
    assert not any(f.recovered for f in rec.frames)


@pytest.mark.parametrize("name", ["null_deref", "abort", "thread_crash", "return_to_null",
                                  "call_null_fp", "ret_sp_off_by_8", "signal_race",
                                  "stack_overflow", "stale_return"])  # fmt: skip
def test_no_trailing_null_frames_and_no_repeats(
    kernel_cores: Mapping[str, CrashResult], name: str
) -> None:
    r = kernel_cores[name]
    assert r.core is not None
    for symbolize in (True, False):
        rec = inspect_core(r.core, symbolize=symbolize)
        assert all(f.pc >= 4096 for f in rec.frames[1:]), rec.frames
        recovered = [f.pc for f in rec.frames if f.recovered]
        assert len(recovered) == len(set(recovered))
        assert all(f.trust is not None for f in rec.frames)
