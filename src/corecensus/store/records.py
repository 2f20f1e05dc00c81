"""The rows the store keeps, one frozen dataclass per table, and the shapes it returns.

Each row type is declared once here; its table (DDL, inserts, selects, the in-memory fake) is
derived from it in :mod:`corecensus.store.tables`. Times are microseconds since the Unix epoch
(as ``COREDUMP_TIMESTAMP``). The store persists what it is given: crash rows arrive signed and
flattened by :mod:`corecensus.pipeline`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from corecensus.errors import StoreError
from corecensus.model import CrashRecord

__all__ = [
    "AddResult",
    "CodedColumn",
    "CrashColumns",
    "CrashRow",
    "DamagedCrash",
    "DeployRow",
    "EncodedCrashRows",
    "ExposureRow",
    "Heartbeat",
    "ScreenResultRow",
    "SignatureColumns",
    "decode_crash",
    "decoded_record",
]


@dataclass(frozen=True, slots=True)
class AddResult:
    """What an ``add`` call did: rows stored now, and rows already there (or repeated in the
    batch) that were skipped. Adding is idempotent."""

    new: int = 0
    duplicate: int = 0

    def __add__(self, other: AddResult) -> AddResult:
        return AddResult(self.new + other.new, self.duplicate + other.duplicate)


@dataclass(frozen=True, slots=True)
class ExposureRow:
    """An interval ``[start_us, end_us)`` in which ``host`` ran ``service`` at ``version``
    (a row of ``exposure.csv``)."""

    host: str
    start_us: int
    end_us: int
    service: str
    version: str
    cpu_model: str | None = None


@dataclass(frozen=True, slots=True)
class DeployRow:
    """``service`` moved to ``version`` at ``time_us`` (a row of ``deploys.csv``)."""

    time_us: int
    service: str
    version: str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """An agent's report that ``host`` ran ``service`` at ``version`` at ``time_us``; the
    agent's own heartbeat adds the host's and the agent's uptime (seconds), the records it
    lost since its last report, by reason (``lost``: a JSON object ``{"reason": count}``), and
    the host's microcode and kernel."""

    host: str
    time_us: int
    service: str
    version: str
    uptime_s: int | None = None
    agent_uptime_s: int | None = None
    lost: str | None = None
    microcode: str | None = None
    kernel: str | None = None


@dataclass(frozen=True, slots=True)
class ScreenResultRow:
    """One SDC screen record: the full result as JSON plus the columns queries filter on.
    ``result_id`` is a content hash, so the same record stored twice is stored once."""

    result_id: str
    host: str
    time_us: int
    mode: str
    decision: str
    result_json: str

    @classmethod
    def of(
        cls, host: str, time_us: int, mode: str, decision: str, result: Mapping[str, Any]
    ) -> ScreenResultRow:
        blob = json.dumps(result, sort_keys=True, separators=(",", ":"))
        key = json.dumps([host, time_us, mode, decision, blob], separators=(",", ":"))
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return cls(digest, host, time_us, mode, decision, blob)

    @property
    def result(self) -> dict[str, Any]:
        value = json.loads(self.result_json)
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class SignatureColumns:
    """A crash's signatures and population keys as stored (computed by the pipeline)."""

    sig_address: str
    sig_symbolic: str
    sig_anomaly_class: str
    sig_program: str
    sig_signal: str
    sig_unwind_failed: bool
    sig_notes: tuple[str, ...]
    sig_version: int
    pop_anomaly: str
    pop_symbolic: str
    pop_address: str


