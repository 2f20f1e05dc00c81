"""What the HTTP side of the collector needs from the side that owns the store.

One process owns the store (DuckDB lets no second process open it): its writer commits the
uploads, and the analysis and a host's view are read there. The HTTP front end reaches it
through a :class:`Backend`: :class:`LocalBackend` when both run in one process (``--workers
1``), :class:`corecensus.collector.link.RemoteBackend` when several front-end processes share
one writer process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from corecensus.app.analyze import analyze_store
from corecensus.app.uploads import host_view
from corecensus.collector.admission import Backlog
from corecensus.collector.analysis import AnalysisCache
from corecensus.collector.config import CollectorConfig
from corecensus.collector.journal import (
    Journal,
    JournalPosition,
    JournalRows,
    journal_path,
    journal_rows,
)
from corecensus.collector.loader import JOURNAL_NAME, JournalAppender, JournalLoader
from corecensus.collector.logs import JsonLog
from corecensus.collector.metrics import CollectorMetrics
from corecensus.collector.writer import GroupCommitWriter
from corecensus.ingest.wire import RecordKind
from corecensus.store import DuckDBStore, Store, open_store

__all__ = ["Backend", "LocalBackend", "open_collector_store"]

# How long a read (the analysis, a host's view) waits for the loader to put every upload
# acknowledged before it into the store; past that it reads what the store has.
_READ_SYNC_S = 10.0


class Backend(Protocol):
    def start(self) -> None: ...

    async def stop(self) -> None:
        """Commit everything queued, then stop."""
        ...

    async def store(self, kind: RecordKind, rows: Sequence[Any] | JournalRows) -> None:
        """Return once ``rows`` (the store's rows of ``kind``, or them encoded by
        :func:`~corecensus.collector.journal.journal_rows`) are committed; raises
        :class:`QueueFull`, :class:`WriterStopped` or the store's
        :class:`~corecensus.errors.StoreError`."""
        ...

    async def unready(self) -> str | None:
        """Why the store cannot take uploads now (None: it can)."""
        ...

    async def analysis(self, wait_s: float) -> tuple[dict[str, Any] | None, str | None]:
        """The cached analysis document, or (None, why there is none)."""
        ...

    async def host(self, host: str) -> dict[str, Any] | None:
        """``/api/v1/hosts/{host}``'s document; None for a host with no records."""
        ...


def open_collector_store(config: CollectorConfig) -> DuckDBStore:
    """The collector's store, opened as its writer process keeps it: ``store_threads`` DuckDB
    threads, row groups of ``store_row_group_rows``."""
    return open_store(
        config.db, threads=config.store_threads, row_group_rows=config.store_row_group_rows
    )


