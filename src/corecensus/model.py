"""Frozen record types shared by every part of corecensus.

A :class:`CrashRecord` holds the raw facts extracted from one core dump plus its metadata. It is
what ``corecensus inspect --json`` prints (via :meth:`CrashRecord.to_json`) and what the store
keeps; signatures and verdicts are derived from it later, so a new rule is a reprocess, not a
re-ingest.

Addresses are integers (Python ints, unsigned); offsets are bytes; times are microseconds since
the Unix epoch, as systemd-coredump's ``COREDUMP_TIMESTAMP``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ANOMALY_NAMES",
    "Anomaly",
    "CrashRecord",
    "Frame",
    "FrameTrust",
    "MappedFile",
    "ParseStatus",
    "Problem",
    "ProblemKind",
    "Severity",
    "SignalFrame",
    "StackWord",
    "ThreadDetail",
    "status_of",
]

# The anomaly names are a public contract (``--json``, the store, signatures); keep them exact.
ANOMALY_NAMES: tuple[str, ...] = (
    "pc_zero",
    "pc_not_executable",
    "returned_to_bad_address",
    "sp_off_by_8",
    "sp_outside_stack",
    "fault_address_mismatch",
    "bit_flip_candidate",
    "sigbus_memory_error",
)


class ParseStatus(enum.StrEnum):
    """How much of a core could be read."""

    OK = "ok"
    PARTIAL = "partial"
    UNPARSED = "unparsed"


class Severity(enum.IntEnum):
    """What a problem costs the record it is on (ordered: the worst decides the status)."""

    NOTE = 0  # worth saying; the facts are complete
    DEGRADED = 1  # some facts are missing: the record is ``partial``
    FATAL = 2  # nothing usable was read: the record is ``unparsed``


class ProblemKind(enum.StrEnum):
    """What went wrong while reading a crash (a stable contract: ``problems[].kind`` in JSON)."""

    NOT_A_CORE = "not_a_core"
    KERNEL_DUMP = "kernel_dump"
    UNREADABLE = "unreadable"  # the file could not be opened or read at all
    CORRUPT = "corrupt"  # the head is damaged, compressed badly, or beyond the hard limits
    WORKER_DIED = "worker_died"  # the parser process died on this core
    TRUNCATED = "truncated"  # headers, notes or memory end past the end of the file
    DAMAGED = "damaged"  # a stream that turned corrupt part-way, unreadable memory
    CAPPED = "capped"  # more than a limit allows was present; the rest was not kept
    TIMED_OUT = "timed_out"  # a step ran out of its time budget (DESIGN.md, outage lesson 2)
    NO_REGISTERS = "no_registers"  # no thread, or an architecture whose registers we cannot read
    NO_STACK = "no_stack"  # the stack window around sp could not be read
    UNWIND_STOPPED = "unwind_stopped"  # the unwinder gave no frames
    NOTE_MALFORMED = "note_malformed"  # a note that could not be decoded (others were)
    SYMBOLS = "symbols"  # debug info or symbol problems; frames may lack names
    RULE_FAILED = "rule_failed"  # an anomaly rule could not run; the others did
    METADATA = "metadata"  # a sidecar, xattr or journal field was malformed
    NOT_A_CRASH = "not_a_crash"  # a snapshot (gcore, a stopped process): no crash anomalies
    OTHER = "other"  # a kind this version does not know (a record from a newer corecensus)

    @property
    def severity(self) -> Severity:
        return _SEVERITY.get(self, Severity.NOTE)


_SEVERITY: dict[ProblemKind, Severity] = {
    ProblemKind.NOT_A_CORE: Severity.FATAL,
    ProblemKind.KERNEL_DUMP: Severity.FATAL,
    ProblemKind.UNREADABLE: Severity.FATAL,
    ProblemKind.CORRUPT: Severity.FATAL,
    ProblemKind.WORKER_DIED: Severity.FATAL,
    ProblemKind.TRUNCATED: Severity.DEGRADED,
    ProblemKind.DAMAGED: Severity.DEGRADED,
    ProblemKind.CAPPED: Severity.DEGRADED,
    ProblemKind.TIMED_OUT: Severity.DEGRADED,
    ProblemKind.NO_REGISTERS: Severity.DEGRADED,
    ProblemKind.NO_STACK: Severity.DEGRADED,
    ProblemKind.UNWIND_STOPPED: Severity.DEGRADED,
}


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing that went wrong, as data: code decides by ``kind``; people read ``detail``."""

    kind: ProblemKind
    detail: str

    def __str__(self) -> str:
        return self.detail

    def to_json(self) -> dict[str, str]:
        return {"kind": str(self.kind), "detail": self.detail}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Problem:
        try:
            kind = ProblemKind(obj.get("kind", ""))
        except ValueError:
            kind = ProblemKind.OTHER  # written by a newer corecensus
        return cls(kind, str(obj.get("detail", "")))


