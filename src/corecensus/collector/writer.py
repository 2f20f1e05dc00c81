"""The one writer: a thread that owns every write to the store and commits in groups.

Upload requests hand their checked records to :meth:`GroupCommitWriter.submit` and wait for the
future it returns. The writer takes every request waiting (up to ``max_commit_records``) and
stores them together, one transaction per record kind, so the cost of a commit (the write-ahead
log's fsync) is shared by many requests: group commit, as databases do for their own logs. A
future is resolved only after its records are committed, so a request is acknowledged only when
what it sent is durable.

The queue is bounded in records; :meth:`submit` refuses work past the bound rather than letting
it grow (:class:`QueueFull`).

Readers: DuckDB lets no other process open a file one process writes, not even to read, so the
writer also leaves a snapshot of what is committed (``snapshot``, the store's
``write_snapshot``) when it starts and after commits, at most every ``snapshot_every_s`` (and
never more than a tenth of its time: a large store takes a while to copy);
``corecensus analyze --db FILE`` reads it while the collector holds FILE (issue 10's mechanism).

Checkpoints: the store checkpoints only when the writer says so (``checkpoint``), after a
group's requests have been answered and when nothing waits (the log past
``checkpoint_idle_bytes``), or whatever waits once the log passes ``checkpoint_max_bytes`` (a
log that never stops growing would make a restart after a crash replay all of it). Left to
itself DuckDB checkpoints inside the commit that takes its log past 16 MB, and every request
of that group and of the groups queued behind it waited for it: at half the capacity, that
was the collector's p99.

A checkpoint holds every commit behind it (DuckDB blocks appends to the table it checkpoints,
duckdb#25988), for about as long per byte of log as the last ones took. When one falls due
while requests wait, the writer first tells the backlog how long the stall will be
(:meth:`Backlog.stalling`: admission adds it to every new request's wait, so a request that
cannot wait for it is refused at the door), commits the requests already queued -- they were
admitted expecting no stall -- and only then checkpoints; requests queued after the
announcement wait for it, knowingly. Before, a checkpoint at the hard bound under 5x overload
held requests admitted a moment earlier past their deadlines.

Snapshots after the first are written on a thread of their own while commits go on (the
store copies from a connection and transaction of its own); on the writer's thread, a 2.1 s
copy of a 100 MB store once held every commit behind it at half the collector's capacity.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from corecensus.app.uploads import UploadCounts, UploadRows
from corecensus.collector.admission import Backlog
from corecensus.collector.metrics import CollectorMetrics
from corecensus.errors import CorecensusError
from corecensus.ingest.wire import RecordKind

__all__ = ["Checkpoints", "GroupCommitWriter", "QueueFull", "WriterStopped"]

Sink = Callable[[UploadRows], UploadCounts]
# Writes a snapshot for readers; returns nothing, raises on failure.
Snapshot = Callable[[], None]
# Told each snapshot's seconds, or its error.
SnapshotReport = Callable[[float, BaseException | None], None]
# Told each checkpoint's seconds, the log's bytes before it, and whether requests were waiting.
CheckpointReport = Callable[[float, int, bool], None]


@dataclass(frozen=True, slots=True)
class Checkpoints:
    """How the writer checkpoints the store: ``log_bytes()`` says how much the write-ahead log
    holds, ``checkpoint()`` moves it into the file."""

    log_bytes: Callable[[], int]
    checkpoint: Callable[[], None]
    idle_bytes: int = 4 << 20
    max_bytes: int = 64 << 20


class QueueFull(CorecensusError):
    """The writer's queue holds as many records as it may."""


class WriterStopped(CorecensusError):
    """The writer has stopped (the collector is shutting down)."""


@dataclass(slots=True)
class _Job:
    kind: RecordKind
    records: Sequence[Any]
    seq: int = 0
    done: Future[tuple[float, int]] = field(default_factory=Future)


