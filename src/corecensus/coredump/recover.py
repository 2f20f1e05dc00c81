"""Callers recovered from the stack when the unwinder cannot go on: stack scanning, trusted
only where the call before a return address fits the frame above it.

When the crashing pc is bad (0, data, no mapping) there is no unwind information for it, and an
unwinder guesses. The return addresses in the live stack above ``sp`` are the evidence of the
callers, but a stack also keeps stale return addresses of calls that already returned. Breakpad
(``StackwalkerAMD64::GetCallerByStackScan``) and rust-minidump (``get_caller_by_scan``) accept a
scanned word only if it points just after a call instruction, and mark such frames with a lower
trust than unwound ones. corecensus goes one step further along the chain: a return address R
is the caller of the frame above (callee C) only if the call that ends at R could have called C:

- a direct call whose target is C's function start (from symbols), or, without symbols, lies
  at most :data:`MAX_FUNCTION_BYTES` below C's pc in C's module (``scan_call_target``);
- a direct call to a stub in the caller's own module (a PLT entry: an indirect ``jmp``) when C
  is in another module (``scan_plt_call``);
- an indirect call, whose target the stack no longer says (``scan_indirect_call``);
- anything after a call, for the first caller above a bad pc, whose callee is unknown
  (``scan``), unless the frame pointer names that caller (``frame_pointer``).

Scanning stops at a program's or a thread's outermost function (``_start``, ``clone``...), so
stale copies of the start-up chain higher in the stack never follow it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from corecensus.coredump.instruction import direct_call_target, is_stub
from corecensus.coredump.parse import ParsedCore
from corecensus.coredump.stackwindow import RawStackWord
from corecensus.model import Frame, FrameTrust

__all__ = ["MAX_RECOVERED_FRAMES", "recover_callers"]

MAX_RECOVERED_FRAMES = 16
# Without symbols a function's start is unknown: a direct call's target must then lie at most
# this far below the callee's pc (few functions are larger).
MAX_FUNCTION_BYTES = 1 << 20
# Nothing calls these: a program's entry point and the kernel's thread entry in libc.
OUTERMOST = frozenset({"_start", "__clone", "__clone3", "clone", "clone3", "thread_start"})

FrameMaker = Callable[[int, FrameTrust], Frame]


def recover_callers(
    p: ParsedCore,
    frames: list[Frame],
    words: Sequence[RawStackWord],
    names: dict[int, str | None],
    starts: dict[int, int],
    make: FrameMaker,
    force: bool = False,
    returned: bool = False,
) -> list[Frame]:
    """At a bad pc (or with ``force``, or when the unwinder found no caller), the frames followed
    by the callers scanned from the live stack, each marked with how it was trusted.

    ``names``/``starts`` map code addresses to their function's name and start address where
    symbols are known; ``make`` builds a frame for a recovered address; ``returned`` says the
    bad pc came from a `ret` (the ``returned_to_bad_address`` anomaly).
    """
    pc = p.pc
    bad = pc is not None and (pc == 0 or not p.space.is_executable(pc))
    if not (force or bad or len(frames) <= 1):
        return frames
    out = frames[:1] if bad else list(frames)
    if not out or (out[-1].function or "") in OUTERMOST:
        return out
    known = {f.pc for f in out}
    candidates = list(
        dict.fromkeys(a for o, a, after in words if o >= 0 and after and a not in known)
    )
    if not candidates:
        return out
    if bad:
        chain = _after_bad_pc(p, candidates, names, starts, returned)
    else:
        chain = _chain(p, candidates, out[-1].pc, names, starts)[0]
    return out + [make(address, trust) for address, trust in chain[:MAX_RECOVERED_FRAMES]]


def _after_bad_pc(
    p: ParsedCore,
    candidates: list[int],
    names: dict[int, str | None],
    starts: dict[int, int],
    returned: bool,
) -> list[tuple[int, FrameTrust]]:
    """The callers above a bad pc, whose own frame is unknown.

    Stale return addresses of calls that already returned can form a chain as consistent as the
    real one (tests/data/crashers/stale_return.c). After a `ret` to a bad address
    (``returned``), the frame pointer, where the code keeps one, still names the real caller:
    %rbp (x29) is the caller's frame, its return address just above it. After a call through
    a bad pointer, the call's return address is at [sp]. Otherwise the chain starts at the
    nearest candidate from which no later one has to be skipped as stale (then fewest skipped).
    """
    if returned:
        first = _frame_pointer_caller(p, candidates)
        if first is not None:
            k = candidates.index(first)
            # Return addresses below the frame pointer's belong in front of it only if they
            # chain up to it with nothing skipped (a `ret` with %rsp 8 low leaves the returning
            # function's own return address at [sp], below its caller's frame).
            start = next(
                (i for i in range(k) if _links(p, candidates[i : k + 1], names, starts)), k
            )
            chain = _chain(p, candidates[start:], None, names, starts)[0]
            return [(a, FrameTrust.FRAME_POINTER if a == first else t) for a, t in chain]
    else:
        # A call through a bad pointer: the call's own return address is at [sp].
        top = p.space.read_word(p.sp) if p.sp is not None else None
        if top in candidates:
            return _chain(p, candidates[candidates.index(top) :], None, names, starts)[0]
    # Only a bad pc pays for trying every start (a few dozen candidates at most).
    chains = [_chain(p, candidates[i:], None, names, starts) for i in range(len(candidates))]
    best = min(range(len(chains)), key=lambda i: (chains[i][1], i))
    return chains[best][0]


def _links(
    p: ParsedCore, segment: Sequence[int], names: dict[int, str | None], starts: dict[int, int]
) -> bool:
    """Whether every candidate of ``segment`` is the caller of the one before it."""
    chain, skipped = _chain(p, segment, None, names, starts)
    return skipped == 0 and len(chain) == len(segment)


_FRAME_POINTER = {"x86_64": "rbp", "aarch64": "x29"}


def _frame_pointer_caller(p: ParsedCore, candidates: list[int]) -> int | None:
    reg = _FRAME_POINTER.get(p.arch_name)
    fp = p.register(reg) if reg else None
    sp = p.sp
    if fp is None or sp is None or not sp <= fp < sp + (1 << 20) or fp % 8:
        return None
    ret = p.space.read_word(fp + 8)
    return ret if ret in candidates else None


def _chain(
    p: ParsedCore,
    candidates: Sequence[int],
    callee: int | None,
    names: dict[int, str | None],
    starts: dict[int, int],
) -> tuple[list[tuple[int, FrameTrust]], int]:
    """The callers, greedily from the first candidate (always taken when ``callee`` is None),
    and how many candidates were skipped as stale on the way."""
    chain: list[tuple[int, FrameTrust]] = []
    skipped = 0
    for address in candidates:
        trust = _trust(p, address, callee, starts)
        if trust is None:
            skipped += 1  # a stale return address: its call could not reach the frame above
            continue
        chain.append((address, trust))
        callee = address
        if (names.get(address) or "") in OUTERMOST or len(chain) >= MAX_RECOVERED_FRAMES:
            break
    return chain, skipped


def _trust(
    p: ParsedCore, ret: int, callee: int | None, starts: dict[int, int]
) -> FrameTrust | None:
    """How far the call ending at ``ret`` fits a call into ``callee``'s function; None if not."""
    space, arch = p.space, p.arch_name
    target = direct_call_target(space, ret, arch)
    if target is None:
        return FrameTrust.SCAN_INDIRECT_CALL
    if callee is None:
        return FrameTrust.SCAN
    callee_file = space.file_at(callee)
    target_file = space.file_at(target)
    start = starts.get(callee)
    if start is not None:
        if target == start:
            return FrameTrust.SCAN_CALL_TARGET
    elif (
        callee_file is not None
        and target_file is not None
        and target_file.path == callee_file.path
        and 0 <= callee - target < MAX_FUNCTION_BYTES
    ):
        return FrameTrust.SCAN_CALL_TARGET
    # A call into a stub of the caller's own module (a PLT entry) that jumps on to the callee's.
    caller_file = space.file_at(ret)
    if (
        caller_file is not None
        and callee_file is not None
        and target_file is not None
        and caller_file.path == target_file.path != callee_file.path
        and is_stub(space, target, arch)
    ):
        return FrameTrust.SCAN_PLT_CALL
    return None
