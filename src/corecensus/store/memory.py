"""An in-memory :class:`corecensus.store.Store` for unit tests of other layers.

It keeps the same rows as the DuckDB adapter, keyed and ordered by the same table declarations
(:mod:`corecensus.store.tables`), returns records through the same JSON round trip and is
idempotent the same way; the contract tests in ``tests/store`` run against both.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import numpy as np

from corecensus.errors import StoreError
from corecensus.model import CrashRecord
from corecensus.store.records import (
    AddResult,
    CodedColumn,
    CrashColumns,
    CrashRow,
    DamagedCrash,
    EncodedCrashRows,
    Heartbeat,
    ScreenResultRow,
    SignatureColumns,
    decode_crash,
    decoded_record,
)
from corecensus.store.tables import (
    BATCH_ROWS,
    CRASHES,
    HEARTBEATS,
    SCREEN_RESULTS,
    TABLES,
    Table,
    batched,
    population_column,
)

__all__ = ["MemoryStore"]

R = TypeVar("R")


def _time_order(row: CrashRow) -> tuple[bool, int, str]:
    t = row.time_us
    return (t is None, t if t is not None else 0, row.core_id)


class MemoryStore:
    """Dict-backed store with the behaviour of :class:`~corecensus.store.DuckDBStore`."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._closed = False
        self._tables: dict[str, dict[tuple[Any, ...], Any]] = {t.name: {} for t in TABLES}
        self._journals: dict[str, tuple[int, int]] = {}

    @property
    def location(self) -> str:
        return ":memory:"

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.location}: the store is closed")

    @property
    def _crashes(self) -> dict[tuple[Any, ...], CrashRow]:
        return self._tables[CRASHES.name]

    def add_crashes(self, rows: Iterable[CrashRow]) -> AddResult:
        new = duplicate = 0
        with self._lock:
            self._check_open()
            now_us = int(self._clock() * 1_000_000)
            for row in rows:
                key = CRASHES.key_of(row)
                if key in self._crashes:
                    duplicate += 1
                    continue
                self._crashes[key] = dataclasses.replace(row, ingested_us=now_us)
                new += 1
        return AddResult(new, duplicate)

    def iter_crashes(self, *, signature_version_below: int | None = None) -> Iterator[CrashRecord]:
        for outcome in self.iter_crash_outcomes(signature_version_below=signature_version_below):
            yield decoded_record(outcome, self.location)

    def iter_crash_outcomes(
        self, *, signature_version_below: int | None = None
    ) -> Iterator[CrashRecord | DamagedCrash]:
        with self._lock:
            self._check_open()
            ids = sorted(self._crashes)
        for key in ids:
            with self._lock:
                self._check_open()
                row = self._crashes.get(key)
            if row is None:
                continue
            if (
                signature_version_below is not None
                and row.signature.sig_version >= signature_version_below
            ):
                continue
            yield decode_crash(row.core_id, row.record_json)

    def get_crash(self, core_id: str) -> CrashRecord | None:
        with self._lock:
            self._check_open()
            row = self._crashes.get((core_id,))
        return (
            decoded_record(decode_crash(core_id, row.record_json), self.location) if row else None
        )

    def get_crashes(self, core_ids: Iterable[str]) -> dict[str, CrashRecord]:
        out: dict[str, CrashRecord] = {}
        for core_id in core_ids:
            found = self.get_crash(core_id)
            if found is not None:
                out[core_id] = found
        return out

    def replace_crashes(self, rows: Iterable[CrashRow], remove: Iterable[str] = ()) -> int:
        written = 0
        with self._lock:
            self._check_open()
            now_us = int(self._clock() * 1_000_000)
            for core_id in remove:
                self._crashes.pop((core_id,), None)
            for row in rows:
                self._crashes[CRASHES.key_of(row)] = dataclasses.replace(row, ingested_us=now_us)
                written += 1
        return written

    @property
    def snapshot(self) -> None:
        """An in-memory store is never read through a snapshot."""
        return None

    def add_uploads(
        self,
        crashes: Sequence[CrashRow] | EncodedCrashRows,
        heartbeats: Sequence[Heartbeat],
        screens: Sequence[ScreenResultRow],
        *,
        journal: tuple[str, int, int] | None = None,
    ) -> tuple[AddResult, AddResult, AddResult]:
        if isinstance(crashes, EncodedCrashRows):
            crashes = crashes.crash_rows()  # (kept as rows, their text decoded)
        with self._lock:  # all or nothing, as the adapter's one transaction
            for row in heartbeats:
                HEARTBEATS.values(row)
            for screen in screens:
                SCREEN_RESULTS.values(screen)
            out = (
                self.add_crashes(crashes),
                self.add(HEARTBEATS, heartbeats),
                self.add(SCREEN_RESULTS, screens),
            )
            if journal is not None:
                self._journals[journal[0]] = (journal[1], journal[2])
        return out

    def journal_applied(self, journal: str) -> tuple[int, int] | None:
        with self._lock:
            self._check_open()
            return self._journals.get(journal)

    def write_snapshot(self) -> None:
        """An in-memory store has no other readers."""

    def defer_checkpoints(self) -> None:
        """An in-memory store has no log to checkpoint."""

    def log_bytes(self) -> int:
        return 0

    def checkpoint(self) -> None:
        """An in-memory store has no log to checkpoint."""

    def count_crashes(self) -> int:
        with self._lock:
            self._check_open()
            return len(self._crashes)

    def update_signatures(self, updates: Iterable[tuple[str, SignatureColumns]]) -> int:
        changed: set[str] = set()
        for core_id, sig in updates:
            with self._lock:
                self._check_open()
                row = self._crashes.get((core_id,))
                if row is not None:
                    self._crashes[(core_id,)] = dataclasses.replace(row, signature=sig)
                    changed.add(core_id)
        return len(changed)

    def _ordered_crashes(self) -> list[CrashRow]:
        with self._lock:
            self._check_open()
            return sorted(self._crashes.values(), key=_time_order)

    def crash_columns(self, level: str = "symbolic", *, details: bool = False) -> CrashColumns:
        pop = population_column(level)
        rows = self._ordered_crashes()

        def coded(name: str) -> CodedColumn:
            column = CRASHES.column(name)  # population keys sit in the signature columns
            return CodedColumn.encode(column.get(r) for r in rows)

        def ints(name: str) -> np.ndarray[Any, np.dtype[np.int32]]:
            values = (getattr(r, name) for r in rows)
            return np.array([v if v is not None else -1 for v in values], dtype=np.int32)

        def known(name: str) -> bool:
            return any(getattr(r, name) is not None for r in rows)

        return CrashColumns(
            level=str(level),
            # the handle of a crash is its position in this order (see core_ids)
            row=np.arange(len(rows), dtype=np.int64),
            host=coded("host"),
            time_us=np.array([r.time_us or 0 for r in rows], dtype=np.int64),
            time_known=np.array([r.time_us is not None for r in rows], dtype=np.bool_),
            cpu=ints("cpu"),
            cpu_model=coded("cpu_model"),
            microcode=coded("microcode"),
            kernel=coded("kernel"),
            service=coded("service"),
            version=coded("version"),
            population=coded(pop),
            anomaly_mask=np.array([r.anomaly_mask for r in rows], dtype=np.uint16),
            host_cpus=ints("host_cpus") if known("host_cpus") else None,
            cpu_core=ints("cpu_core") if known("cpu_core") else None,
            cpus_allowed=coded("cpus_allowed") if known("cpus_allowed") else None,
            exe=coded("exe") if details else None,
            signal=ints("signal") if details else None,
        )

    def core_ids(self, rows: Iterable[int]) -> list[str]:
        return [row.core_id for row in self._at(rows)]

    def signatures(self, rows: Iterable[int]) -> list[str]:
        return [row.signature.sig_symbolic for row in self._at(rows)]

    def _at(self, rows: Iterable[int]) -> list[CrashRow]:
        ordered = self._ordered_crashes()
        out = []
        for r in rows:
            if not 0 <= int(r) < len(ordered):
                raise StoreError(f"{self.location}: no crash at row {int(r)}")
            out.append(ordered[int(r)])
        return out

    def add(self, table: Table[R], rows: Iterable[R]) -> AddResult:
        new = duplicate = 0
        # Batches as the DuckDB adapter commits them: a bad row rejects its whole batch.
        for batch in batched(rows, BATCH_ROWS):
            for row in batch:
                table.values(row)  # the same checks the adapter makes
            with self._lock:
                self._check_open()
                stored = self._tables[table.name]
                for row in batch:
                    key = table.key_of(row)
                    if key in stored:
                        duplicate += 1
                    else:
                        stored[key] = row
                        new += 1
        return AddResult(new, duplicate)

    def rows(self, table: Table[R]) -> Iterator[R]:
        with self._lock:
            self._check_open()
            rows: list[R] = list(self._tables[table.name].values())
        yield from sorted(rows, key=table.sort_key)

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
