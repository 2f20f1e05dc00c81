"""The one writer: a thread that takes every upload's rows and makes them durable in groups.

Upload requests hand their checked records to :meth:`GroupCommitWriter.submit` and wait for the
future it returns. The writer takes every request waiting (up to ``max_commit_records``) and
hands them to its sink together, so the cost of making them durable (an ``fdatasync``) is
shared by many requests: group commit, as databases do for their own logs. A future is
resolved only after the sink returned, so a request is acknowledged only when what it sent is
durable. The collector's sink appends to its journal (:mod:`corecensus.collector.loader`):
DuckDB's commits and checkpoints happen on the loader's thread, off this path.

The queue is bounded in records; :meth:`submit` refuses work past the bound rather than letting
it grow (:class:`QueueFull`), and whatever ``full`` names (the journal at its bound).

Readers: DuckDB lets no other process open a file one process writes, not even to read, so the
writer also leaves a snapshot of what the store holds (``snapshot``, the store's
``write_snapshot``) when it starts and after commits, at most every ``snapshot_every_s`` (and
never more than a tenth of its time: a large store takes a while to copy), on a thread of its
own; ``corecensus analyze --db FILE`` reads it while the collector holds FILE (issue 10's
mechanism). A snapshot that falls due while uploads keep coming waits for a quiet moment
(``QUIET_S`` without a commit), up to ``snapshot_busy_every_s`` after the last one: the copy
writes the whole store again, and the journal's ``fdatasync`` waits behind its writes on the
same disk. In the lead's bench a 6-10 s copy (DuckDB's ``COPY FROM DATABASE``, before the
store copied its file instead: ``DuckDBStore.write_snapshot``) fell in the phase at 100 % of
capacity in every run, and the commits' wait grew to seconds (0 % shed and p99 132 ms without
it, 36 % shed and p99 3.8 s with it, same code and load).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from corecensus.app.uploads import UploadCounts
from corecensus.collector.admission import Backlog
from corecensus.collector.journal import JournalRows
from corecensus.collector.metrics import CollectorMetrics
from corecensus.errors import CorecensusError

__all__ = ["GroupCommitWriter", "QueueFull", "WriterStopped"]

# Makes a group commit's rows durable: each request's, as it was encoded (the journal).
Sink = Callable[[Sequence[JournalRows]], UploadCounts]
# Writes a snapshot for readers; returns nothing, raises on failure.
Snapshot = Callable[[], None]
# Told each snapshot's seconds, or its error.
SnapshotReport = Callable[[float, BaseException | None], None]


class QueueFull(CorecensusError):
    """The writer's queue holds as many records as it may."""


class WriterStopped(CorecensusError):
    """The writer has stopped (the collector is shutting down)."""


@dataclass(slots=True)
class _Job:
    records: JournalRows
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
        snapshot_busy_every_s: float = 300.0,
        on_snapshot: SnapshotReport | None = None,
        full: Callable[[], str | None] | None = None,
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
        self._snapshot_busy_every_s = max(snapshot_every_s, snapshot_busy_every_s)
        self._on_snapshot = on_snapshot
        self._full = full
        self._next_snapshot = 0.0
        # While uploads keep coming, the next snapshot waits for a quiet moment until this.
        self._busy_snapshot = 0.0
        self._last_commit: float | None = None
        self._unsnapped = True  # committed work the last snapshot does not hold
        self._jobs: deque[_Job] = deque()
        self._queued = 0
        # Jobs submitted, and the last committed (by sequence number).
        self._submitted = 0
        self._committed_seq = 0
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

    def submit(self, records: JournalRows) -> Future[tuple[float, int]]:
        """Queue ``records`` (one request's rows, encoded); the future resolves to the group
        commit's seconds and records once they are committed (or raises the sink's error).
        Raises :class:`QueueFull` or :class:`WriterStopped` instead of queueing."""
        job = _Job(records)
        with self._cond:
            if self._stopping:
                raise WriterStopped("the collector is stopping")
            if self._queued and self._queued + len(records) > self._max_queue:
                raise QueueFull(f"{self._queued} records queued")
            why = self._full() if self._full is not None else None
            if why is not None:
                raise QueueFull(why)
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
                due = self._snapshot_at() - self._clock()
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
        if self._snapshot_due():
            self._snap_beside()

    # Seconds without a commit that make a quiet moment for a snapshot.
    QUIET_S = 1.0

    def _snapshot_at(self) -> float:
        """When the next snapshot falls due (the clock's time): ``snapshot_every_s`` after the
        last at the soonest, then at the first quiet moment, or at ``snapshot_busy_every_s``
        after the last if none comes."""
        quiet = 0.0 if self._last_commit is None else self._last_commit + self.QUIET_S
        return max(self._next_snapshot, min(quiet, self._busy_snapshot))

    def _snapshot_due(self) -> bool:
        return (
            self._snapshot is not None
            and self._unsnapped
            and not self._snapping()
            and self._clock() >= self._snapshot_at()
        )

    def _snapping(self) -> bool:
        return self._snapper is not None and self._snapper.is_alive()

    def _snap_beside(self) -> None:
        """A snapshot on a thread of its own while commits go on (the store copies from its
        own connection and transaction); the next is due ``snapshot_every_s`` after it at
        the soonest."""
        self._unsnapped = False  # commits from now on are not in it
        now = self._clock()
        self._next_snapshot = now + self._snapshot_every_s
        self._busy_snapshot = now + self._snapshot_busy_every_s
        self._snapper = threading.Thread(
            target=self._snap_and_tell, name="corecensus-snapshot", daemon=True
        )
        self._snapper.start()

    def _snap_and_tell(self) -> None:
        self._snap()
        with self._cond:
            self._cond.notify()

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
        self._busy_snapshot = start + max(self._snapshot_busy_every_s, 10 * seconds)
        if self._on_snapshot is not None:
            self._on_snapshot(seconds, error)

    def _commit(self, jobs: list[_Job]) -> None:
        size = sum(len(job.records) for job in jobs)
        start = self._clock()
        error: BaseException | None = None
        try:
            counts = self._sink([job.records for job in jobs])
        except Exception as exc:  # the sink's failure is each waiting request's answer
            error = exc
        end = self._clock()
        seconds = end - start
        with self._cond:
            self._last_commit = end
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
            self._metrics.count_stored(counts)
            for job in jobs:
                job.done.set_result((seconds, size))
        else:
            if not isinstance(error, QueueFull):  # (full is not broken)
                self.healthy, self.last_error = False, str(error)
            for job in jobs:
                job.done.set_exception(error)