def status_of(problems: Iterable[Problem]) -> ParseStatus:
    """The status a record's problems imply: the worst severity decides."""
    worst = max((p.kind.severity for p in problems), default=Severity.NOTE)
    if worst is Severity.FATAL:
        return ParseStatus.UNPARSED
    return ParseStatus.PARTIAL if worst is Severity.DEGRADED else ParseStatus.OK


@dataclass(frozen=True, slots=True)
class MappedFile:
    """A file mapped into the crashed process (from NT_FILE, or the link map for gcore cores)."""

    path: str
    base: int
    end: int
    file_offset: int = 0
    build_id: str | None = None
    executable: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "build_id": self.build_id,
            "base": self.base,
            "end": self.end,
            "file_offset": self.file_offset,
            "executable": self.executable,
        }


class FrameTrust(enum.StrEnum):
    """How a frame was found, most trusted first (rust-minidump's ``FrameTrust``, Breakpad's
    ``StackFrame::FrameTrust``): scanned frames are return addresses found in the stack, each
    accepted only when the call before it fits the frame above it."""

    CONTEXT = "context"  # the crashing thread's own registers
    UNWOUND = "unwound"  # the unwinder (drgn: CFI, or frame pointers where there is no CFI)
    FRAME_POINTER = "frame_pointer"  # the return address above the frame pointer, at a bad pc
    SCAN_CALL_TARGET = "scan_call_target"  # a direct call whose target is the callee's function
    SCAN_PLT_CALL = "scan_plt_call"  # a direct call to a PLT stub, callee in another module
    SCAN_INDIRECT_CALL = "scan_indirect_call"  # an indirect call (target not checkable)
    SCAN = "scan"  # after a call, above a bad pc whose callee is unknown


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame of a backtrace.

    ``recovered`` is true for frames found by scanning the stack after the unwinder stopped at a
    bad pc, rather than by unwinding; ``trust`` says how each frame was found.
    """

    pc: int
    function: str | None = None
    module: str | None = None
    offset: int | None = None
    build_id: str | None = None
    recovered: bool = False
    trust: FrameTrust | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "pc": self.pc,
            "function": self.function,
            "module": self.module,
            "offset": self.offset,
            "build_id": self.build_id,
            "recovered": self.recovered,
            "trust": None if self.trust is None else str(self.trust),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Frame:
        try:
            trust: FrameTrust | None = FrameTrust(obj["trust"]) if obj.get("trust") else None
        except ValueError:
            trust = None  # a kind of trust from a newer corecensus
        return cls(
            pc=obj["pc"],
            function=obj.get("function"),
            module=obj.get("module"),
            offset=obj.get("offset"),
            build_id=obj.get("build_id"),
            recovered=bool(obj.get("recovered", False)),
            trust=trust,
        )


@dataclass(frozen=True, slots=True)
class StackWord:
    """A word of the stack window that holds a code address.

    ``offset`` is bytes from the crashing thread's stack pointer: negative below it (dead frames),
    non-negative at or above it (live frames).
    """

    offset: int
    address: int
    function: str | None = None
    module: str | None = None
    module_offset: int | None = None
    after_call: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "address": self.address,
            "function": self.function,
            "module": self.module,
            "module_offset": self.module_offset,
            "after_call": self.after_call,
        }


@dataclass(frozen=True, slots=True)
class SignalFrame:
    """A signal frame found in the stack window: what the thread was doing when a signal came.

    ``offset`` is the frame's address minus the crashing thread's stack pointer (negative: dead
    stack, the handler already returned). ``signal`` is None when the frame's siginfo was not
    written (a handler installed without ``SA_SIGINFO``). ``function_offset`` is the interrupted
    pc's distance from the start of ``function``; ``module_offset`` from the module's base.
    """

    offset: int
    interrupted_pc: int
    function: str | None = None
    interrupted_sp: int | None = None
    signal: int | None = None
    function_offset: int | None = None
    module: str | None = None
    module_offset: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "interrupted_pc": self.interrupted_pc,
            "function": self.function,
            "function_offset": self.function_offset,
            "module": self.module,
            "module_offset": self.module_offset,
            "interrupted_sp": self.interrupted_sp,
            "signal": self.signal,
        }


@dataclass(frozen=True, slots=True)
class ThreadDetail:
    """One thread of the process as the core left it: its tid, the signal it had taken (the
    crashing thread's; usually None for the others), its registers and its frames."""

    tid: int
    signal: int | None = None
    registers: Mapping[str, int] = field(default_factory=dict)
    frames: tuple[Frame, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "tid": self.tid,
            "signal": self.signal,
            "registers": dict(self.registers),
            "frames": [f.to_json() for f in self.frames],
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ThreadDetail:
        return cls(
            tid=obj["tid"],
            signal=obj.get("signal"),
            registers=dict(obj.get("registers", {})),
            frames=tuple(Frame.from_json(f) for f in obj.get("frames", ())),
        )


@dataclass(frozen=True, slots=True)
class Anomaly:
    """A register-level anomaly. ``name`` is one of :data:`ANOMALY_NAMES`."""

    name: str
    detail: str
    confidence: float = 1.0
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "detail": self.detail,
            "confidence": self.confidence,
            "data": dict(self.data),
        }


@dataclass(frozen=True, slots=True)
class CrashRecord:
    """Everything corecensus extracted from one core dump, plus its metadata.

    ``effective_address`` is the address the faulting instruction computed from the saved
    registers (decoded with capstone); it recovers the real address of a non-canonical fault, for
    which the kernel reports 0. ``core_id`` is a content hash of the core's head (the bytes that were parsed) and identifies
    the crash for idempotent ingest. ``metadata`` holds systemd-coredump / corecensus fields
    (``COREDUMP_HOSTNAME``, ``CORECENSUS_CPU``, ...) as strings; unknown fields are kept.
    """

    core_id: str
    status: ParseStatus
    problems: tuple[Problem, ...] = ()
    source: str | None = None
    arch: str | None = None
    pid: int | None = None
    comm: str | None = None
    exe: str | None = None
    cmdline: str | None = None
    signal: int | None = None
    signal_name: str | None = None
    si_code: int | None = None
    si_code_name: str | None = None
    fault_address: int | None = None
    effective_address: int | None = None
    instruction: str | None = None
    crashed_tid: int | None = None
    threads: int = 0
    registers: Mapping[str, int] = field(default_factory=dict)
    modules: tuple[MappedFile, ...] = ()
    frames: tuple[Frame, ...] = ()
    anomalies: tuple[Anomaly, ...] = ()
    stack_window: tuple[StackWord, ...] = ()
    signal_frames: tuple[SignalFrame, ...] = ()
    threads_detail: tuple[ThreadDetail, ...] = ()
    cpu: int | None = None
    writer: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def errors(self) -> tuple[str, ...]:
        """The problems as sentences (the ``errors`` list of the JSON contract)."""
        return tuple(p.detail for p in self.problems)

    @property
    def anomaly_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.anomalies)

    def to_json(self) -> dict[str, Any]:
        """The ``corecensus inspect --json`` object (a stable contract)."""
        return {
            "core_id": self.core_id,
            "status": str(self.status),
            "errors": list(self.errors),
            "problems": [p.to_json() for p in self.problems],
            "source": self.source,
            "writer": self.writer,
            "arch": self.arch,
            "pid": self.pid,
            "comm": self.comm,
            "exe": self.exe,
            "cmdline": self.cmdline,
            "signal": self.signal,
            "signal_name": self.signal_name,
            "si_code": self.si_code,
            "si_code_name": self.si_code_name,
            "fault_address": self.fault_address,
            "effective_address": self.effective_address,
            "instruction": self.instruction,
            "crashed_tid": self.crashed_tid,
            "threads": self.threads,
            "cpu": self.cpu,
            "registers": dict(self.registers),
            "modules": [m.to_json() for m in self.modules],
            "frames": [f.to_json() for f in self.frames],
            "anomalies": list(self.anomaly_names),
            "anomaly_details": [a.to_json() for a in self.anomalies],
            "stack_window": [w.to_json() for w in self.stack_window],
            "signal_frames": [s.to_json() for s in self.signal_frames],
            "threads_detail": [t.to_json() for t in self.threads_detail],
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> CrashRecord:
        """Inverse of :meth:`to_json` (used by the store and reprocess)."""
        return cls(
            core_id=obj["core_id"],
            status=ParseStatus(obj["status"]),
            problems=_problems_from_json(obj),
            source=obj.get("source"),
            writer=obj.get("writer"),
            arch=obj.get("arch"),
            pid=obj.get("pid"),
            comm=obj.get("comm"),
            exe=obj.get("exe"),
            cmdline=obj.get("cmdline"),
            signal=obj.get("signal"),
            signal_name=obj.get("signal_name"),
            si_code=obj.get("si_code"),
            si_code_name=obj.get("si_code_name"),
            fault_address=obj.get("fault_address"),
            effective_address=obj.get("effective_address"),
            instruction=obj.get("instruction"),
            crashed_tid=obj.get("crashed_tid"),
            threads=obj.get("threads", 0),
            cpu=obj.get("cpu"),
            registers=dict(obj.get("registers", {})),
            modules=tuple(
                MappedFile(
                    path=m["path"],
                    base=m["base"],
                    end=m.get("end", m["base"]),
                    file_offset=m.get("file_offset", 0),
                    build_id=m.get("build_id"),
                    executable=m.get("executable", False),
                )
                for m in obj.get("modules", ())
            ),
            frames=tuple(Frame.from_json(f) for f in obj.get("frames", ())),
            anomalies=tuple(
                Anomaly(
                    name=a["name"],
                    detail=a.get("detail", ""),
                    confidence=a.get("confidence", 1.0),
                    data=a.get("data", {}),
                )
                for a in obj.get("anomaly_details", ())
            ),
            stack_window=tuple(StackWord(**w) for w in obj.get("stack_window", ())),
            signal_frames=tuple(SignalFrame(**s) for s in obj.get("signal_frames", ())),
            threads_detail=tuple(ThreadDetail.from_json(t) for t in obj.get("threads_detail", ())),
            metadata=dict(obj.get("metadata", {})),
        )


def _problems_from_json(obj: Mapping[str, Any]) -> tuple[Problem, ...]:
    """``problems`` when present; records stored before kinds existed carry only ``errors``
    sentences, kept with the kind their status implies (so the status stays what it was)."""
    if "problems" in obj:
        return tuple(Problem.from_json(p) for p in obj["problems"])
    status = obj.get("status")
    kind = {
        "unparsed": ProblemKind.CORRUPT,
        "partial": ProblemKind.DAMAGED,
    }.get(status if isinstance(status, str) else "", ProblemKind.OTHER)
    return tuple(Problem(kind, str(e)) for e in obj.get("errors", ()))
