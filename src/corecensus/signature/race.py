"""Races between a signal handler and the code it interrupted: one population per function.

The seed case (DESIGN.md; libunwind issue #927, fixed by PR #928): GNU libunwind's
``_Ux86_64_setcontext`` moves ``%rsp`` to the landing pad's frame and only then reads the target
``%rip`` from a context that now lies below ``%rsp``. A signal arriving in that window pushes its
frame over the context; when the handler returns, ``ret`` jumps to whatever the frame left there.
Every such core shows a return to a bad address and, in the dead stack just below ``%rsp``, the
signal frame whose saved context says the thread was interrupted in ``_Ux86_64_setcontext``,
with the saved stack pointer where the crash left it. The callers recovered around it are stale
and differ from core to core, so signing by frames splits one bug into many populations.

A crash is a signal race on function F when (1) its pc is bad after a return (the
``returned_to_bad_address`` anomaly), and (2) the nearest signal frame in the dead stack below
its stack pointer interrupted F with a saved stack pointer at most :data:`SP_SLACK` bytes below
the crash's (the interrupted code went on from that stack to the bad return; a signal frame
from an unrelated earlier handler saved some other stack depth). F is the interrupted
function's normalized name, else ``module@offset`` of the interrupted pc.

Pure: reads :class:`corecensus.model.CrashRecord` only.
"""

from __future__ import annotations

import signal as _signal
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from corecensus.model import CrashRecord, SignalFrame
from corecensus.signature.normalize import address_frame, normalize_function

__all__ = [
    "RACE_PREFIX",
    "SP_SLACK",
    "SignalRace",
    "race_evidence",
    "race_key",
    "signal_race",
]

# Bytes the stack pointer may move between the interrupted instruction and the bad return (a
# few pops and the `ret`); in the libunwind race it does not move at all.
SP_SLACK = 256
# The symbolic signature of a race crash starts with this; the function key follows.
RACE_PREFIX = "signal race in "
_SP_REGISTERS = ("rsp", "sp", "esp")


@dataclass(frozen=True, slots=True)
class SignalRace:
    """What a race crash says: the interrupted function and where exactly it was interrupted."""

    function: str  # normalized name, or module@offset when unnamed
    pc: int  # the interrupted pc
    module: str | None  # basename of the interrupted module
    function_offset: int | None  # interrupted pc - function start (bytes), when named
    module_offset: int | None  # interrupted pc - module base (bytes)
    signal: int | None  # None when the handler had no SA_SIGINFO (siginfo not written)
    frame_offset: int  # the signal frame's address - the crash's sp (negative: dead stack)
    sp_delta: int  # the crash's sp - the interrupted sp (bytes)

    @property
    def key(self) -> str:
        """The population key: module and function."""
        return f"{self.function} ({self.module})" if self.module else self.function

    @property
    def where(self) -> str:
        if self.function_offset is not None:
            return f"{self.function}+{self.function_offset:#x}"
        if self.module_offset is not None and self.module:
            return f"{self.module}+{self.module_offset:#x}"
        return self.function


def _basename(path: str | None) -> str | None:
    return path.rstrip("/").rsplit("/", 1)[-1] if path else None


def _stack_pointer(record: CrashRecord) -> int | None:
    for name in _SP_REGISTERS:
        if name in record.registers:
            return record.registers[name]
    return None


def _function(frame: SignalFrame) -> str:
    if frame.function:
        name = normalize_function(frame.function)
        if name:
            return name
    return address_frame(frame.module, frame.module_offset, frame.interrupted_pc)


def signal_race(record: CrashRecord) -> SignalRace | None:
    """The race this crash is evidence of, or None (see the module docstring for the rule)."""
    if "returned_to_bad_address" not in record.anomaly_names:
        return None
    sp = _stack_pointer(record)
    if sp is None:
        return None
    dead = [s for s in record.signal_frames if s.offset < 0 and s.interrupted_sp is not None]
    if not dead:
        return None
    nearest = max(dead, key=lambda s: s.offset)
    assert nearest.interrupted_sp is not None
    delta = sp - nearest.interrupted_sp
    if not 0 <= delta <= SP_SLACK:
        return None
    return SignalRace(
        function=_function(nearest),
        pc=nearest.interrupted_pc,
        module=_basename(nearest.module),
        function_offset=nearest.function_offset if nearest.function else None,
        module_offset=nearest.module_offset,
        signal=nearest.signal,
        frame_offset=nearest.offset,
        sp_delta=delta,
    )


def race_key(symbolic: str) -> str | None:
    """The interrupted function of a race crash's symbolic signature, else None."""
    return symbolic[len(RACE_PREFIX) :] if symbolic.startswith(RACE_PREFIX) else None


def _signal_name(signo: int) -> str:
    try:
        return _signal.Signals(signo).name
    except ValueError:
        return f"signal {signo}"


def race_evidence(records: Iterable[CrashRecord]) -> tuple[str, ...]:
    """Sentences for a race population: how many crashes share the interrupted function, the
    interrupted offsets (one instruction or many), the signal, and what that means."""
    races = [r for r in (signal_race(rec) for rec in records) if r is not None]
    if not races:
        return ()
    keys = Counter(r.key for r in races)
    key, shared = keys.most_common(1)[0]
    n = len(races)
    where = Counter(r.where for r in races)
    signals = Counter(r.signal for r in races)
    sp_same = sum(1 for r in races if r.sp_delta == 0)
    lines = [
        f"Signal race (method: signal frames in the dead stack, validated by their saved "
        f"ucontext): {shared} of {n} crashes returned to a bad address right after a signal "
        f"handler had interrupted {key}; in {sp_same} of them the interrupted stack pointer "
        f"is the crash's own.",
    ]
    spots = ", ".join(f"{w} ×{c}" for w, c in where.most_common(5))
    if len(where) == 1:
        lines.append(
            f"Interrupted at one address in all {n} crashes ({spots}): a window one "
            f"instruction wide."
        )
    else:
        more = f" and {len(where) - 5} more" if len(where) > 5 else ""
        lines.append(f"Interrupted at {len(where)} distinct addresses: {spots}{more}.")
    known = {s: c for s, c in signals.items() if s is not None}
    unknown = signals.get(None, 0)
    parts = [f"{_signal_name(s)} ×{c}" for s, c in sorted(known.items())]
    if unknown:
        parts.append(
            f"unknown ×{unknown} (a handler installed without SA_SIGINFO leaves the frame's "
            f"siginfo unwritten)"
        )
    lines.append("Signal: " + ", ".join(parts) + ".")
    lines.append(
        f"Meaning: a race between a signal handler and {key}: the signal frame overwrote "
        f"stack that the interrupted code still read after the handler returned (e.g. data "
        f"left below the stack pointer), not a faulty CPU."
    )
    return tuple(lines)
