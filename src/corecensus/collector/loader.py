"""From the journal into the store: the writer's sink, and the thread that loads.

The writer (:class:`~corecensus.collector.writer.GroupCommitWriter`) hands each group of
uploads to a :class:`JournalAppender`, which appends the group's rows to the journal (one
``write`` and ``fdatasync``, :mod:`corecensus.collector.journal`) and returns: the writer then
answers the group's requests. Nothing on that path waits for DuckDB.

A :class:`JournalLoader` thread moves the journal into the store in large batches: every
``interval_s`` while there is something to load, or at once when ``batch_bytes`` wait. Each
batch is one store transaction (:func:`~corecensus.app.uploads.store_rows`) that also records
the position after its last frame (``journal_applied``), so after a crash the replay starts
exactly where the store stopped and applies no frame twice; then the segments before that
position are deleted. The store's checkpoints happen here too, after a load: when the loader
has caught up and DuckDB's log holds ``checkpoint_idle_bytes``, or at ``checkpoint_max_bytes``
whatever waits. They hold the loader, never a request: the journal takes the acknowledgements
meanwhile.

Idempotence: a retried batch is stored once. The store's keys are the last word (crashes by
``core_id``, screens by ``screen_id``'s content hash, heartbeats by their content: a load adds
only what the store lacks). The appender also keeps the keys of the rows in the journal that
are not loaded yet (``pending``): a retry of those is answered "already there" without being
journaled again.

Bounds: the journal takes at most ``max_bytes`` not yet loaded; past that the writer refuses
work (503 ``queue_full``) instead of growing it. Past ``soft_bytes`` the loader is behind, and
admission is told the time it needs to catch up to ``soft_bytes`` (:meth:`Backlog.stalling`),
which it adds to every new request's expected wait, so a collector whose loader falls behind
sheds at the door before the journal fills.

Readers (``/api/v1/analysis``, ``/api/v1/hosts/...``, the snapshot) read the store, which lags
the acknowledgements by the journal's unloaded part: about ``interval_s`` plus a load's time
when the loader keeps up (``corecensus_collector_journal_bytes`` shows it). On ``SIGTERM`` the
loader loads everything before the collector exits, so a stopped collector's store holds every
acknowledged record; after ``kill -9`` the next start loads the rest before serving.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from corecensus.app.uploads import UploadCounts, UploadRows, store_rows
from corecensus.collector.admission import Backlog
from corecensus.collector.journal import (
    Journal,
    JournalPosition,
    JournalRows,
    decode_rows,
    frame_parts,
    journal_rows,
    piece_rows,
    row_keys,
    rows_of,
)
from corecensus.collector.metrics import CollectorMetrics
from corecensus.collector.writer import QueueFull
from corecensus.errors import CorecensusError
from corecensus.ingest.wire import RecordKind
from corecensus.store import AddResult, EncodedCrashRows, Store

__all__ = ["JournalAppender", "JournalFull", "JournalLoader", "LoadReport"]

# The name under which the store records how far the collector's journal is applied.
JOURNAL_NAME = "collector"
# Tests only: the loader kills its own process (SIGKILL) after a load's commit and before it
# deletes the segments that commit applied, to show a restart then stores nothing twice.
_KILL_AFTER_LOAD_ENV = "CORECENSUS_TEST_KILL_AFTER_LOAD"


class JournalFull(QueueFull):
    """The journal holds as many bytes not yet loaded as it may."""


@dataclass(frozen=True, slots=True)
class LoadReport:
    """One load: frames and records moved, seconds, and what the store called new."""

    frames: int
    records: int
    seconds: float
    counts: UploadCounts


# The order of the kinds in UploadRows and UploadCounts.
_KINDS = (RecordKind.CRASHES, RecordKind.HEARTBEATS, RecordKind.SCREENINGS)


def _keys(rows: UploadRows) -> tuple[list[Hashable], list[Hashable], list[Hashable]]:
    crashes = rows.crashes
    return (
        row_keys(
            RecordKind.CRASHES,
            crashes.rows if isinstance(crashes, EncodedCrashRows) else crashes,
        ),
        row_keys(RecordKind.HEARTBEATS, rows.heartbeats),
        row_keys(RecordKind.SCREENINGS, rows.screens),
    )


@dataclass(frozen=True, slots=True)
class _Fresh:
    """A frame the appender handed to the loader: where it lies, its pieces, its bytes."""

    start: JournalPosition
    end: JournalPosition
    pieces: list[JournalRows]
    size: int


class JournalLoader:
    """The thread that moves the journal into the store (the module's text)."""

    def __init__(
        self,
        store: Store,
        journal: Journal,
        metrics: CollectorMetrics,
        *,
        interval_s: float = 0.5,
        batch_bytes: int = 16 << 20,
        checkpoint_idle_bytes: int = 16 << 20,
        checkpoint_max_bytes: int = 128 << 20,
        on_checkpoint: Callable[[float, int, bool], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        on_checkpoint_deferred: Callable[[str], None] | None = None,
        quiet_s: float = 1.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._store = store
        self._journal = journal
        self._metrics = metrics
        self._interval_s = interval_s
        self._batch_bytes = batch_bytes
        self._checkpoint_idle = checkpoint_idle_bytes
        self._checkpoint_max = checkpoint_max_bytes
        self._on_checkpoint = on_checkpoint
        self._on_error = on_error
        self._on_checkpoint_deferred = on_checkpoint_deferred
        self._clock = clock
        self._quiet_s = quiet_s
        # When the appender last handed over a frame, or the loader began (the journal is
        # quiet quiet_s after).
        self._appended_at = clock()
        self.applied = journal.start
        # Bytes of journal loaded per second of a load (a moving average; 20 MB/s before the
        # first is measured): how fast the loader catches up.
        self.bytes_per_s = 20e6
        self._cond = threading.Condition()
        self._stopping = False
        self._urgent = 0  # readers waiting for the store to catch up (:meth:`sync`)
        # Told the rows of each load once the store committed them (the appender's pending
        # keys).
        self.on_stored: Callable[[UploadRows], None] | None = None
        # Frames this process appended and the store does not hold yet, as the appender
        # handed them over: loaded from memory instead of read back from the segment and
        # checked again (reading and checksumming what was just written were a fifth of the
        # loader's own CPU: bench/collector_writer_bench.py). At most twice ``batch_bytes``;
        # past that the appender hands nothing over until the loader catches up, and what it
        # did not hand over is read from the journal's files, as a start reads what a crash left.
        self._fresh: deque[_Fresh] = deque()
        self._fresh_bytes = 0
        self._fresh_max = 2 * batch_bytes
        self._thread = threading.Thread(target=self._run, name="corecensus-loader", daemon=True)
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def unloaded_bytes(self) -> int:
        return self._journal.bytes_after(self.applied)

    def wake(self) -> None:
        """Frames were appended (the loader loads them within ``interval_s``)."""
        with self._cond:
            self._cond.notify_all()

    def appended(
        self, start: JournalPosition, end: JournalPosition, pieces: list[JournalRows], size: int
    ) -> None:
        """The frame from ``start`` to ``end``, of ``size`` payload bytes, holds ``pieces``:
        it is durable (:meth:`wake`, and kept to be loaded from memory while there is room)."""
        with self._cond:
            self._appended_at = self._clock()
            if self._fresh_bytes + size <= self._fresh_max:
                self._fresh.append(_Fresh(start, end, pieces, size))
                self._fresh_bytes += size
            self._cond.notify_all()

    def sync(self, timeout: float) -> bool:
        """Load now what the journal holds, and wait (at most ``timeout`` seconds) until the
        store has it: a reader then sees every upload acknowledged before it asked. True if
        the store caught up."""
        target = self._journal.end()
        end = time.monotonic() + timeout
        with self._cond:
            self._urgent += 1
            self._cond.notify_all()
            try:
                # (a loader that is failing will not catch up: read what the store has)
                while self.applied < target and self.alive and self.last_error is None:
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            finally:
                self._urgent -= 1
            return self.applied >= target

    def catch_up(self) -> LoadReport:
        """Load everything the journal holds, on the caller's thread (before serving, and
        at the end); raises the store's error."""
        frames = records = 0
        seconds = 0.0
        counts = UploadCounts()
        while True:
            report = self._load()
            if report is None:
                break
            frames, records = frames + report.frames, records + report.records
            seconds += report.seconds
            counts = _plus(counts, report.counts)
        self._checkpoint_if_due(caught_up=True)
        return LoadReport(frames, records, seconds, counts)

    def stop(self, timeout: float | None = None) -> bool:
        """Load everything appended so far, then end the thread; True if it ended within
        ``timeout``. The caller stops the writer first (nothing is appended after)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        last = self._clock()
        while True:
            quiet = False
            with self._cond:
                while not self._stopping:
                    waiting = self.unloaded_bytes()
                    if waiting >= self._batch_bytes:
                        break
                    due = last + self._interval_s - self._clock()
                    if waiting and (due <= 0 or self._urgent):
                        break
                    timeout = due if waiting else None
                    if not waiting and self._store.log_bytes() >= self._checkpoint_idle:
                        # Caught up, and a checkpoint is owed: it waits for a quiet moment.
                        timeout = self._appended_at + self._quiet_s - self._clock()
                        if timeout <= 0:
                            quiet = True
                            break
                    self._cond.wait(None if timeout is None else max(timeout, 0.001))
                stopping = self._stopping
            if stopping:
                self._finish()
                return
            if quiet:
                self._checkpoint_now(caught_up=True)
                with self._cond:
                    # The next idle checkpoint waits for a quiet moment of its own: one that
                    # DuckDB refused, or that left the log as large, is not tried in a loop.
                    self._appended_at = self._clock()
                continue
            last = self._clock()
            try:
                self._load()
            except Exception as exc:  # the store's error (or the journal's): said, tried again
                self._failed(exc)
                with self._cond:  # after a pause, not in a tight loop
                    self._cond.wait(1.0)
                continue
            self._checkpoint_now(caught_up=False)

    def _checkpoint_now(self, *, caught_up: bool) -> None:
        """The checkpoint :meth:`_checkpoint_if_due` finds due, if any. Between loads under
        way only at ``checkpoint_max_bytes``; at ``checkpoint_idle_bytes`` once the journal
        has been quiet for ``quiet_s`` (nothing appended) and all of it is loaded. DuckDB
        rewrites a table's open row group at each checkpoint, merging what earlier ones wrote
        (a checkpoint every 16 MiB of 10 KB crash rows took 0.03 s, then 0.1, 0.03, 0.3, ...
        up to 2 s of CPU, the whole row group, at every 32nd): checkpointing at every 16 MiB
        while loads went on cost 0.07-0.08 ms of CPU per record over a row group, at every
        128 MiB 0.04 (in-process, 128,000 crash rows, load 2-3)."""
        try:
            self._checkpoint_if_due(caught_up=caught_up)
        except CorecensusError as exc:
            # Not a failed load: what was loaded is committed, and the next load tries the
            # checkpoint again. DuckDB refuses one while another transaction writes ("Cannot
            # CHECKPOINT: there are other write transactions active", seen during slow
            # snapshot copies in the quiet bench); handled as a failed load, each refusal
            # paused the loader for a second, the journal grew and admission shed (README,
            # the lead's quiet runs).
            if self._on_checkpoint_deferred is not None:
                self._on_checkpoint_deferred(str(exc))

    def _finish(self) -> None:
        for _ in range(3):  # a store error at the end is tried again a little
            try:
                self.catch_up()
                return
            except CorecensusError as exc:
                self._failed(exc)
                time.sleep(0.5)

    def _failed(self, exc: BaseException) -> None:
        self.last_error = str(exc) if isinstance(exc, CorecensusError) else repr(exc)
        with self._cond:
            self._cond.notify_all()  # (readers in sync() stop waiting)
        if self._on_error is not None:
            self._on_error(self.last_error)

    def _load(self) -> LoadReport | None:
        """One batch of frames into the store; None when there is nothing to load."""
        start = self._clock()
        groups: list[UploadRows] = []
        end, read = self.applied, 0
        with self._cond:
            fresh = deque(self._fresh)
        while read < self._batch_bytes:
            while fresh and fresh[0].end <= end:
                fresh.popleft()  # (read from the files already)
            if fresh and fresh[0].start == end:
                frame = fresh.popleft()
                groups.append(rows_of(frame.pieces, encoded=True))
                end, read = frame.end, read + frame.size
                continue
            # From the files: what was not handed over, up to the next frame that was (moving
            # on to the next segment is a step of its own).
            until = fresh[0].start if fresh else None
            moved = False
            for payload, position in self._journal.frames(end, self._batch_bytes - read, until):
                if payload:
                    groups.append(decode_rows(payload, encoded=True))
                end, read, moved = position, read + len(payload), True
            if not moved:
                break
        if end == self.applied:
            return None
        rows = UploadRows(
            # (each record's JSON stays msgpack to the store's insert: EncodedCrashRows)
            crashes=EncodedCrashRows([r for g in groups for r in g.crashes]),
            heartbeats=[r for g in groups for r in g.heartbeats],
            screens=[r for g in groups for r in g.screens],
        )
        loaded = self._journal.bytes_after(self.applied) - self._journal.bytes_after(end)
        counts = store_rows(self._store, rows, journal=(JOURNAL_NAME, end.segment, end.offset))
        if os.environ.get(_KILL_AFTER_LOAD_ENV) == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        # A retry that came after its first copy was loaded (no longer pending in the
        # appender) was journaled again; the store's keys found it here: still a duplicate.
        self._metrics.count_stored(counts, new=False)
        with self._cond:
            self.applied = end
            while self._fresh and self._fresh[0].end <= end:
                self._fresh_bytes -= self._fresh.popleft().size
            self._cond.notify_all()  # (readers in sync())
        self.last_error = None
        self._journal.release(end)
        if self.on_stored is not None:
            self.on_stored(rows)
        seconds = self._clock() - start
        if loaded > 0 and seconds > 0:
            self.bytes_per_s += 0.2 * (loaded / seconds - self.bytes_per_s)
        self._metrics.load_seconds.observe(seconds)
        self._metrics.journal_bytes.set(self.unloaded_bytes())
        return LoadReport(len(groups), len(rows), seconds, counts)

    def _checkpoint_if_due(self, *, caught_up: bool) -> None:
        size = self._store.log_bytes()
        if size < (self._checkpoint_idle if caught_up else self._checkpoint_max):
            return
        start = self._clock()
        self._store.checkpoint()
        seconds = self._clock() - start
        self._metrics.checkpoint_seconds.observe(seconds)
        if self._on_checkpoint is not None:
            self._on_checkpoint(seconds, size, not caught_up)


def _plus(a: UploadCounts, b: UploadCounts) -> UploadCounts:
    return UploadCounts(a.crashes + b.crashes, a.heartbeats + b.heartbeats, a.screens + b.screens)


class JournalAppender:
    """The writer's sink: each group's rows not already in the journal, appended and made
    durable (the module's text). Raises :class:`JournalFull` past ``max_bytes`` not yet
    loaded, and the journal's error (a full disk) with nothing appended."""

    def __init__(
        self,
        journal: Journal,
        loader: JournalLoader,
        backlog: Backlog,
        metrics: CollectorMetrics,
        *,
        max_bytes: int = 128 << 20,
        soft_bytes: int = 32 << 20,
    ) -> None:
        self._journal = journal
        self._loader = loader
        self._backlog = backlog
        self._metrics = metrics
        self._max_bytes = max_bytes
        self._soft_bytes = soft_bytes
        self._lock = threading.Lock()
        # Keys of the rows appended and not yet loaded, per kind (crashes, heartbeats, screens).
        self._pending: tuple[set[Hashable], set[Hashable], set[Hashable]] = (set(), set(), set())
        self._stall_s = 0.0
        loader.on_stored = self._loaded

    def full(self) -> str | None:
        """Why the journal takes nothing more now (None: it takes more)."""
        held = self._loader.unloaded_bytes()
        if held >= self._max_bytes:
            return (
                f"the journal holds {held} bytes not yet in the store (at most {self._max_bytes})"
            )
        return None

    def __call__(self, pieces: Sequence[JournalRows]) -> UploadCounts:
        """Append the rows of ``pieces`` (a group commit's requests) not in the journal yet,
        as one frame of the pieces' own bytes; returns what was new and what was there."""
        fresh: list[JournalRows] = []
        seen: dict[RecordKind, set[Hashable]] = {kind: set() for kind in _KINDS}
        counts = dict.fromkeys(_KINDS, AddResult())
        with self._lock:
            for piece in pieces:
                pending, group = self._pending[_KINDS.index(piece.kind)], seen[piece.kind]
                keys = set(piece.keys)
                if len(keys) == len(piece.keys) and keys.isdisjoint(pending):
                    # The usual case: journaled as its front end encoded it.
                    fits = keys.isdisjoint(group)
                    kept = piece if fits else self._without(piece, pending, group)
                else:
                    kept = self._without(piece, pending, group)
                group.update(kept.keys)
                if len(kept):
                    fresh.append(kept)
                counts[piece.kind] += AddResult(len(kept), len(piece) - len(kept))
        if fresh:
            parts = frame_parts(fresh)
            size = sum(len(p) for p in parts)
            held = self._loader.unloaded_bytes()
            if held + size > self._max_bytes and held > 0:
                raise JournalFull(
                    f"the journal holds {held} bytes not yet in the store "
                    f"(at most {self._max_bytes})"
                )
            start = self._journal.end()  # (this thread alone appends)
            end = self._journal.append(*parts)
            with self._lock:
                for kind in _KINDS:
                    self._pending[_KINDS.index(kind)].update(seen[kind])
            self._loader.appended(start, end, fresh, size)
        self._behind()
        return UploadCounts(*(counts[kind] for kind in _KINDS))

    @staticmethod
    def _without(piece: JournalRows, *there: set[Hashable]) -> JournalRows:
        """``piece`` without the rows whose keys are in ``there`` or earlier in it (a retry:
        decoded and encoded again, the rare case)."""
        kept: list[Any] = []
        taken: set[Hashable] = set()
        for row, key in zip(piece_rows(piece), piece.keys, strict=True):
            if key not in taken and not any(key in keys for keys in there):
                taken.add(key)
                kept.append(row)
        return journal_rows(piece.kind, kept)

    def _loaded(self, rows: UploadRows) -> None:
        # (called by the loader after the store committed ``rows``)
        with self._lock:
            for kind, kind_keys in enumerate(_keys(rows)):
                self._pending[kind].difference_update(kind_keys)
        self._behind()

    def _behind(self) -> None:
        """Tell admission how long the loader needs to be back under ``soft_bytes``."""
        held = self._loader.unloaded_bytes()
        self._metrics.journal_bytes.set(held)
        stall = max(0, held - self._soft_bytes) / max(self._loader.bytes_per_s, 1.0)
        # (told when it starts, ends, or changes by a tenth: not on every group commit)
        last = self._stall_s
        if stall != last and (not stall or not last or abs(stall - last) > 0.1 * last):
            self._stall_s = stall
            self._backlog.stalling(stall)

    def pending(self) -> int:
        with self._lock:
            return sum(len(p) for p in self._pending)
