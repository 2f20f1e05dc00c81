"""Signing: a crash record -> the signed row the store keeps (signatures and population keys
computed here, flat columns from the record and its metadata).

Apart from :mod:`corecensus.pipeline` (which re-exports it) so that a front end that stores records
parsed elsewhere -- the collector -- signs them without importing the core reader (drgn).
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import msgspec

from corecensus.errors import StoreError
from corecensus.ingest.fields import (
    COMM,
    CPU,
    CPU_CORE,
    EXE,
    HOST_CPUS,
    SIGNAL,
    cpus_allowed_of,
)
from corecensus.model import (
    Anomaly,
    CrashRecord,
    Frame,
    MappedFile,
    ParseStatus,
    Problem,
    ProblemKind,
    SignalFrame,
    StackWord,
)
from corecensus.outside import clean_json_value
from corecensus.signature import (
    PopulationLevel,
    Signatures,
    anomaly_mask,
    compute_signatures,
    population_key,
)
from corecensus.store import CrashRow, SignatureColumns

__all__ = [
    "JournalCrashRow",
    "Signer",
    "TypedSigner",
    "crash_row",
    "sign_records",
    "signature_columns",
    "valid_record",
]

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


def _record_json(record: CrashRecord) -> str:
    try:
        return json.dumps(record.to_json(), sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        # Anomaly.data is free-form; a value JSON cannot hold must not crash an ingest.
        raise StoreError(f"crash {record.core_id} cannot be stored as JSON: {exc}") from exc


def crash_row(record: CrashRecord, sig: Signatures) -> CrashRow:
    """One ``crashes`` row. Flat columns come from the record, falling back to its metadata;
    ``ingested_us`` is left for the store to set."""
    row: CrashRow = _row(
        record,
        status=str(record.status),
        anomalies=tuple(record.anomaly_names),
        record_json=_record_json(record),
        signature=signature_columns(sig),
    )
    return row


# A crash row as the collector's journal (and the link to it) encodes one: the fields of
# CrashRow, in its order, so that msgpack makes the same bytes of either, and the loader reads
# CrashRows back. A Struct is made in C: a frozen dataclass of 20 fields, each set through
# object.__setattr__, took 5 us per row (load 3), more than the rest of the row.
JournalCrashRow: type[msgspec.Struct] = msgspec.defstruct(
    "JournalCrashRow",
    [(f.name, Any) for f in dataclasses.fields(CrashRow)],
    frozen=True,
    gc=False,
    module=__name__,
)


def _row(
    crash: Any,
    *,
    status: str,
    anomalies: tuple[str, ...],
    record_json: str,
    signature: SignatureColumns,
    make: Callable[..., Any] = CrashRow,
) -> Any:
    """The row of a crash (a :class:`CrashRecord` or the typed wire pass's crash: both carry
    ``core_id``, ``cpu``, ``signal``, ``exe`` and ``metadata``), each flat column taken from the
    crash and else from its metadata; ``make`` is :class:`CrashRow` or
    :data:`JournalCrashRow`."""
    meta: Mapping[str, str] = crash.metadata
    get = meta.get
    cpu = crash.cpu if crash.cpu is not None else get(CPU)
    signal = crash.signal if crash.signal is not None else get(SIGNAL)
    # An empty text is unknown (None).
    return make(
        core_id=crash.core_id,
        time_us=_int_or_none(get("COREDUMP_TIMESTAMP"), _INT64_MAX),
        host=get("COREDUMP_HOSTNAME") or None,
        cpu=_int_or_none(cpu, _INT32_MAX),
        cpu_model=get("CORECENSUS_CPU_MODEL") or None,
        microcode=get("CORECENSUS_MICROCODE") or None,
        kernel=get("CORECENSUS_KERNEL") or None,
        service=get("CORECENSUS_SERVICE") or None,
        version=get("CORECENSUS_VERSION") or None,
        exe=crash.exe or get(EXE) or None,
        signal=_int_or_none(signal, _INT32_MAX),
        status=status,
        anomalies=anomalies,
        anomaly_mask=anomaly_mask(anomalies) if anomalies else 0,
        ingested_us=0,
        record_json=record_json,
        host_cpus=_int_or_none(get(HOST_CPUS), _INT32_MAX),
        cpu_core=_int_or_none(get(CPU_CORE), _INT32_MAX),
        cpus_allowed=cpus_allowed_of(meta),
        signature=signature,
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


# What the default signature rules read of a crash (corecensus.signature: rules.py, frames.py,
# race.py): the program and signal (record, else metadata), the anomaly names, the stack
# pointer, the modules, frames, stack window and signal frames, and the parse status. Two
# crashes equal in these sign the same; tests/collector/test_typed_signing.py changes every
# other field of real records and holds the signatures to it.
def _signature_key(crash: Any, anomalies: tuple[str, ...]) -> tuple[Any, ...]:
    """``anomalies``: the crash's anomaly names, in order (its row has them too)."""
    meta = crash.metadata
    get = crash.registers.get
    return (
        crash.status,
        crash.exe,
        crash.comm,
        crash.signal,
        crash.signal_name,
        meta.get(EXE),
        meta.get(COMM),
        meta.get("COREDUMP_SIGNAL_NAME"),
        meta.get(SIGNAL),
        # The stack pointer: x86-64's, arm64's, i386's, arm's (a tuple of a generator per
        # record cost more than the look-ups).
        (get("rsp"), get("sp"), get("esp"), get("r13")),
        anomalies,
        crash.modules,
        crash.frames,
        crash.stack_window,
        crash.signal_frames,
    )


