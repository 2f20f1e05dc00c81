"""The stack window: code addresses found around the crashing thread's stack pointer.

The window spans :data:`~corecensus.coredump.parse.STACK_BELOW` bytes below the stack pointer
(dead frames: what the thread did just before the crash, which is where the libunwind
``setcontext`` race of DESIGN.md leaves its evidence) and ``STACK_ABOVE`` bytes above it (live
frames, from which callers are recovered when unwinding stops at a bad pc).

Signal frames found in the window (live or dead) come from :mod:`corecensus.coredump.sigframes`:
what the thread was doing when a signal arrived.
"""

from __future__ import annotations

from corecensus.coredump.instruction import is_after_call, x86_code_pointer
from corecensus.coredump.parse import STACK_ABOVE, STACK_BELOW, ParsedCore
from corecensus.coredump.sigframes import RawSignalFrame, find_signal_frames
from corecensus.coredump.words import code_pointer_indices

__all__ = ["RawSignalFrame", "RawStackWord", "scan_stack"]

# A code address in the window: (offset in bytes from sp, the address, whether it follows a
# call). A plain tuple, not a record class: a window holds dozens per core, and building them
# is the register pass's hot path (zip makes them in C; a NamedTuple costs ten times as much).
RawStackWord = tuple[int, int, bool]


def scan_stack(p: ParsedCore) -> tuple[list[RawStackWord], list[RawSignalFrame], str | None]:
    """Code addresses and signal frames in the window; a problem string if it could not be read."""
    sp = p.sp
    if sp is None:
        return [], [], "no stack pointer"
    w = p.hdr.word_size
    start = (sp - STACK_BELOW) & ~(w - 1)
    count = (STACK_BELOW + STACK_ABOVE) // w
    window = p.space.read_word_window(start, count)
    if not window.any_present():
        return [], [], f"stack memory around sp={sp:#x} is not in the core"
    frames = find_signal_frames(p.space, p.arch_name, sp, window)
    idx = code_pointer_indices(window, *p.space.executable_ranges())
    if not idx:
        return [], frames, None
    # Python ints only for the few dozen code pointers.
    addresses = [window.value(i) for i in idx]
    offsets = [i * w + (start - sp) for i in idx]
    # Each distinct address is decoded once (a recursion repeats its return address per frame).
    space, arch = p.space, p.arch_name
    distinct = dict.fromkeys(addresses)
    if arch == "x86_64":
        after_call = {v: x86_code_pointer(space, v)[0] for v in distinct}
    else:
        after_call = {v: is_after_call(space, v, arch) for v in distinct}
    words = list(zip(offsets, addresses, map(after_call.__getitem__, addresses), strict=True))
    return words, frames, None
