"""Signature rules: small classes run in order; one that fails adds a note and the rest still run.

The structure is Mozilla's signature generator's (socorro ``signature/generator.py`` runs a
``DEFAULT_PIPELINE`` of rules with ``predicate``/``action``; ``rules.py`` holds them), including
its walk over frames: skip irrelevant frames, keep prefix frames and go on, stop after the first
frame that is neither (``CSignatureTool.generate``).
"""

from __future__ import annotations

import signal as _signal
from dataclasses import dataclass, field

from corecensus.model import CrashRecord, ParseStatus
from corecensus.signature.frames import FrameOrigin, FrameView, ModuleMap, PcKind, select_frames
from corecensus.signature.normalize import address_frame, normalize_function
from corecensus.signature.race import RACE_PREFIX, signal_race
from corecensus.signature.siglists import FrameList
from corecensus.signature.signatures import anomaly_class

__all__ = [
    "ADDRESS_FRAMES",
    "ADDRESS_WINDOW_FRAMES",
    "MAXIMUM_FRAMES_TO_CONSIDER",
    "SIGNATURE_MAX_LENGTH",
    "AddressSignatureRule",
    "AnomalyClassRule",
    "EmptySignatureRule",
    "FrameSelectionRule",
    "ProgramSignalRule",
    "SignalRaceRule",
    "SignatureResult",
    "SignatureRule",
    "SymbolicSignatureRule",
    "TruncateRule",
    "frame_text",
]

ADDRESS_FRAMES = 5
# Stack-window words farther from sp are increasingly stale data, and whether one falls inside
# the window depends on the stack's random alignment: two runs of one bug differed in the fifth
# word (tests/signature/test_signature_real_crashes.py). Only the nearest ones sign a crash.
ADDRESS_WINDOW_FRAMES = 2
MAXIMUM_FRAMES_TO_CONSIDER = 40
SIGNATURE_MAX_LENGTH = 255
FRAME_DELIMITER = " | "
UNKNOWN = "?"
# 64 bits of a build id tell builds apart across any fleet and keep the signature readable.
BUILD_ID_DIGITS = 16


@dataclass
class SignatureResult:
    """The signatures being built; rules read and change it in order."""

    program: str = UNKNOWN
    signal: str = "SIG?"
    anomaly_class: str = "none"
    frames: list[FrameView] = field(default_factory=list)
    unwind_failed: bool = False
    address: str = ""
    symbolic: str = ""
    notes: list[str] = field(default_factory=list)
    debug_log: list[str] = field(default_factory=list)

    def note(self, rule: str, message: str) -> None:
        self.notes.append(f"{rule}: {message}")

    def debug(self, rule: str, message: str) -> None:
        self.debug_log.append(f"{rule}: {message}")


class SignatureRule:
    """A signature rule. ``action`` runs only when ``predicate`` is true."""

    @property
    def name(self) -> str:
        return type(self).__name__

    def predicate(self, crash: CrashRecord, result: SignatureResult) -> bool:
        return True

    def action(self, crash: CrashRecord, result: SignatureResult) -> None:
        raise NotImplementedError


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1] or path


def _signal_name(number: int) -> str:
    try:
        return _signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


class ProgramSignalRule(SignatureRule):
    """Program basename (exe, else comm) and signal name, from the record or its metadata."""

    def action(self, crash: CrashRecord, result: SignatureResult) -> None:
        meta = crash.metadata
        for candidate in (
            crash.exe,
            meta.get("COREDUMP_EXE"),
            crash.comm,
            meta.get("COREDUMP_COMM"),
        ):
            if candidate and candidate.strip():
                result.program = _basename(candidate.strip()).replace(" ", "_")
                break
        if crash.signal_name:
            result.signal = crash.signal_name
        elif crash.signal is not None:
            result.signal = _signal_name(crash.signal)
        elif meta.get("COREDUMP_SIGNAL_NAME"):
            result.signal = meta["COREDUMP_SIGNAL_NAME"]
        elif (raw := meta.get("COREDUMP_SIGNAL", "")).isdigit():
            result.signal = _signal_name(int(raw))


class AnomalyClassRule(SignatureRule):
    def action(self, crash: CrashRecord, result: SignatureResult) -> None:
        result.anomaly_class = anomaly_class(crash.anomaly_names)


class FrameSelectionRule(SignatureRule):
    """Unwound frames, or when unwinding failed the crashing pc plus recovered frames / stack
    window code addresses (see :mod:`corecensus.signature.frames`)."""

    def action(self, crash: CrashRecord, result: SignatureResult) -> None:
        frames, failed, how = select_frames(crash)
        result.frames = frames
        result.unwind_failed = failed
        result.debug(self.name, how)
        if failed:
            result.note(self.name, how)


def _address_token(frame: FrameView) -> str:
    if frame.kind is PcKind.NULL:
        return "@0x0"
    if frame.kind is PcKind.STACK:
        return "@stack"
    if frame.module_offset is not None and (frame.build_id or frame.module):
        module = (
            frame.build_id[:BUILD_ID_DIGITS] if frame.build_id else _basename(frame.module or "")
        )
        return f"{module}+0x{frame.module_offset:x}"
    return "@unmapped"


