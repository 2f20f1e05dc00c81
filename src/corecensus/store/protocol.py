"""The :class:`Store` protocol: what the application layer needs from storage, and no more.

One writer per embedded database (as datasette's ``Database`` funnels writes through one
connection): a store object owns its connection, serializes calls on it with a lock, and the
DuckDB adapter holds the file's lock so a second process gets a clear :class:`StoreError`
instead of a corrupt file. Every error a store raises is a
:class:`corecensus.errors.StoreError`. The store persists the rows it is given; signing crashes
is the pipeline's work.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Protocol, Self, TypeVar, runtime_checkable

from corecensus.model import CrashRecord
from corecensus.store.records import (
    AddResult,
    CrashColumns,
    CrashRow,
    DamagedCrash,
    EncodedCrashRows,
    Heartbeat,
    ScreenResultRow,
    SignatureColumns,
)
from corecensus.store.tables import Table

__all__ = ["Store"]

R = TypeVar("R")


@runtime_checkable
class Store(Protocol):
    """Storage for crash rows and the tables analysis joins them with."""

    @property
    def location(self) -> str:
        """Where the data lives (a file path, or ``:memory:``)."""
        ...

    def add_crashes(self, rows: Iterable[CrashRow]) -> AddResult:
        """Store signed crash rows, idempotently by ``core_id``: a core ingested twice is stored
        once (the first copy is kept). Work is committed in batches, so a failure loses at most
        the batch in flight."""
        ...

    def iter_crashes(self, *, signature_version_below: int | None = None) -> Iterator[CrashRecord]:
        """Records in ``core_id`` order; with ``signature_version_below``, only those whose
        stored signatures are older. Safe to interleave with :meth:`update_signatures`. Raises
        :class:`StoreError` at a row whose record cannot be decoded (see
        :meth:`iter_crash_outcomes`)."""
        ...

    def iter_crash_outcomes(
        self, *, signature_version_below: int | None = None
    ) -> Iterator[CrashRecord | DamagedCrash]:
        """As :meth:`iter_crashes`, but a row whose record cannot be decoded comes as a
        :class:`DamagedCrash` (its id and why) and the walk goes on (for ``reprocess``)."""
        ...

    def get_crash(self, core_id: str) -> CrashRecord | None: ...

    def get_crashes(self, core_ids: Iterable[str]) -> dict[str, CrashRecord]:
        """The stored records among ``core_ids`` (unknown ids are absent from the result)."""
        ...

    def replace_crashes(self, rows: Iterable[CrashRow], remove: Iterable[str] = ()) -> int:
        """Store ``rows`` in place of any stored crash with the same ``core_id``, and delete the
        crashes ``remove`` names, in one transaction per batch; returns how many rows were
        written. For keeping the best record of a crash (the caller decides which is best)."""
        ...

    def count_crashes(self) -> int: ...

    def update_signatures(self, updates: Iterable[tuple[str, SignatureColumns]]) -> int:
        """Replace stored signatures; returns how many crashes were updated (unknown ids are
        skipped)."""
        ...

    def crash_columns(self, level: str = "symbolic", *, details: bool = False) -> CrashColumns:
        """All crashes as NumPy columns for the analysis layer; ``population`` is the key of
        ``level`` (``anomaly``, ``symbolic`` or ``address``); ``exe`` and ``signal`` only
        with ``details``."""
        ...

    def core_ids(self, rows: Iterable[int]) -> list[str]:
        """The ``core_id`` of each crash of :meth:`crash_columns`'s ``row`` handles, in order
        (handles are valid until the store is next written)."""
        ...

    def signatures(self, rows: Iterable[int]) -> list[str]:
        """The symbolic signature of each crash of :meth:`crash_columns`'s ``row`` handles, in
        order (a population is described by its first crash's)."""
        ...

    def add(self, table: Table[R], rows: Iterable[R]) -> AddResult:
        """Rows of one of the other tables (exposure, deploys, heartbeats, screen results),
        idempotently by the table's key."""
        ...

    def rows(self, table: Table[R]) -> Iterator[R]:
        """Every row of ``table`` in the table's order."""
        ...

    @property
    def snapshot(self) -> str | None:
        """The snapshot a read-only opener is reading because a writer held the store, else
        None."""
        ...

    def add_uploads(
        self,
        crashes: Sequence[CrashRow] | EncodedCrashRows,
        heartbeats: Sequence[Heartbeat],
        screens: Sequence[ScreenResultRow],
        *,
        journal: tuple[str, int, int] | None = None,
    ) -> tuple[AddResult, AddResult, AddResult]:
        """Store crash, heartbeat and screen rows idempotently by key (as :meth:`add_crashes`
        and :meth:`add`), all in one transaction, and with them, if ``journal`` is given as
        ``(name, segment, offset)``, how far the journal ``name`` they come from is applied
        (:meth:`journal_applied`): a replay after a crash starts there, so each journal frame
        is stored once. Returns what each kind added. ``crashes`` may come as
        :class:`EncodedCrashRows` (the collector's journal: each record's JSON still
        msgpack)."""
        ...

    def journal_applied(self, journal: str) -> tuple[int, int] | None:
        """``(segment, offset)`` of the journal ``name`` as last stored by
        :meth:`add_uploads` (None: never)."""
        ...

    def write_snapshot(self) -> None:
        """Leave a copy of what is committed where read-only openers find it while this
        writer holds the store (no-op where readers need none)."""
        ...

    def defer_checkpoints(self) -> None:
        """Checkpoint only when :meth:`checkpoint` is called, never inside a commit (for a
        single writer that checkpoints when it is idle)."""
        ...

    def log_bytes(self) -> int:
        """Bytes committed to the write-ahead log and not yet checkpointed (0 without one)."""
        ...

    def checkpoint(self) -> None:
        """Move the write-ahead log's contents into the store file."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
