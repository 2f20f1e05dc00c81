"""Signing: a crash record -> the signed row the store keeps (signatures and population keys
computed here, flat columns from the record and its metadata).

Apart from :mod:`corecensus.pipeline` (which re-exports it) so that a front end that stores records
parsed elsewhere -- the collector -- signs them without importing the core reader (drgn).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator, Mapping

from corecensus.errors import StoreError
from corecensus.ingest.fields import CPU_CORE, HOST_CPUS, cpus_allowed_of
from corecensus.model import CrashRecord, Problem, ProblemKind
from corecensus.outside import clean_json_value
from corecensus.signature import (
    PopulationLevel,
    Signatures,
    anomaly_mask,
    compute_signatures,
    population_key,
)
from corecensus.store import CrashRow, SignatureColumns

__all__ = ["Signer", "crash_row", "sign_records", "signature_columns", "valid_record"]

Signer = Callable[[CrashRecord], Signatures]
_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1


def signature_columns(sig: Signatures) -> SignatureColumns:
    """A crash's signatures and the population key of each level, as the store keeps them."""
    return SignatureColumns(
        sig_address=sig.address,
        sig_symbolic=sig.symbolic,
        sig_anomaly_class=sig.anomaly_class,
        sig_program=sig.program,
        sig_signal=sig.signal,
        sig_unwind_failed=sig.unwind_failed,
        sig_notes=tuple(sig.notes),
        sig_version=sig.version,
        pop_anomaly=population_key(sig, PopulationLevel.ANOMALY),
        pop_symbolic=population_key(sig, PopulationLevel.SYMBOLIC),
        pop_address=population_key(sig, PopulationLevel.ADDRESS),
    )


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


def crash_row(record: CrashRecord, sig: Signatures) -> CrashRow:
    """One ``crashes`` row. Flat columns come from the record, falling back to its metadata;
    ``ingested_us`` is left for the store to set."""
    meta: Mapping[str, str] = record.metadata
    cpu = record.cpu if record.cpu is not None else meta.get("CORECENSUS_CPU")
    signal = record.signal if record.signal is not None else meta.get("COREDUMP_SIGNAL")
    return CrashRow(
        core_id=record.core_id,
        time_us=_int_or_none(meta.get("COREDUMP_TIMESTAMP"), _INT64_MAX),
        host=_text(meta.get("COREDUMP_HOSTNAME")),
        cpu=_int_or_none(cpu, _INT32_MAX),
        cpu_model=_text(meta.get("CORECENSUS_CPU_MODEL")),
        microcode=_text(meta.get("CORECENSUS_MICROCODE")),
        kernel=_text(meta.get("CORECENSUS_KERNEL")),
        service=_text(meta.get("CORECENSUS_SERVICE")),
        version=_text(meta.get("CORECENSUS_VERSION")),
        exe=_text(record.exe or meta.get("COREDUMP_EXE")),
        signal=_int_or_none(signal, _INT32_MAX),
        status=str(record.status),
        anomalies=tuple(record.anomaly_names),
        anomaly_mask=anomaly_mask(record.anomaly_names),
        ingested_us=0,
        record_json=_record_json(record),
        host_cpus=_int_or_none(meta.get(HOST_CPUS), _INT32_MAX),
        cpu_core=_int_or_none(meta.get(CPU_CORE), _INT32_MAX),
        cpus_allowed=cpus_allowed_of(meta),
        **dataclasses.asdict(signature_columns(sig)),
    )


def sign_records(
    records: Iterable[CrashRecord], sign: Signer = compute_signatures
) -> Iterator[CrashRow]:
    """Each record signed (``sign``: the current rules, or a site's own frame lists) as a row."""
    for given in records:
        # Records parsed elsewhere (an agent's upload, a backfill worker) are made valid text
        # here too: nothing reaches the store that it cannot encode.
        record = valid_record(given)
        yield crash_row(record, sign(record))


def valid_record(record: CrashRecord) -> CrashRecord:
    """``record`` with every string made valid text (see :mod:`corecensus.outside`), and a note
    saying how many were not: a path with bytes that are not UTF-8, or a lone surrogate from a
    JSON source, must never reach the store as it is (it cost whole batches, issue 10)."""
    cleaned, changed = clean_json_value(record.to_json())
    if not changed:
        return record
    assert isinstance(cleaned, dict)
    fixed = CrashRecord.from_json(cleaned)
    note = Problem(
        ProblemKind.METADATA,
        f"{changed} text value(s) were not valid Unicode; kept with \\u escapes",
    )
    return dataclasses.replace(fixed, problems=(*fixed.problems, note))
