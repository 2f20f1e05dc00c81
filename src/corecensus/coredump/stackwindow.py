"""The stack window: code addresses found around the crashing thread's stack pointer.

The window spans :data:`~corecensus.coredump.parse.STACK_BELOW` bytes below the stack pointer
(dead frames: what the thread did just before the crash, which is where the libunwind
``setcontext`` race of DESIGN.md leaves its evidence) and ``STACK_ABOVE`` bytes above it (live
frames, from which callers are recovered when unwinding stops at a bad pc).

Signal frames: when the kernel delivers a signal on x86-64 it pushes ``struct rt_sigframe``
(arch/x86/include/asm/sigframe.h): the handler's return address ``pretcode`` (glibc's
``__restore_rt``), then ``struct ucontext`` whose ``uc_mcontext`` holds the interrupted registers,
then the ``siginfo``. Finding ``__restore_rt`` in the window tells what the thread was doing when
a signal arrived, live or dead.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from corecensus.coredump.instruction import is_after_call, is_restore_rt
from corecensus.coredump.parse import STACK_ABOVE, STACK_BELOW, ParsedCore

__all__ = ["RawSignalFrame", "RawStackWord", "scan_stack"]

# Offsets inside struct rt_sigframe (x86-64), from the pretcode slot.
_UC_MCONTEXT = 8 + 8 + 8 + 24  # pretcode, uc_flags, uc_link, uc_stack
_MC_RSP = _UC_MCONTEXT + 15 * 8  # sigcontext: r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip
_MC_RIP = _UC_MCONTEXT + 16 * 8
_SIGINFO = 8 + 304  # after pretcode and struct ucontext (flags, link, stack, mcontext, sigmask)


class RawStackWord(NamedTuple):
    """A code address in the window: ``offset`` bytes from sp, and whether it follows a call.

    A named tuple, not a dataclass: a window holds dozens of these per core, built on the
    register pass's hot path.
    """

    offset: int
    address: int
    after_call: bool


@dataclass(frozen=True, slots=True)
class RawSignalFrame:
    offset: int
    interrupted_pc: int
    interrupted_sp: int
    signal: int | None


def scan_stack(p: ParsedCore) -> tuple[list[RawStackWord], list[RawSignalFrame], str | None]:
    """Code addresses and signal frames in the window; a problem string if it could not be read."""
    sp = p.sp
    if sp is None:
        return [], [], "no stack pointer"
    w = p.hdr.word_size
    start = (sp - STACK_BELOW) & ~(w - 1)
    count = (STACK_BELOW + STACK_ABOVE) // w
    values, present = p.space.read_word_array(start, count)
    if not present.any():
        return [], [], f"stack memory around sp={sp:#x} is not in the core"
    idx = _code_pointer_indices(p, values, present)
    if not len(idx):
        return [], [], None
    # Python ints once, for the few dozen code pointers (not one numpy scalar per word).
    addresses: list[int] = values[idx].tolist()
    offsets: list[int] = (idx * w + (start - sp)).tolist()
    space = p.space
    x86 = p.arch_name == "x86_64"
    after_call: dict[int, bool] = {}  # value -> follows a call (stack words repeat: recursion)
    restore_rt: dict[int, bool] = {}  # value -> is __restore_rt
    out: list[RawStackWord] = []
    frames: list[RawSignalFrame] = []
    for offset, value in zip(offsets, addresses, strict=True):
        after = after_call.get(value)
        if after is None:
            after = after_call[value] = is_after_call(space, value, p.arch_name)
            restore_rt[value] = x86 and is_restore_rt(space, value)
        if restore_rt[value]:
            frame = _signal_frame(p, sp + offset, offset)
            if frame is not None:
                frames.append(frame)
        out.append(RawStackWord(offset, value, after))
    return out, frames, None


def _code_pointer_indices(
    p: ParsedCore, values: npt.NDArray[np.uint64], present: npt.NDArray[np.bool_]
) -> npt.NDArray[np.int64]:
    """Indices of the words that point into an executable mapping (vectorized: a stack window
    is thousands of words and only a few dozen are code addresses)."""
    starts, ends = p.space.executable_ranges()
    if not len(starts):
        return np.zeros(0, dtype=np.int64)
    idx = np.searchsorted(starts, values, side="right").astype(np.int64) - 1
    ok = present & (values >= 4096) & (idx >= 0)
    ok[ok] &= values[ok] < ends[idx[ok]]
    return np.flatnonzero(ok)


def _signal_frame(p: ParsedCore, addr: int, offset: int) -> RawSignalFrame | None:
    rip = p.space.read_word(addr + _MC_RIP)
    rsp = p.space.read_word(addr + _MC_RSP)
    if rip is None or rsp is None:
        return None
    raw = p.space.read(addr + _SIGINFO, 4)
    signo = struct.unpack("<i", raw)[0] if raw and len(raw) == 4 else None
    # A pointer to __restore_rt also lives in any `struct sigaction` on the stack; only a slot
    # followed by a plausible saved context is a signal frame.
    if signo is None or not 0 < signo < 65:
        return None
    if not p.space.is_executable(rip) or not p.space.is_stack_like(rsp) or rsp % 8:
        return None
    return RawSignalFrame(offset, rip, rsp, signo)
