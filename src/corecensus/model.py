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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ANOMALY_NAMES",
    "Anomaly",
    "CrashRecord",
    "Frame",
    "MappedFile",
    "ParseStatus",
    "SignalFrame",
    "StackWord",
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


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame of a backtrace.

    ``recovered`` is true for frames found by scanning the stack after the unwinder stopped at a
    bad pc, rather than by unwinding.
    """

    pc: int
    function: str | None = None
    module: str | None = None
    offset: int | None = None
    build_id: str | None = None
    recovered: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "pc": self.pc,
            "function": self.function,
            "module": self.module,
            "offset": self.offset,
            "build_id": self.build_id,
            "recovered": self.recovered,
        }


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
    """A signal frame found in the stack window: what the thread was doing when a signal came."""

    offset: int
    interrupted_pc: int
    function: str | None = None
    interrupted_sp: int | None = None
    signal: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "interrupted_pc": self.interrupted_pc,
            "function": self.function,
            "interrupted_sp": self.interrupted_sp,
            "signal": self.signal,
        }


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
    errors: tuple[str, ...] = ()
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
    cpu: int | None = None
    writer: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def anomaly_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.anomalies)

    def to_json(self) -> dict[str, Any]:
        """The ``corecensus inspect --json`` object (a stable contract)."""
        return {
            "core_id": self.core_id,
            "status": str(self.status),
            "errors": list(self.errors),
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
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> CrashRecord:
        """Inverse of :meth:`to_json` (used by the store and reprocess)."""
        return cls(
            core_id=obj["core_id"],
            status=ParseStatus(obj["status"]),
            errors=tuple(obj.get("errors", ())),
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
            frames=tuple(Frame(**f) for f in obj.get("frames", ())),
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
            metadata=dict(obj.get("metadata", {})),
        )
