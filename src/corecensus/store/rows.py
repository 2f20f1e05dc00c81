"""Flat rows: the columns every store keeps, computed once here so the DuckDB adapter and the
in-memory fake store exactly the same values."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from corecensus.errors import StoreError
from corecensus.model import CrashRecord
from corecensus.signature import (
    PopulationLevel,
    Signatures,
    anomaly_mask,
    population_key,
)
from corecensus.store.records import CrashColumns

__all__ = [
    "CRASH_COLUMNS",
    "SIGNATURE_COLUMNS",
    "Row",
    "columns_from_rows",
    "crash_row",
    "record_from_row",
    "signature_values",
    "signatures_from_row",
]

Row = dict[str, Any]

_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1

# (name, DuckDB type) in table order. Everything but record_json is derived and could be
# recomputed from it.
CRASH_COLUMNS: tuple[tuple[str, str], ...] = (
    ("core_id", "VARCHAR NOT NULL PRIMARY KEY"),
    ("time_us", "BIGINT"),
    ("host", "VARCHAR"),
    ("cpu", "INTEGER"),
    ("cpu_model", "VARCHAR"),
    ("microcode", "VARCHAR"),
    ("kernel", "VARCHAR"),
    ("service", "VARCHAR"),
    ("version", "VARCHAR"),
    ("exe", "VARCHAR"),
    ("signal", "INTEGER"),
    ("status", "VARCHAR NOT NULL"),
    ("anomalies", "VARCHAR[] NOT NULL"),
    ("anomaly_mask", "USMALLINT NOT NULL"),
    ("sig_address", "VARCHAR NOT NULL"),
    ("sig_symbolic", "VARCHAR NOT NULL"),
    ("sig_anomaly_class", "VARCHAR NOT NULL"),
    ("sig_program", "VARCHAR NOT NULL"),
    ("sig_signal", "VARCHAR NOT NULL"),
    ("sig_unwind_failed", "BOOLEAN NOT NULL"),
    ("sig_notes", "VARCHAR[] NOT NULL"),
    ("sig_version", "INTEGER NOT NULL"),
    ("pop_anomaly", "VARCHAR NOT NULL"),
    ("pop_symbolic", "VARCHAR NOT NULL"),
    ("pop_address", "VARCHAR NOT NULL"),
    ("ingested_us", "BIGINT NOT NULL"),
    ("record_json", "VARCHAR NOT NULL"),
)

SIGNATURE_COLUMNS: tuple[str, ...] = (
    "sig_address",
    "sig_symbolic",
    "sig_anomaly_class",
    "sig_program",
    "sig_signal",
    "sig_unwind_failed",
    "sig_notes",
    "sig_version",
    "pop_anomaly",
    "pop_symbolic",
    "pop_address",
)

POPULATION_COLUMN = {
    PopulationLevel.ANOMALY: "pop_anomaly",
    PopulationLevel.SYMBOLIC: "pop_symbolic",
    PopulationLevel.ADDRESS: "pop_address",
}


def _int_or_none(value: str | int | None, limit: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        number = value
    elif value.isdigit():
        number = int(value)
    else:
        return None
    return number if 0 <= number <= limit else None


def _text(value: str | None) -> str | None:
    return value if value else None


def _record_json(record: CrashRecord) -> str:
    try:
        return json.dumps(record.to_json(), sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        # Anomaly.data is free-form; a value JSON cannot hold must not crash an ingest.
        raise StoreError(f"crash {record.core_id} cannot be stored as JSON: {exc}") from exc


def signature_values(sig: Signatures) -> Row:
    """The signature columns of a crash row."""
    return {
        "sig_address": sig.address,
        "sig_symbolic": sig.symbolic,
        "sig_anomaly_class": sig.anomaly_class,
        "sig_program": sig.program,
        "sig_signal": sig.signal,
        "sig_unwind_failed": sig.unwind_failed,
        "sig_notes": list(sig.notes),
        "sig_version": sig.version,
        "pop_anomaly": population_key(sig, PopulationLevel.ANOMALY),
        "pop_symbolic": population_key(sig, PopulationLevel.SYMBOLIC),
        "pop_address": population_key(sig, PopulationLevel.ADDRESS),
    }


def crash_row(record: CrashRecord, sig: Signatures, ingested_us: int) -> Row:
    """One ``crashes`` row. Flat columns come from the record, falling back to its metadata."""
    meta: Mapping[str, str] = record.metadata
    cpu = record.cpu if record.cpu is not None else meta.get("CORECENSUS_CPU")
    signal = record.signal if record.signal is not None else meta.get("COREDUMP_SIGNAL")
    row: Row = {
        "core_id": record.core_id,
        "time_us": _int_or_none(meta.get("COREDUMP_TIMESTAMP"), _INT64_MAX),
        "host": _text(meta.get("COREDUMP_HOSTNAME")),
        "cpu": _int_or_none(cpu, _INT32_MAX),
        "cpu_model": _text(meta.get("CORECENSUS_CPU_MODEL")),
        "microcode": _text(meta.get("CORECENSUS_MICROCODE")),
        "kernel": _text(meta.get("CORECENSUS_KERNEL")),
        "service": _text(meta.get("CORECENSUS_SERVICE")),
        "version": _text(meta.get("CORECENSUS_VERSION")),
        "exe": _text(record.exe or meta.get("COREDUMP_EXE")),
        "signal": _int_or_none(signal, _INT32_MAX),
        "status": str(record.status),
        "anomalies": list(record.anomaly_names),
        "anomaly_mask": anomaly_mask(record.anomaly_names),
        "ingested_us": ingested_us,
        "record_json": _record_json(record),
    }
    row.update(signature_values(sig))
    return row


def record_from_row(record_json: str) -> CrashRecord:
    return CrashRecord.from_json(json.loads(record_json))


def signatures_from_row(row: Mapping[str, Any]) -> Signatures:
    return Signatures(
        address=row["sig_address"],
        symbolic=row["sig_symbolic"],
        anomaly_class=row["sig_anomaly_class"],
        program=row["sig_program"],
        signal=row["sig_signal"],
        version=int(row["sig_version"]),
        notes=tuple(row["sig_notes"]),
        unwind_failed=bool(row["sig_unwind_failed"]),
    )


def _objects(values: Sequence[Any]) -> np.ndarray[Any, np.dtype[np.object_]]:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def columns_from_rows(rows: Iterable[Mapping[str, Any]], level: PopulationLevel) -> CrashColumns:
    """:class:`CrashColumns` from rows already in the documented order."""
    rows = list(rows)
    pop = POPULATION_COLUMN[level]

    def col(name: str) -> list[Any]:
        return [r[name] for r in rows]

    times = col("time_us")
    cpus = col("cpu")
    signals = col("signal")
    return CrashColumns(
        level=level,
        core_id=_objects(col("core_id")),
        host=_objects(col("host")),
        time_us=np.array([t if t is not None else 0 for t in times], dtype=np.int64),
        time_known=np.array([t is not None for t in times], dtype=np.bool_),
        cpu=np.array([c if c is not None else -1 for c in cpus], dtype=np.int64),
        cpu_model=_objects(col("cpu_model")),
        microcode=_objects(col("microcode")),
        kernel=_objects(col("kernel")),
        service=_objects(col("service")),
        version=_objects(col("version")),
        exe=_objects(col("exe")),
        signal=np.array([s if s is not None else -1 for s in signals], dtype=np.int64),
        population=_objects(col(pop)),
        anomaly_mask=np.array(col("anomaly_mask"), dtype=np.uint16),
    )