class GroupCommitWriter:
    def __init__(
        self,
        sink: Sink,
        backlog: Backlog,
        metrics: CollectorMetrics,
        *,
        max_queue_records: int,
        max_commit_records: int,
        snapshot: Snapshot | None = None,
        snapshot_every_s: float = 30.0,
        on_snapshot: SnapshotReport | None = None,
        checkpoints: Checkpoints | None = None,
        on_checkpoint: CheckpointReport | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._sink = sink
        self._backlog = backlog
        self._metrics = metrics
        self._max_queue = max_queue_records
        self._max_commit = max_commit_records
        self._clock = clock
        self._snapshot = snapshot
        self._snapshot_every_s = snapshot_every_s
        self._on_snapshot = on_snapshot
        self._checkpoints = checkpoints
        self._on_checkpoint = on_checkpoint
        self._next_snapshot = 0.0
        self._unsnapped = True  # committed work the last snapshot does not hold
        self._jobs: deque[_Job] = deque()
        self._queued = 0
        # Jobs submitted, and the last committed (by sequence number).
        self._submitted = 0
        self._committed_seq = 0
        # A checkpoint announced, done once the jobs up to ``_due_after`` are committed (they
        # were admitted before the announcement).
        self._due: str | None = None
        self._due_after = 0
        # Seconds per byte of log of the last checkpoints (10 ms per MiB before the first is
        # measured). The stall announced to admission is the slowest of these times the log:
        # measured quiet, checkpoints of 17-61 MiB took 2.7-30 ms per MiB in no order of size,
        # and a moving average announced 0.25 s for one that took 1.7 s, which admitted
        # requests that then missed their deadline at 5x overload.
        self._checkpoint_s_per_byte: deque[float] = deque([0.01 / (1 << 20)], maxlen=8)
        self._snapper: threading.Thread | None = None
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="corecensus-writer", daemon=True)
        self.healthy = True
        self.last_error: str | None = None

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, kind: RecordKind, records: Sequence[Any]) -> Future[tuple[float, int]]:
        """Queue ``records`` (the store's rows of one kind: :class:`UploadRows`'s); the future
        resolves to the group commit's seconds and records once they are committed (or raises the store's
        error). Raises
        :class:`QueueFull` or :class:`WriterStopped` instead of queueing."""
        job = _Job(kind, records)
        with self._cond:
            if self._stopping:
                raise WriterStopped("the collector is stopping")
            if self._queued and self._queued + len(records) > self._max_queue:
                raise QueueFull(f"{self._queued} records queued")
            self._submitted += 1
            job.seq = self._submitted
            self._jobs.append(job)
            self._queued += len(records)
            self._backlog.queued(len(records))
            self._metrics.queue_records.set(self._queued)
            self._metrics.queue_requests.set(len(self._jobs))
            self._cond.notify()
        return job.done

    def stop(self, timeout: float | None = None) -> bool:
        """Refuse new work, commit everything queued, and end the thread; True if it ended
        within ``timeout``."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _take(self) -> list[_Job] | None:
        with self._cond:
            while not self._jobs and not self._stopping:
                due = self._next_snapshot - self._clock()
                if self._snapshot_due():
                    return []  # idle, and the snapshot is behind: write it now
                waiting = self._snapshot is not None and self._unsnapped and not self._snapping()
                # (A snapshot in progress notifies when it ends.)
                self._cond.wait(max(0.0, due) if waiting else None)
            if not self._jobs:
                return None
            taken = [self._jobs.popleft()]
            size = len(taken[0].records)
            while self._jobs and size + len(self._jobs[0].records) <= self._max_commit:
                job = self._jobs.popleft()
                size += len(job.records)
                taken.append(job)
            return taken

    def _run(self) -> None:
        self._unsnapped = False
        self._snap()
        while (jobs := self._take()) is not None:
            if jobs:
                self._commit(jobs)
            self._maintain()
        # No snapshot at the end: once the writer is gone, readers open the store itself. One
        # in progress is waited for (the store is closed after this returns).
        if self._snapper is not None:
            self._snapper.join()

    def _maintain(self) -> None:
        """Checkpoint or snapshot when one is due: at once when no request waits, else
        announced first and done after the requests queued now (the class's text)."""
        if self._snapshot_due():
            self._snap_beside()
        with self._cond:
            idle = not self._jobs
            submitted = self._submitted
        if self._due is None:
            if self._checkpoint_due(idle) is None:
                return
            self._due, self._due_after = "checkpoint", submitted
            self._backlog.stalling(self._expected_stall_s())
        if not idle and self._committed_seq < self._due_after:
            return
        self._due = None
        self._checkpoint(idle)
        self._backlog.stalling(0.0)

    def _snapshot_due(self) -> bool:
        return (
            self._snapshot is not None
            and self._unsnapped
            and not self._snapping()
            and self._clock() >= self._next_snapshot
        )

    def _snapping(self) -> bool:
        return self._snapper is not None and self._snapper.is_alive()

    def _snap_beside(self) -> None:
        """A snapshot on a thread of its own while commits go on (the store copies from its
        own connection and transaction); the next is due ``snapshot_every_s`` after it at
        the soonest."""
        self._unsnapped = False  # commits from now on are not in it
        self._next_snapshot = self._clock() + self._snapshot_every_s
        self._snapper = threading.Thread(
            target=self._snap_and_tell, name="corecensus-snapshot", daemon=True
        )
        self._snapper.start()

    def _snap_and_tell(self) -> None:
        self._snap()
        with self._cond:
            self._cond.notify()

    def _checkpoint_due(self, idle: bool) -> str | None:
        policy = self._checkpoints
        if policy is None:
            return None
        size = policy.log_bytes()
        if size < (min(policy.idle_bytes, policy.max_bytes) if idle else policy.max_bytes):
            return None
        return "checkpoint"

    def _expected_stall_s(self) -> float:
        size = self._checkpoints.log_bytes() if self._checkpoints is not None else 0
        return size * max(self._checkpoint_s_per_byte)

    def _checkpoint(self, idle: bool) -> None:
        policy = self._checkpoints
        if policy is None:
            return
        size = policy.log_bytes()
        start = self._clock()
        try:
            policy.checkpoint()
        except Exception as exc:  # the log stays (durable); the next commit tells
            self.last_error = f"checkpoint: {exc}"
            return
        seconds = self._clock() - start
        if size > 0:
            self._checkpoint_s_per_byte.append(seconds / size)
        self._metrics.checkpoint_seconds.observe(seconds)
        if self._on_checkpoint is not None:
            self._on_checkpoint(seconds, size, not idle)

    def _snap(self) -> None:
        if self._snapshot is None:
            return
        start = self._clock()
        error: BaseException | None = None
        try:
            self._snapshot()
        except Exception as exc:  # readers keep the older snapshot; writing goes on
            error = exc
        seconds = self._clock() - start
        if error is not None:
            self._unsnapped = True
        self._next_snapshot = start + max(self._snapshot_every_s, 10 * seconds)
        if self._on_snapshot is not None:
            self._on_snapshot(seconds, error)

    def _commit(self, jobs: list[_Job]) -> None:
        by_kind: dict[RecordKind, list[Any]] = {kind: [] for kind in RecordKind}
        for job in jobs:
            by_kind[job.kind].extend(job.records)
        group = UploadRows(
            crashes=by_kind[RecordKind.CRASHES],
            heartbeats=by_kind[RecordKind.HEARTBEATS],
            screens=by_kind[RecordKind.SCREENINGS],
        )
        size = len(group)
        start = self._clock()
        error: BaseException | None = None
        try:
            counts = self._sink(group)
        except Exception as exc:  # the store's failure is each waiting request's answer
            error = exc
        seconds = self._clock() - start
        with self._cond:
            self._queued -= size
            self._committed_seq = jobs[-1].seq
            self._metrics.queue_records.set(self._queued)
            self._metrics.queue_requests.set(len(self._jobs))
        self._backlog.committed(size, seconds)
        if error is None:
            self._unsnapped = True
            self.healthy, self.last_error = True, None
            self._metrics.commit_seconds.observe(seconds)
            self._metrics.commit_batch_records.observe(size)
            for kind, result in (
                (RecordKind.CRASHES, counts.crashes),
                (RecordKind.HEARTBEATS, counts.heartbeats),
                (RecordKind.SCREENINGS, counts.screens),
            ):
                if result.new:
                    self._metrics.stored.labels(kind=str(kind)).inc(result.new)
                if result.duplicate:
                    self._metrics.duplicate.labels(kind=str(kind)).inc(result.duplicate)
            for job in jobs:
                job.done.set_result((seconds, size))
        else:
            self.healthy, self.last_error = False, str(error)
            for job in jobs:
                job.done.set_exception(error)
