"""The :class:`Store` protocol: what the pipeline, collector and analysis need from storage.

One writer per embedded database (as datasette's ``Database`` funnels writes through one
connection): a store object owns its connection, serializes calls on it with a lock, and the
DuckDB adapter holds the file's lock so a second process gets a clear :class:`StoreError`
instead of a corrupt file. Every error a store raises is a
:class:`corecensus.errors.StoreError`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from corecensus.model import CrashRecord
from corecensus.signature import PopulationLevel, Signatures
from corecensus.store.records import (
    AddResult,
    CrashColumns,
    DeployRow,
    ExposureRow,
    Heartbeat,
    ScreenResultRow,
)

__all__ = ["TABLES", "Store"]

# The tables export_parquet writes, one file each (<table>.parquet).
TABLES: tuple[str, ...] = ("crashes", "exposure", "deploys", "heartbeats", "screen_results")


@runtime_checkable
class Store(Protocol):
    """Storage for crash records and the tables analysis joins them with."""

    @property
    def location(self) -> str:
        """Where the data lives (a file path, or ``:memory:``)."""
        ...

    def add_crashes(self, records: Iterable[CrashRecord]) -> AddResult:
        """Store records with their signatures, idempotently by ``core_id``: a core ingested
        twice is stored once (the first copy is kept). Work is committed in batches, so a
        failure loses at most the batch in flight."""
        ...

    def iter_crashes(self, *, signature_version_below: int | None = None) -> Iterator[CrashRecord]:
        """Records in ``core_id`` order; with ``signature_version_below``, only those whose
        stored signatures are older (for ``reprocess``). Safe to interleave with
        :meth:`update_signatures`."""
        ...

    def get_crash(self, core_id: str) -> CrashRecord | None: ...

    def get_signatures(self, core_id: str) -> Signatures | None: ...

    def count_crashes(self) -> int: ...

    def update_signatures(self, updates: Iterable[tuple[str, Signatures]]) -> int:
        """Replace stored signatures; returns how many crashes were updated (unknown ids are
        skipped)."""
        ...

    def crash_columns(self, level: PopulationLevel = PopulationLevel.SYMBOLIC) -> CrashColumns:
        """All crashes as NumPy columns for the analysis layer."""
        ...

    def add_exposure(self, rows: Iterable[ExposureRow]) -> AddResult: ...

    def iter_exposure(self) -> Iterator[ExposureRow]: ...

    def add_deploys(self, rows: Iterable[DeployRow]) -> AddResult: ...

    def iter_deploys(self) -> Iterator[DeployRow]: ...

    def add_heartbeats(self, rows: Iterable[Heartbeat]) -> AddResult: ...

    def iter_heartbeats(self) -> Iterator[Heartbeat]: ...

    def add_screen_results(self, rows: Iterable[ScreenResultRow]) -> AddResult: ...

    def iter_screen_results(self) -> Iterator[ScreenResultRow]: ...

    def export_parquet(self, directory: str | os.PathLike[str]) -> dict[str, Path]:
        """Write every table in :data:`TABLES` to ``directory/<table>.parquet`` (each file
        written to a temporary name and renamed into place); returns table -> path."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