class AddressSignatureRule(SignatureRule):
    """``program SIGNAL tok | tok | ...`` over the top :data:`ADDRESS_FRAMES` frames outside
    system libraries, at most :data:`ADDRESS_WINDOW_FRAMES` of them from the stack window.

    A token is ``<build id, first 16 hex digits>+0xoffset`` (the module basename when the build
    id is unknown), ``@0x0`` or ``@stack``.
    """

    def __init__(
        self,
        system_modules: FrameList,
        frames: int = ADDRESS_FRAMES,
        window_frames: int = ADDRESS_WINDOW_FRAMES,
    ) -> None:
        self.system_modules = system_modules
        self.frames = frames
        self.window_frames = window_frames

    def _is_system(self, frame: FrameView) -> bool:
        return (
            frame.kind is PcKind.CODE
            and frame.module is not None
            and self.system_modules.matches(_basename(frame.module))
        )

    def action(self, crash: CrashRecord, result: SignatureResult) -> None:
        own = [f for f in result.frames if not self._is_system(f)]
        if len(own) < len(result.frames):
            result.debug(self.name, f"left out {len(result.frames) - len(own)} system frames")
        chosen: list[FrameView] = []
        from_window = 0
        for frame in own or result.frames:
            if len(chosen) == self.frames:
                break
            if frame.origin is FrameOrigin.STACK_WINDOW:
                if from_window == self.window_frames:
                    break
                from_window += 1
            chosen.append(frame)
        tokens = [_address_token(f) for f in chosen]
        body = FRAME_DELIMITER.join(tokens) if tokens else "<no frames>"
        result.address = f"{result.program} {result.signal} {body}"


def frame_text(frame: FrameView) -> str:
    """The normalized text of one frame for the symbolic signature."""
    if frame.kind is PcKind.NULL:
        return "@0x0"
    if frame.kind is PcKind.STACK:
        return "@stack"
    if frame.function:
        name = normalize_function(frame.function)
        if name:
            return name
    return address_frame(frame.module, frame.module_offset, frame.pc)


class SymbolicSignatureRule(SignatureRule):
    """Normalized frames through the irrelevant/prefix lists (socorro ``CSignatureTool``)."""

    def __init__(self, irrelevant: FrameList, prefix: FrameList) -> None:
        self.irrelevant = irrelevant
        self.prefix = prefix

    def action(self, crash: CrashRecord, result: SignatureResult) -> None:
        frames = result.frames[:MAXIMUM_FRAMES_TO_CONSIDER]
        kept: list[str] = []
        for text in (frame_text(f) for f in frames):
            if self.irrelevant.matches(text):
                result.debug(self.name, f"irrelevant; ignoring: {text!r}")
                continue
            kept.append(text)
            if not self.prefix.matches(text):
                result.debug(self.name, f"not a prefix; stop: {text!r}")
                break
            result.debug(self.name, f"prefix; continue: {text!r}")
        if kept:
            result.symbolic = FRAME_DELIMITER.join(kept)
        elif frames:
            result.symbolic = frame_text(frames[0])
            result.note(self.name, "every frame is irrelevant; using the top frame")


class SignalRaceRule(SignatureRule):
    """A return to a bad address right after a signal interrupted function F is keyed by F
    (:mod:`corecensus.signature.race`), not by the stale frames recovered around it: those
    differ from core to core and would split one race into many populations."""

    def action(self, crash: CrashRecord, result: SignatureResult) -> None:
        race = signal_race(crash)
        if race is None:
            return
        result.symbolic = RACE_PREFIX + race.key
        found = ModuleMap(crash.modules).find(race.pc)
        token = (
            f"{found.build_id[:BUILD_ID_DIGITS]}+0x{race.module_offset:x}"
            if found is not None and found.build_id and race.module_offset is not None
            else race.where
        )
        result.address = f"{result.program} {result.signal} signal-race {token}"
        result.note(self.name, f"signal race: interrupted at {race.where}; keyed by {race.key}")


class EmptySignatureRule(SignatureRule):
    """Say why there is no signature, instead of leaving it blank."""

    def predicate(self, crash: CrashRecord, result: SignatureResult) -> bool:
        return not result.symbolic or not result.address

    def action(self, crash: CrashRecord, result: SignatureResult) -> None:
        if crash.status is ParseStatus.UNPARSED:
            reason = "EMPTY: core not parsed"
        elif not crash.frames and not crash.stack_window:
            reason = "EMPTY: no frame data"
        else:
            reason = "EMPTY: no usable frame"
        if not result.symbolic:
            result.symbolic = reason
            result.note(self.name, reason)
        if not result.address:
            result.address = f"{result.program} {result.signal} <no frames>"


class TruncateRule(SignatureRule):
    """Cap signatures at :data:`SIGNATURE_MAX_LENGTH` characters (socorro ``SigTruncate``)."""

    def predicate(self, crash: CrashRecord, result: SignatureResult) -> bool:
        return max(len(result.symbolic), len(result.address)) > SIGNATURE_MAX_LENGTH

    def action(self, crash: CrashRecord, result: SignatureResult) -> None:
        for attr in ("symbolic", "address"):
            value: str = getattr(result, attr)
            if len(value) > SIGNATURE_MAX_LENGTH:
                setattr(result, attr, value[: SIGNATURE_MAX_LENGTH - 3] + "...")
                result.note(self.name, f"{attr} signature truncated from {len(value)} chars")