class LocalBackend:
    """The store in this process: the group-commit writer thread that appends to the journal,
    the loader thread that moves the journal into the store (collector/loader.py), the
    analysis cache. Constructing it replays the journal's unloaded part into the store (a
    crash left it there), before anything is served."""

    def __init__(
        self,
        config: CollectorConfig,
        store: Store,
        backlog: Backlog,
        metrics: CollectorMetrics,
        log: JsonLog,
    ) -> None:
        self._store = store
        self._log = log
        self.backlog = backlog
        store.defer_checkpoints()
        # The store loads pyarrow at its first write: here, before serving, instead of inside
        # the first load (0.3-0.5 s on a busy machine).
        import pyarrow  # noqa: F401

        applied = store.journal_applied(JOURNAL_NAME)
        self.journal = Journal(
            journal_path(store.location),
            applied=None if applied is None else JournalPosition(*applied),
            segment_bytes=config.journal_segment_bytes,
        )
        self.loader = JournalLoader(
            store,
            self.journal,
            metrics,
            interval_s=config.load_interval_s,
            batch_bytes=config.load_batch_bytes,
            checkpoint_idle_bytes=config.checkpoint_idle_bytes,
            checkpoint_max_bytes=config.checkpoint_max_bytes,
            on_checkpoint=self._checkpointed,
            on_error=lambda detail: log.event("load_failed", detail=detail),
            on_checkpoint_deferred=lambda detail: log.event("checkpoint_deferred", detail=detail),
        )
        replayed = self.loader.catch_up()
        log.event(
            "journal_replayed",
            frames=replayed.frames,
            records=replayed.records,
            new=replayed.counts.crashes.new
            + replayed.counts.heartbeats.new
            + replayed.counts.screens.new,
            torn_bytes=self.journal.torn_bytes,
            ms=round(replayed.seconds * 1000, 3),
        )
        self.appender = JournalAppender(
            self.journal,
            self.loader,
            backlog,
            metrics,
            max_bytes=config.journal_max_bytes,
            # (two batches: one loading and the next gathering is a loader that keeps up)
            soft_bytes=max(config.journal_max_bytes // 4, 2 * config.load_batch_bytes),
        )
        self.writer = GroupCommitWriter(
            self.appender,
            backlog,
            metrics,
            max_queue_records=config.max_queue_records,
            max_commit_records=config.max_commit_records,
            snapshot=self._snapshot,
            snapshot_every_s=config.snapshot_interval_s,
            snapshot_busy_every_s=config.snapshot_busy_interval_s,
            on_snapshot=self._snapshot_written,
            full=self.appender.full,
        )
        self.cache = AnalysisCache(self._analyze, config.analysis_interval_s)
        self._shutdown_timeout_s = config.shutdown_timeout_s

    def _snapshot(self) -> None:
        # (what was acknowledged before it, loaded first: the writer snapshots after commits,
        # which are appends to the journal)
        self.loader.sync(_READ_SYNC_S)
        self._store.write_snapshot()

    def _analyze(self) -> dict[str, Any]:
        self.loader.sync(_READ_SYNC_S)  # (every upload acknowledged before it is in it)
        return dict(analyze_store(self._store).to_json())

    def _snapshot_written(self, seconds: float, error: BaseException | None) -> None:
        if error is None:
            self._log.event("snapshot", ms=round(seconds * 1000, 3))
        else:
            self._log.event("snapshot_failed", detail=str(error))

    def _checkpointed(self, seconds: float, log_bytes: int, busy: bool) -> None:
        self._log.event(
            "checkpoint", ms=round(seconds * 1000, 3), log_bytes=log_bytes, waiting=busy
        )

    def start(self) -> None:
        self.loader.start()
        self.writer.start()

    async def stop(self) -> None:
        """Answer what is queued (appended to the journal), then load the whole journal into
        the store, so a stopped collector's store holds every acknowledged record."""
        await asyncio.to_thread(self.writer.stop, self._shutdown_timeout_s)
        await asyncio.to_thread(self.loader.stop, None)
        self.journal.close()

    async def store(self, kind: RecordKind, rows: Sequence[Any] | JournalRows) -> None:
        await self.commit(rows if isinstance(rows, JournalRows) else journal_rows(kind, rows))

    async def commit(self, rows: JournalRows) -> tuple[float, int]:
        """:meth:`store`, returning the group commit's seconds and records."""
        return await asyncio.wrap_future(self.writer.submit(rows))

    async def unready(self) -> str | None:
        if not self.writer.alive:
            return "writer not running"
        if not self.writer.healthy:
            return f"journal not writable: {self.writer.last_error}"
        if not self.loader.alive:
            return "journal loader not running"
        if self.loader.last_error is not None:
            return f"store not writable: {self.loader.last_error}"
        return None

    async def analysis(self, wait_s: float) -> tuple[dict[str, Any] | None, str | None]:
        return await asyncio.to_thread(self.cache.get, wait_s)

    async def host(self, host: str) -> dict[str, Any] | None:
        await asyncio.to_thread(self.loader.sync, _READ_SYNC_S)
        view = await asyncio.to_thread(host_view, self._store, host)
        doc, _error = await asyncio.to_thread(self.cache.get, 0.0)
        findings = [h for h in (doc or {}).get("hosts", []) if h.get("host") == host]
        if not view.known and not findings:
            return None
        out = view.to_json()
        out["findings"] = findings
        return out
