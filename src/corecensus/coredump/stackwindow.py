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

import numpy as np
import numpy.typing as npt

from corecensus.coredump.instruction import is_after_call, x86_code_pointer
from corecensus.coredump.parse import STACK_ABOVE, STACK_BELOW, ParsedCore

__all__ = ["RawSignalFrame", "RawStackWord", "scan_stack"]

# Offsets inside struct rt_sigframe (x86-64), from the pretcode slot.
_UC_MCONTEXT = 8 + 8 + 8 + 24  # pretcode, uc_flags, uc_link, uc_stack
_MC_RSP = _UC_MCONTEXT + 15 * 8  # sigcontext: r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip
_MC_RIP = _UC_MCONTEXT + 16 * 8
_SIGINFO = 8 + 304  # after pretcode and struct ucontext (flags, link, stack, mcontext, sigmask)


# A code address in the window: (offset in bytes from sp, the address, whether it follows a
# call). A plain tuple, not a record class: a window holds dozens per core, and building them
# is the register pass's hot path (zip makes them in C; a NamedTuple costs ten times as much).
RawStackWord = tuple[int, int, bool]


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
    # Each distinct address is decoded once (a recursion repeats its return address per frame).
    space, arch = p.space, p.arch_name
    distinct = dict.fromkeys(addresses)
    frames: list[RawSignalFrame] = []
    if arch == "x86_64":
        kinds = {v: x86_code_pointer(space, v) for v in distinct}
        after_call = {v: k[0] for v, k in kinds.items()}
        restore_rt = {v for v, k in kinds.items() if k[1]}
        if restore_rt:
            for offset, value in zip(offsets, addresses, strict=True):
                if value in restore_rt:
                    frame = _signal_frame(p, sp + offset, offset)
                    if frame is not None:
                        frames.append(frame)
    else:
        after_call = {v: is_after_call(space, v, arch) for v in distinct}
    words = list(zip(offsets, addresses, map(after_call.__getitem__, addresses), strict=True))
    return words, frames, None


def _code_pointer_indices(
    p: ParsedCore, values: npt.NDArray[np.uint64], present: npt.NDArray[np.bool_]
) -> npt.NDArray[np.intp]:
    """Indices of the words that point into an executable mapping (vectorized: a stack window
    is thousands of words and only a few dozen are code addresses)."""
    starts, lasts = p.space.executable_ranges()
    if not len(starts):
        return np.zeros(0, dtype=np.intp)
    # Bound first (a word below the lowest executable start or above the highest end points
    # into none), then locate only the survivors: most stack words are small integers or
    # stack addresses.
    lowest = max(4096, int(starts[0]))
    cand = np.flatnonzero(present & (values >= lowest) & (values <= lasts.max()))
    if not len(cand):
        return cand
    v = values[cand]
    i = np.searchsorted(starts, v, side="right") - 1  # >= 0: every v >= starts[0]
    return cand[v <= lasts[i]]


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