def _signing_record(crash: Any) -> CrashRecord:
    """The :class:`CrashRecord` the signature rules read of a typed crash: its id and the
    fields of :func:`_signature_key`, each as :meth:`CrashRecord.from_json` would make it, built
    from the Struct's attributes -- the frames, stack window and signal frames by msgspec, in C.

    A cache miss is every crash's lot in a fleet (with ASLR each one's addresses differ), and
    making the whole record through a dict of it cost more than the rules themselves: 0.34 of
    a miss's 0.52 ms per 10 KB record (load 4), most of it the stack window's 36 dataclasses.
    """
    return CrashRecord(
        core_id=crash.core_id,
        status=ParseStatus(crash.status),
        comm=crash.comm,
        exe=crash.exe,
        signal=crash.signal,
        signal_name=crash.signal_name,
        registers=crash.registers,
        modules=tuple(
            MappedFile(
                path=m.path,
                base=m.base,
                end=m.base if m.end is msgspec.UNSET else m.end,
                file_offset=m.file_offset,
                build_id=m.build_id,
                executable=m.executable,
            )
            for m in crash.modules
        ),
        frames=msgspec.convert(crash.frames, tuple[Frame, ...], from_attributes=True),
        anomalies=tuple(
            Anomaly(name=a.name, detail=a.detail, confidence=a.confidence, data=a.data)
            for a in crash.anomaly_details
        ),
        stack_window=msgspec.convert(
            crash.stack_window, tuple[StackWord, ...], from_attributes=True
        ),
        signal_frames=msgspec.convert(
            crash.signal_frames, tuple[SignalFrame, ...], from_attributes=True
        ),
        metadata=crash.metadata,
    )


class TypedSigner:
    """Signs crash records as the typed wire pass decodes them
    (:func:`corecensus.ingest.wire_typed.crash_shapes`) straight into rows, without building a
    :class:`CrashRecord` or re-walking it: its text is valid already (the typed pass takes no
    lone surrogate), ``record_json`` is msgspec's encoding of it, and signatures are computed
    once per distinct set of what the rules read (:func:`_signature_key`), kept for the last
    ``max_entries`` distinct ones -- a fleet's crashes repeat a few stacks many times.

    A cache miss builds the part of the record the rules read (:func:`_signing_record`) and runs
    ``sign`` (the default rules); the row is the one :func:`sign_records` makes of the same
    record, but for the JSON text's spelling.
    """

    def __init__(self, sign: Signer = compute_signatures, max_entries: int = 1024) -> None:
        self._sign = sign
        self._max = max_entries
        # An OrderedDict for its O(1) popitem(last=False): dropping a plain dict's first key
        # (next(iter(d))) walks past the slots of every key dropped before it, and with every
        # lookup a miss (ASLR) that walk was a third of each miss (0.11 of 0.36 ms).
        self._cache: OrderedDict[tuple[Any, ...], SignatureColumns] = OrderedDict()
        self._encoder = msgspec.json.Encoder()
        self.hits = 0
        self.misses = 0

    def _signature(self, crash: Any, anomalies: tuple[str, ...]) -> SignatureColumns:
        key = _signature_key(crash, anomalies)
        found = self._cache.get(key)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        columns = signature_columns(self._sign(_signing_record(crash)))
        if len(self._cache) >= self._max:
            self._cache.popitem(last=False)  # the oldest entry
        self._cache[key] = columns
        return columns

    def rows(self, crashes: Iterable[Any]) -> Iterator[CrashRow]:
        for crash in crashes:
            yield self.row(crash)

    def row(self, crash: Any) -> CrashRow:
        row: CrashRow = self._row(crash, CrashRow)
        return row

    def journal_rows(self, crashes: Iterable[Any]) -> list[Any]:
        """The rows of :meth:`rows` as :data:`JournalCrashRow`: for the collector's journal
        (``journal.journal_rows`` encodes them as it encodes CrashRows), not for a store."""
        return [self._row(crash, JournalCrashRow) for crash in crashes]

    def _row(self, crash: Any, make: Callable[..., Any]) -> Any:
        details = crash.anomaly_details
        anomalies = tuple([a.name for a in details]) if details else ()
        return _row(
            crash,
            status=crash.status,
            anomalies=anomalies,
            record_json=self._encoder.encode(crash).decode("utf-8"),
            signature=self._signature(crash, anomalies),
            make=make,
        )
