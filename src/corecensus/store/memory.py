"""An in-memory :class:`corecensus.store.Store` for unit tests of other layers.

It keeps the same flattened rows as the DuckDB adapter (:mod:`corecensus.store.rows`), returns
records through the same JSON round trip, orders results the same way and is idempotent the same
way; the contract tests in ``tests/store`` run against both. ``export_parquet`` goes through an
in-memory DuckDB, so its files are the real thing.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from corecensus.errors import StoreError
from corecensus.model import CrashRecord
from corecensus.signature import PopulationLevel, Signatures, compute_signatures
from corecensus.store.duckdb_store import BATCH_ROWS, DuckDBStore, batched
from corecensus.store.records import (
    AddResult,
    CrashColumns,
    DeployRow,
    ExposureRow,
    Heartbeat,
    ScreenResultRow,
)
from corecensus.store.rows import (
    Row,
    columns_from_rows,
    crash_row,
    record_from_row,
    signature_values,
    signatures_from_row,
)

__all__ = ["MemoryStore"]

Signer = Callable[[CrashRecord], Signatures]


def _time_order(row: Row) -> tuple[bool, int, str]:
    t = row["time_us"]
    return (t is None, t if t is not None else 0, row["core_id"])


class MemoryStore:
    """Dict-backed store with the behaviour of :class:`~corecensus.store.DuckDBStore`."""

    def __init__(
        self,
        *,
        signer: Signer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._signer: Signer = signer or compute_signatures
        self._clock = clock
        self._lock = threading.RLock()
        self._closed = False
        self._crashes: dict[str, Row] = {}
        self._tables: dict[str, dict[tuple[Any, ...], Row]] = {
            "exposure": {},
            "deploys": {},
            "heartbeats": {},
            "screen_results": {},
        }

    @property
    def location(self) -> str:
        return ":memory:"

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.location}: the store is closed")

    def add_crashes(self, records: Iterable[CrashRecord]) -> AddResult:
        new = duplicate = 0
        with self._lock:
            self._check_open()
            now_us = int(self._clock() * 1_000_000)
            for record in records:
                if record.core_id in self._crashes:
                    duplicate += 1
                    continue
                self._crashes[record.core_id] = crash_row(record, self._signer(record), now_us)
                new += 1
        return AddResult(new, duplicate)

    def iter_crashes(self, *, signature_version_below: int | None = None) -> Iterator[CrashRecord]:
        with self._lock:
            self._check_open()
            ids = sorted(self._crashes)
        for core_id in ids:
            with self._lock:
                self._check_open()
                row = self._crashes.get(core_id)
            if row is None:
                continue
            if (
                signature_version_below is not None
                and row["sig_version"] >= signature_version_below
            ):
                continue
            yield record_from_row(row["record_json"])

    def get_crash(self, core_id: str) -> CrashRecord | None:
        with self._lock:
            self._check_open()
            row = self._crashes.get(core_id)
        return record_from_row(row["record_json"]) if row else None

    def get_signatures(self, core_id: str) -> Signatures | None:
        with self._lock:
            self._check_open()
            row = self._crashes.get(core_id)
        return signatures_from_row(row) if row else None

    def count_crashes(self) -> int:
        with self._lock:
            self._check_open()
            return len(self._crashes)

    def update_signatures(self, updates: Iterable[tuple[str, Signatures]]) -> int:
        changed: set[str] = set()
        for core_id, sig in updates:
            with self._lock:
                self._check_open()
                row = self._crashes.get(core_id)
                if row is not None:
                    row.update(signature_values(sig))
                    changed.add(core_id)
        return len(changed)

    def crash_columns(self, level: PopulationLevel = PopulationLevel.SYMBOLIC) -> CrashColumns:
        with self._lock:
            self._check_open()
            rows = sorted(self._crashes.values(), key=_time_order)
        return columns_from_rows(rows, level)

    def _add(self, table: str, rows: Iterable[tuple[tuple[Any, ...], Row]]) -> AddResult:
        new = duplicate = 0
        # Batches as the DuckDB adapter commits them: a bad row rejects its whole batch.
        for batch in batched(rows, BATCH_ROWS):
            with self._lock:
                self._check_open()
                store = self._tables[table]
                for key, row in batch:
                    if key in store:
                        duplicate += 1
                    else:
                        store[key] = row
                        new += 1
        return AddResult(new, duplicate)

    def _rows(self, table: str) -> list[Row]:
        with self._lock:
            self._check_open()
            return [self._tables[table][k] for k in sorted(self._tables[table])]

    def add_exposure(self, rows: Iterable[ExposureRow]) -> AddResult:
        def keyed(r: ExposureRow) -> tuple[tuple[Any, ...], Row]:
            if r.end_us < r.start_us:
                raise StoreError(f"exposure row for {r.host} ends before it starts: {r}")
            row = {
                "host": r.host,
                "start_us": r.start_us,
                "end_us": r.end_us,
                "service": r.service,
                "version": r.version,
                "cpu_model": r.cpu_model,
            }
            return (r.host, r.start_us, r.end_us, r.service, r.version), row

        return self._add("exposure", (keyed(r) for r in rows))

    def iter_exposure(self) -> Iterator[ExposureRow]:
        for row in self._rows("exposure"):
            yield ExposureRow(**row)

    def add_deploys(self, rows: Iterable[DeployRow]) -> AddResult:
        return self._add(
            "deploys",
            (
                (
                    (r.time_us, r.service, r.version),
                    {"time_us": r.time_us, "service": r.service, "version": r.version},
                )
                for r in rows
            ),
        )

    def iter_deploys(self) -> Iterator[DeployRow]:
        for row in self._rows("deploys"):
            yield DeployRow(**row)

    def add_heartbeats(self, rows: Iterable[Heartbeat]) -> AddResult:
        return self._add(
            "heartbeats",
            (
                (
                    (r.host, r.time_us, r.service, r.version),
                    {
                        "host": r.host,
                        "time_us": r.time_us,
                        "service": r.service,
                        "version": r.version,
                    },
                )
                for r in rows
            ),
        )

    def iter_heartbeats(self) -> Iterator[Heartbeat]:
        for row in self._rows("heartbeats"):
            yield Heartbeat(**row)

    def add_screen_results(self, rows: Iterable[ScreenResultRow]) -> AddResult:
        def keyed(r: ScreenResultRow) -> tuple[tuple[Any, ...], Row]:
            row = {
                "result_id": r.result_id,
                "host": r.host,
                "time_us": r.time_us,
                "mode": r.mode,
                "decision": r.decision,
                "result_json": r.result_json(),
            }
            return (r.host, r.time_us, r.result_id), row

        return self._add("screen_results", (keyed(r) for r in rows))

    def iter_screen_results(self) -> Iterator[ScreenResultRow]:
        for row in self._rows("screen_results"):
            yield ScreenResultRow(
                row["host"],
                row["time_us"],
                row["mode"],
                row["decision"],
                json.loads(row["result_json"]),
            )

    def export_parquet(self, directory: str | os.PathLike[str]) -> dict[str, Path]:
        with self._lock:
            self._check_open()
            crashes = [self._crashes[k] for k in sorted(self._crashes)]
            tables = {name: self._rows(name) for name in self._tables}
        with DuckDBStore(":memory:", signer=self._signer, clock=self._clock) as staging:
            staging.load_rows("crashes", crashes)
            for name, rows in tables.items():
                staging.load_rows(name, rows)
            return staging.export_parquet(directory)

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
