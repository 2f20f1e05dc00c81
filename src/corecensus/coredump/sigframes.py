"""Signal frames on the stack, recognised by the ucontext the kernel wrote, not by its siginfo.

When the kernel delivers a signal it writes a frame below the interrupted stack pointer holding
the interrupted registers (``struct ucontext``), and runs the handler below it. The frame stays
in the stack after the handler returns, so the dead stack below ``sp`` says what the thread was
doing when a signal came: the trace the libunwind ``_Ux86_64_setcontext`` race leaves
(libunwind issue #927, fixed by PR #928).

The ``siginfo`` part of the frame is written only for handlers installed with ``SA_SIGINFO``
(x86-64 ``__setup_rt_frame`` and arm64 ``setup_rt_frame`` copy it under that flag); a plain
``sa_handler`` -- what profilers and timers often use -- leaves whatever the stack held there.
So a frame is validated by its ucontext, and its signal number is reported only when the
siginfo bears the marks of the kernel's copy (see :func:`_signal_number`).

Layouts:

- x86-64 (arch/x86/include/asm/sigframe.h, uapi/asm/sigcontext.h): ``struct rt_sigframe`` is the
  handler's return address ``pretcode`` (the ``sa_restorer``, glibc's ``__restore_rt``), then
  ``struct ucontext`` (``uc_flags``, ``uc_link``, ``uc_stack``, ``uc_mcontext``, ``uc_sigmask``:
  304 bytes), then ``siginfo`` (128). ``get_sigframe`` places the FPU/xsave area (``fpstate``)
  first, 64-byte aligned below the 128-byte red zone, and the frame right below it, rounded down
  to 16 bytes minus 8: ``fpstate`` points just above the frame.
- aarch64 (arch/arm64/kernel/signal.c, uapi/asm/sigcontext.h): ``struct rt_sigframe`` is
  ``siginfo`` (128) then ``struct ucontext`` (``uc_flags`` = 0, ``uc_link`` = NULL,
  ``uc_stack``, ``uc_sigmask`` padded to 128 bytes, then ``uc_mcontext`` 16-byte aligned:
  ``fault_address``, ``regs[31]``, ``sp``, ``pc``, ``pstate``, and ``__reserved`` whose first
  record is always the FP/SIMD context, magic ``0x46508001`` size ``0x210``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from corecensus.coredump.memory import AddressSpace
from corecensus.coredump.words import WordWindow

__all__ = ["RawSignalFrame", "find_signal_frames"]


@dataclass(frozen=True, slots=True)
class RawSignalFrame:
    """A validated signal frame: ``offset`` is its address minus the crash's sp (bytes);
    ``signal`` is None when the frame's siginfo was not written (a plain ``sa_handler``)."""

    offset: int
    interrupted_pc: int
    interrupted_sp: int
    signal: int | None


# --- x86-64 -------------------------------------------------------------------------------------
# Word indices from the pretcode slot.
_X_UC_FLAGS, _X_SS_SP, _X_SS_FLAGS, _X_SS_SIZE = 1, 3, 4, 5
_X_RSP, _X_RIP, _X_EFLAGS, _X_SEGMENTS, _X_FPSTATE = 21, 22, 23, 24, 29
_X_SIGINFO = 8 + 304  # bytes
_X_FRAME = _X_SIGINFO + 128  # sizeof(struct rt_sigframe)
# uc_flags bits the kernel sets: UC_FP_XSTATE, UC_SIGCONTEXT_SS, UC_STRICT_RESTORE_SS.
_X_UC_FLAGS_MASK = 0x7
# cs, gs, fs, ss as four u16 in one word: __USER_CS (0x33), gs = fs = 0 (setup_sigcontext
# writes zeros on 64-bit), ss = __USER_DS (0x2b), or 0 before kernel 4.6 saved it.
_X_USER_CS = 0x33
_X_USER_SS = 0x2B
# The frame is at round_down(fpstate - sizeof(rt_sigframe), 16) - 8: fpstate - frame end is
# 8..23 bytes. Leave room for older kernels' placement, still far tighter than chance.
_X_FPSTATE_GAP = 64
# Red zone (128) plus the largest xsave area a CPU has today (AMX: ~11 KiB) with alignment.
_X_MAX_ABOVE = 128 + 16 * 1024
_EFLAGS_FIXED = 0x2  # bit 1 of RFLAGS always reads 1
_EFLAGS_IF = 0x200  # interrupts are enabled in user mode

# --- aarch64 ------------------------------------------------------------------------------------
_A_UC = 128
_A_SS_SP, _A_SS_FLAGS, _A_SS_SIZE = _A_UC + 16, _A_UC + 24, _A_UC + 32
_A_MCONTEXT = _A_UC + 176
_A_SP, _A_PC, _A_PSTATE = _A_MCONTEXT + 256, _A_MCONTEXT + 264, _A_MCONTEXT + 272
_A_RESERVED = _A_MCONTEXT + 288
_A_FPSIMD = 0x46508001 | (0x210 << 32)  # struct _aarch64_ctx {magic, size} of fpsimd_context
_A_MAX_ABOVE = 64 * 1024  # SVE/SME state can make a frame tens of KiB

_SS_DISABLE = 2
# Bytes 48..127 of a kernel-written siginfo are zero: the kernel clears the whole struct and
# no union member (sigfault with its bounds/pkey/perf fields, sigchld, sigpoll, sigsys,
# timer, rt) reaches past byte 48.
_SIGINFO_USED = 48
_SIGINFO_SIZE = 128
# si_code values the kernel sends: SI_USER 0, SI_KERNEL 0x80, SI_QUEUE..SI_DETHREAD -1..-7,
# and the per-signal codes (SEGV_*, BUS_*, CLD_*, POLL_*, TRAP_*, ...) 1..15.
_SI_KERNEL = 0x80


