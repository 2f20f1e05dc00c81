"""The stack window: code addresses found around the crashing thread's stack pointer.

The window spans :data:`~corecensus.coredump.parse.STACK_BELOW` bytes below the stack pointer
(dead frames: what the thread did just before the crash, which is where the libunwind
``setcontext`` race of DESIGN.md leaves its evidence) and ``STACK_ABOVE`` bytes above it (live
frames, from which callers are recovered when unwinding stops at a bad pc).

Signal frames found in the window (live or dead) come from :mod:`corecensus.coredump.sigframes`:
what the thread was doing when a signal arrived.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from corecensus.coredump.instruction import is_after_call, x86_code_pointer
from corecensus.coredump.parse import STACK_ABOVE, STACK_BELOW, ParsedCore
from corecensus.coredump.sigframes import RawSignalFrame, find_signal_frames

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
    values, present = p.space.read_word_array(start, count)
    if not present.any():
        return [], [], f"stack memory around sp={sp:#x} is not in the core"
    frames = find_signal_frames(p.space, p.arch_name, sp, start, values, present)
    idx = _code_pointer_indices(p, values, present)
    if not len(idx):
        return [], frames, None
    # Python ints once, for the few dozen code pointers (not one numpy scalar per word).
    addresses: list[int] = values[idx].tolist()
    offsets: list[int] = (idx * w + (start - sp)).tolist()
    # Each distinct address is decoded once (a recursion repeats its return address per frame).
    space, arch = p.space, p.arch_name
    distinct = dict.fromkeys(addresses)
    if arch == "x86_64":
        after_call = {v: x86_code_pointer(space, v)[0] for v in distinct}
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