@dataclass(frozen=True, slots=True)
class CrashRow:
    """One ``crashes`` row: the flat facts analysis groups by, the signatures (a
    :class:`SignatureColumns`, each of its fields a column: declared once, there), and the whole
    record as JSON (everything but ``record_json`` is derived and could be recomputed from it).
    ``ingested_us`` is set by the store when the row is first stored."""

    core_id: str
    time_us: int | None
    host: str | None
    cpu: int | None
    cpu_model: str | None
    microcode: str | None
    kernel: str | None
    service: str | None
    version: str | None
    exe: str | None
    signal: int | None
    status: str
    anomalies: tuple[str, ...]
    anomaly_mask: int
    # stored as its own columns (sig_*, pop_*), in this place among the crash's
    signature: SignatureColumns
    ingested_us: int
    record_json: str
    # The per-CPU test's facts (schema version 2; issue 9): online CPUs, the physical core of
    # ``cpu``, the process's allowed CPUs (a canonical CPU list).
    host_cpus: int | None = None
    cpu_core: int | None = None
    cpus_allowed: str | None = None


def _encoded_crash_row() -> Any:
    """A msgspec Struct of :class:`CrashRow`'s fields, in its order and of its types, but for
    ``record_json``: the msgpack encoding of the text (:class:`msgspec.Raw`), not a string."""
    hints = typing.get_type_hints(CrashRow)
    fields: list[Any] = []
    for f in dataclasses.fields(CrashRow):
        kind = msgspec.Raw if f.name == "record_json" else hints[f.name]
        has_default = f.default is not dataclasses.MISSING
        fields.append((f.name, kind, f.default) if has_default else (f.name, kind))
    return msgspec.defstruct("EncodedCrashRow", fields, frozen=True, gc=False, module=__name__)


_EncodedCrashRow = _encoded_crash_row()
_encoded_crash_rows = msgspec.msgpack.Decoder(list[_EncodedCrashRow])  # type: ignore[valid-type]
_json_text = msgspec.msgpack.Decoder(str)


@dataclass(frozen=True, slots=True, eq=False)
class EncodedCrashRows:
    r"""Crash rows as msgpack carries :class:`CrashRow`\ s (a list of their maps: the
    collector's journal), decoded but for each row's whole record, which stays the msgpack
    bytes of its JSON text (about 10 KB of a row's 10.5). The DuckDB store copies those bytes
    into its insert once; decoded into a string, the text was made, checked and copied again
    into Arrow's buffer, two thirds of the collector's loader's CPU before DuckDB
    (bench/collector_writer_bench.py --stages). ``rows`` are those Structs or
    :class:`CrashRow`\ s (a journal's old frames): both have a crash row's attributes."""

    rows: list[Any]

    @classmethod
    def decode(cls, payloads: Iterable[bytes | memoryview]) -> EncodedCrashRows:
        """The rows of ``payloads``, each a msgpack list of crash rows; raises
        :class:`msgspec.DecodeError` or :class:`msgspec.ValidationError`."""
        rows: list[Any] = []
        for payload in payloads:
            rows += _encoded_crash_rows.decode(payload)
        return cls(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)

    def crash_rows(self) -> list[CrashRow]:
        r"""The rows as :class:`CrashRow`\ s, their record's text decoded (a store that keeps
        rows as they are: the in-memory fake)."""
        return [r if isinstance(r, CrashRow) else _crash_row_of(r) for r in self.rows]


def _crash_row_of(row: Any) -> CrashRow:
    values = {f.name: getattr(row, f.name) for f in dataclasses.fields(CrashRow)}
    try:
        values["record_json"] = _json_text.decode(row.record_json)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StoreError(f"crash {row.core_id}: its record is not a text: {exc}") from exc
    return CrashRow(**values)


@dataclass(frozen=True, slots=True, eq=False)
class CodedColumn:
    """A string column, dictionary-encoded: ``codes[i]`` indexes ``vocab`` (sorted by code
    point, as Python sorts), ``-1`` where the value is unknown (``NULL`` or empty). The analysis
    layer takes codes and vocabulary as they are (its ``Categorical``)."""

    codes: npt.NDArray[np.int32]
    vocab: tuple[str, ...]

    @classmethod
    def encode(cls, values: Iterable[str | None]) -> CodedColumn:
        values = list(values)
        vocab = tuple(sorted({v for v in values if v}))
        index = {v: i for i, v in enumerate(vocab)}
        codes = np.array([index[v] if v else -1 for v in values], dtype=np.int32)
        return cls(codes, vocab)

    def decode(self) -> list[str | None]:
        """The values as strings, ``None`` for unknown (one object each: for small columns)."""
        return [self.vocab[c] if c >= 0 else None for c in self.codes.tolist()]


