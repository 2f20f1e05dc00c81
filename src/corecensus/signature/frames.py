"""Which frames a signature is made of, with module-relative offsets.

When the unwinder worked, these are the unwound frames. When it did not (the crashing pc is 0,
lies in the stack, or in no executable mapping; or the coredump layer marked frames as
``recovered``), the crashing pc is kept as a marker (``@0x0``, ``@stack``) and followed by the
recovered frames, or, if there are none, by the code addresses found in the stack window (return
addresses first, live frames above the stack pointer before dead ones below it). Such crashes
then group by what called into the failure, which is all one can know without a good unwind.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Sequence
from dataclasses import dataclass

from corecensus.model import CrashRecord, Frame, MappedFile, StackWord

__all__ = ["FrameOrigin", "FrameView", "ModuleMap", "PcKind", "select_frames"]

# A pc within this distance of the stack pointer is taken to point into the stack (the default
# main-thread stack limit is 8 MiB).
STACK_PROXIMITY = 8 * 1024 * 1024
# How many stack-window words to use at most when unwinding failed.
MAX_WINDOW_FRAMES = 16
_SP_REGISTERS = ("rsp", "sp", "esp", "r13")


class FrameOrigin(enum.StrEnum):
    UNWOUND = "unwound"
    RECOVERED = "recovered"
    STACK_WINDOW = "stack_window"


class PcKind(enum.StrEnum):
    """Where a pc points."""

    CODE = "code"  # inside a mapping of a module (or symbolized without one)
    NULL = "null"  # 0: a call or return to NULL
    STACK = "stack"  # near the stack pointer: a return into data on the stack
    UNMAPPED = "unmapped"  # nowhere we know of


@dataclass(frozen=True, slots=True)
class FrameView:
    """A frame as signatures see it."""

    pc: int
    function: str | None
    module: str | None
    build_id: str | None
    module_offset: int | None
    origin: FrameOrigin
    kind: PcKind


class ModuleMap:
    """Address -> mapped file lookups over a crash's ``modules`` (sorted, binary search)."""

    def __init__(self, modules: Sequence[MappedFile]) -> None:
        self._modules = sorted((m for m in modules if m.end > m.base), key=lambda m: m.base)
        self._bases = [m.base for m in self._modules]

    def __bool__(self) -> bool:
        return bool(self._modules)

    def find(self, address: int) -> MappedFile | None:
        i = bisect.bisect_right(self._bases, address) - 1
        if i >= 0 and self._modules[i].base <= address < self._modules[i].end:
            return self._modules[i]
        return None

    def build_id_of(self, path: str | None) -> str | None:
        if not path:
            return None
        for m in self._modules:
            if m.build_id and (m.path == path or m.path.rsplit("/", 1)[-1] == path):
                return m.build_id
        return None


def _stack_pointer(record: CrashRecord) -> int | None:
    for name in _SP_REGISTERS:
        value = record.registers.get(name)
        if value is not None:
            return value
    return None


def _kind(pc: int, mapped: MappedFile | None, sp: int | None, symbolized: bool) -> PcKind:
    if pc == 0:
        return PcKind.NULL
    if mapped is not None:
        return PcKind.CODE
    if sp is not None and abs(pc - sp) <= STACK_PROXIMITY:
        return PcKind.STACK
    return PcKind.CODE if symbolized else PcKind.UNMAPPED


def _view_frame(frame: Frame, modules: ModuleMap, sp: int | None) -> FrameView:
    mapped = modules.find(frame.pc) if frame.pc else None
    if mapped is not None:
        module: str | None = mapped.path
        offset: int | None = frame.pc - mapped.base + mapped.file_offset
        build_id = mapped.build_id or frame.build_id
    else:
        module, offset = frame.module, frame.offset
        build_id = frame.build_id or modules.build_id_of(frame.module)
    return FrameView(
        pc=frame.pc,
        function=frame.function or None,
        module=module,
        build_id=build_id,
        module_offset=offset,
        origin=FrameOrigin.RECOVERED if frame.recovered else FrameOrigin.UNWOUND,
        kind=_kind(frame.pc, mapped, sp, bool(frame.function)),
    )


def _view_word(word: StackWord, modules: ModuleMap) -> FrameView:
    mapped = modules.find(word.address)
    if mapped is not None:
        module: str | None = mapped.path
        offset: int | None = word.address - mapped.base + mapped.file_offset
        build_id = mapped.build_id
    else:
        module, offset = word.module, word.module_offset
        build_id = modules.build_id_of(word.module)
    return FrameView(
        pc=word.address,
        function=word.function or None,
        module=module,
        build_id=build_id,
        module_offset=offset,
        origin=FrameOrigin.STACK_WINDOW,
        kind=PcKind.CODE,
    )


def _window_order(window: Sequence[StackWord]) -> list[StackWord]:
    """Return addresses (``after_call``) if there are any, else every code word; live words
    (at or above sp) nearest first, then dead words nearest first; one per address."""
    words = [w for w in window if w.after_call] or list(window)
    live = sorted((w for w in words if w.offset >= 0), key=lambda w: w.offset)
    dead = sorted((w for w in words if w.offset < 0), key=lambda w: -w.offset)
    seen: set[int] = set()
    ordered: list[StackWord] = []
    for w in [*live, *dead]:
        if w.address not in seen:
            seen.add(w.address)
            ordered.append(w)
    return ordered[:MAX_WINDOW_FRAMES]


def select_frames(record: CrashRecord) -> tuple[list[FrameView], bool, str]:
    """The frames to sign, whether unwinding failed, and a sentence saying which were used."""
    modules = ModuleMap(record.modules)
    sp = _stack_pointer(record)
    views = [_view_frame(f, modules, sp) for f in record.frames]
    if not views and not record.stack_window:
        return [], False, "no frames and no stack window"
    top_bad = bool(views) and views[0].kind is not PcKind.CODE
    recovered = [v for v in views if v.origin is FrameOrigin.RECOVERED]
    failed = not views or top_bad or bool(recovered)
    if not failed:
        return views, False, f"{len(views)} unwound frames"
    head = views[:1]
    if recovered:
        rest = [v for v in views[1:] if v.origin is FrameOrigin.RECOVERED or v.kind is PcKind.CODE]
        return [*head, *rest], True, f"unwinding failed; {len(recovered)} recovered frames"
    tail = [v for v in views[1:] if v.kind is PcKind.CODE]
    if tail:
        return [*head, *tail], True, f"unwinding failed at the top; {len(tail)} frames after it"
    words = [_view_word(w, modules) for w in _window_order(record.stack_window)]
    return (
        [*head, *words],
        True,
        f"unwinding failed; {len(words)} code addresses from the stack window",
    )