def find_signal_frames(
    space: AddressSpace, arch: str, sp: int, window: WordWindow
) -> list[RawSignalFrame]:
    """Signal frames in the stack ``window`` (crash sp ``sp``)."""
    start = window.start
    if arch == "x86_64":
        # the segment word: cs = __USER_CS, gs = fs = 0, ss = __USER_DS or 0
        hits = [
            i
            for i in window.with_byte(0, _X_USER_CS)
            if (v := window.value(i)) & 0xFFFF_FFFF_FFFF == _X_USER_CS
            and v >> 48 in (_X_USER_SS, 0)
        ]
        slots = [start + (i - _X_SEGMENTS) * 8 for i in hits if i >= _X_SEGMENTS]
        check = _x86_64_frame
    elif arch == "aarch64":
        # the FP/SIMD record's magic; its byte 3 (0x46 in memory order) picks the candidates
        at = 3 if window.little_endian else 4
        hits = [i for i in window.with_byte(at, 0x46) if window.value(i) == _A_FPSIMD]
        slots = [start + i * 8 - _A_RESERVED for i in hits]
        check = _aarch64_frame
    else:
        return []
    frames = []
    for slot in slots:
        frame = check(space, slot, sp)
        if frame is not None:
            frames.append(frame)
    return frames


def _words(space: AddressSpace, addr: int, size: int) -> tuple[int, ...] | None:
    raw = space.read_dumped(addr, size)
    if raw is None or len(raw) != size:
        return None
    return struct.unpack(f"{space.hdr.endian}{size // 8}Q", raw)


def _on_altstack(frame: int, ss_sp: int, ss_flags: int, ss_size: int) -> bool:
    return not ss_flags & _SS_DISABLE and ss_sp <= frame < ss_sp + ss_size


def _same_stack(space: AddressSpace, a: int, b: int) -> bool:
    seg = space.segment_at(a)
    return seg is not None and seg is space.segment_at(b) and seg.writable


def _x86_64_frame(space: AddressSpace, slot: int, sp: int) -> RawSignalFrame | None:
    w = _words(space, slot, _X_SIGINFO)
    if w is None:
        return None
    rsp, rip, eflags, fpstate = w[_X_RSP], w[_X_RIP], w[_X_EFLAGS], w[_X_FPSTATE]
    if w[_X_UC_FLAGS] & ~_X_UC_FLAGS_MASK:
        return None
    if eflags & (_EFLAGS_FIXED | _EFLAGS_IF) != _EFLAGS_FIXED | _EFLAGS_IF:
        return None
    end = slot + _X_FRAME
    if fpstate and not 0 <= fpstate - end <= _X_FPSTATE_GAP:
        return None
    if not space.is_executable(rip):
        return None
    altstack = _on_altstack(slot, w[_X_SS_SP], w[_X_SS_FLAGS] & 0xFFFFFFFF, w[_X_SS_SIZE])
    if altstack:
        if not space.is_mapped(rsp):
            return None
    elif not (end < rsp <= end + _X_MAX_ABOVE and _same_stack(space, rsp, sp)):
        # The kernel pushes the frame below the interrupted sp, on the crash's own stack.
        return None
    if not fpstate and not altstack and rsp - 128 - end > _X_FPSTATE_GAP:
        return None  # no FPU area: the frame sits right below the red zone
    return RawSignalFrame(slot - sp, rip, rsp, _signal_number(space, slot + _X_SIGINFO))


def _aarch64_frame(space: AddressSpace, slot: int, sp: int) -> RawSignalFrame | None:
    frame = slot
    if frame % 16:
        return None  # setup_sigframe_layout rounds the frame down to 16 bytes
    w = _words(space, frame + _A_UC, _A_RESERVED - _A_UC)
    if w is None:
        return None

    def at(offset: int) -> int:
        return w[(offset - _A_UC) // 8]

    if at(_A_UC) != 0 or at(_A_UC + 8) != 0:
        return None  # uc_flags = 0 and uc_link = NULL, always
    pc, saved_sp, pstate = at(_A_PC), at(_A_SP), at(_A_PSTATE)
    if pstate & 0x1F:
        return None  # interrupted in AArch64 state at EL0 (M[4:0] = 0)
    if not space.is_executable(pc):
        return None
    end = frame + _A_RESERVED
    ss_sp, ss_flags, ss_size = at(_A_SS_SP), at(_A_SS_FLAGS) & 0xFFFFFFFF, at(_A_SS_SIZE)
    if _on_altstack(frame, ss_sp, ss_flags, ss_size):
        if not space.is_mapped(saved_sp):
            return None
    elif not (end < saved_sp <= frame + _A_MAX_ABOVE and _same_stack(space, saved_sp, sp)):
        return None
    return RawSignalFrame(frame - sp, pc, saved_sp, _signal_number(space, frame))


def _signal_number(space: AddressSpace, addr: int) -> int | None:
    """si_signo if the 128 bytes at ``addr`` are a siginfo the kernel wrote, else None.

    The kernel writes a frame's siginfo only for SA_SIGINFO handlers; otherwise the bytes are
    stale stack. A written one has a signal number, a sane errno and code, and zeros past
    byte 48 (the kernel clears the struct before filling it).
    """
    raw = space.read_dumped(addr, _SIGINFO_SIZE)
    if raw is None or len(raw) != _SIGINFO_SIZE:
        return None
    signo, errno, code = struct.unpack(f"{space.hdr.endian}iii", raw[:12])
    if not 0 < signo <= 64 or not 0 <= errno < 4096:
        return None
    if not (-7 <= code <= 15 or code == _SI_KERNEL):
        return None
    if any(raw[_SIGINFO_USED:]):
        return None
    return int(signo)