@dataclass(frozen=True, slots=True)
class CrashColumns:
    """Crash table as NumPy columns for the analysis layer, one row per crash, ordered by time
    (unknown times last) then ``core_id``.

    Each string column is a :class:`CodedColumn` (``int32`` codes into a sorted vocabulary), so
    a store of ten million crashes returns arrays, not a Python string per value; integer facts
    are ``int32`` as stored. ``row`` is the store's handle of each crash, for
    :meth:`~corecensus.store.Store.core_ids` (valid until the store is next written).
    ``time_us`` is 0 where ``time_known`` is false; ``cpu`` is -1 where unknown.
    ``anomaly_mask`` has bit ``i`` set for ``corecensus.model.ANOMALY_NAMES[i]``. ``population``
    is the population key of the chosen level (``anomaly``, ``symbolic`` or ``address``).
    ``host_cpus``, ``cpu_core`` (-1 unknown) and ``cpus_allowed`` are the per-CPU test's facts,
    ``None`` when no crash has the fact. ``exe`` and ``signal`` (-1 unknown) are what a listing
    of crashes shows and the analysis does not read: only with ``details``, else ``None``.
    """

    level: str
    row: npt.NDArray[np.int64]
    host: CodedColumn
    time_us: npt.NDArray[np.int64]
    time_known: npt.NDArray[np.bool_]
    cpu: npt.NDArray[np.int32]
    cpu_model: CodedColumn
    microcode: CodedColumn
    kernel: CodedColumn
    service: CodedColumn
    version: CodedColumn
    population: CodedColumn
    anomaly_mask: npt.NDArray[np.uint16]
    host_cpus: npt.NDArray[np.int32] | None = None
    cpu_core: npt.NDArray[np.int32] | None = None
    cpus_allowed: CodedColumn | None = None
    exe: CodedColumn | None = None
    signal: npt.NDArray[np.int32] | None = None

    def __len__(self) -> int:
        return int(self.row.shape[0])


@dataclass(frozen=True, slots=True)
class DamagedCrash:
    """A stored crash row whose record cannot be read back: its ``core_id`` and why (the JSON
    damaged, not a crash record, or a record of another core). A walk through the store yields
    it in the record's place, so one damaged row never stops the others (issue 10)."""

    core_id: str
    reason: str


def decode_crash(core_id: str, record_json: str) -> CrashRecord | DamagedCrash:
    """The record stored as ``record_json`` in the row of ``core_id``, or why it cannot be."""
    try:
        obj = json.loads(record_json)
    except ValueError as exc:
        return DamagedCrash(core_id, f"stored record is not JSON: {exc}")
    except RecursionError:
        return DamagedCrash(core_id, "stored record is JSON nested too deeply")
    if not isinstance(obj, dict):
        return DamagedCrash(core_id, f"stored record is a JSON {type(obj).__name__}, not an object")
    try:
        record = CrashRecord.from_json(obj)
    except KeyError as exc:
        return DamagedCrash(core_id, f"stored record lacks {exc}")
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        return DamagedCrash(core_id, f"stored record is not a crash record: {exc}")
    if record.core_id != core_id:
        return DamagedCrash(core_id, f"stored record is that of core {record.core_id!r}")
    return record


def decoded_record(outcome: CrashRecord | DamagedCrash, location: str) -> CrashRecord:
    """The record, or a :class:`StoreError` that names the damaged row (for readers that need
    every record they ask for)."""
    if isinstance(outcome, DamagedCrash):
        raise StoreError(
            f"{location}: stored record {outcome.core_id} cannot be decoded: {outcome.reason}"
        )
    return outcome
