"""Admission at the door: who is over their rate, and whether queued work can still finish in
time. Decided from headers and counters only, before a request's body is read.

DESIGN.md, outage lesson 3: queues that grow until every request times out. A request is worth
accepting only if the work queued ahead of it can be committed before its client gives up; when
it cannot, answering 503 at once (with ``Retry-After``) costs the collector nothing and tells the
agent when to come back, instead of holding a connection for an answer nobody will read.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backlog", "RateLimiter", "WriterView", "retry_after_s"]


def retry_after_s(seconds: float) -> int:
    """A ``Retry-After`` value: whole seconds (RFC 9110 §10.2.3), at least 1."""
    return max(1, math.ceil(seconds))


# The least time any upload takes from its arrival to its answer (seconds): the idle
# collector's expected wait never falls below it (expected_wait_s).
MIN_SERVICE_S = 0.002


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """A token bucket per agent: ``rate`` requests per second, up to ``burst`` at once."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, agent: str) -> float:
        """0 if ``agent`` may send a request now (and counts it), else the seconds until it may.
        Buckets exist only for agents in the tokens file, so the map is bounded by it."""
        now = self._clock()
        b = self._buckets.get(agent)
        if b is None:
            b = self._buckets[agent] = _Bucket(self.burst, now)
        b.tokens = min(self.burst, b.tokens + (now - b.stamp) * self.rate)
        b.stamp = now
        if b.tokens >= 1.0:
            b.tokens -= 1.0
            return 0.0
        return (1.0 - b.tokens) / self.rate


@dataclass(frozen=True, slots=True)
class WriterView:
    """What the writer process last told a front end about the whole collector (the work
    that front end cannot see, and the rate at which the collector finishes work).

    ``others_records``: records the other front ends hold -- admitted and not yet queued (at
    their average request size) or queued for the writer; ``throughput`` and
    ``last_throughput``: records committed per second in the writer's busy windows (busy: any
    front end holds work or the writer's queue is not empty), the moving average and the
    latest window; the rest, the writer's commit costs and the stall (a checkpoint or snapshot)
    it has announced. A front end that decides alone misses
    the others' work: at 5x overload with two front ends, admitted requests' p99 was 2.9 s
    against a 2 s deadline (README, the collector under load)."""

    others_records: float
    throughput: float | None
    last_throughput: float | None
    commit_s: float
    commit_s_per_record: float
    commit_floor_s: float | None
    stall_s: float = 0.0


class Backlog:
    """Work accepted and not yet answered, in records, and how fast the collector finishes it.

    A request passes two stages after admission: decoding (its body read, decompressed and
    checked, on decode threads) and committing (the writer). They overlap (and share the CPU
    with the event loop and with each other), so the wait ahead of a new request is the records
    in the system divided by the rate at which the system as a whole finishes records:
    ``throughput``, measured over windows of at least ``WINDOW_S`` in which the system was
    never empty (an idle moment would count as slowness), as a moving average. Records are
    counted where they are: queued for the writer exactly, admitted but not yet decoded at
    the average request size (under a burst many are admitted before any of them is read).

    Until a busy window has been measured, each stage's cost per record (a moving average of
    what it measured, wall time on its own thread; ``initial_s_per_record`` before that) stands
    in, summed as if the stages ran one after the other: slower than the truth, so it errs on
    the side of shedding.

    A collector of several processes shares one writer: records other processes hold count
    too (``elsewhere_records``). In the writer process it is every front end's admitted work
    as each reported it, so its busy windows are the whole collector's and its throughput is
    the collector's; a front end takes that throughput, the commit costs and the other front
    ends' records from the writer (:meth:`heard`) and adds its own work, which it knows
    exactly.
    """

    # Weight of the newest measurement in the moving averages.
    ALPHA = 0.2
    # Shortest busy window that measures the throughput (seconds): a few group commits.
    WINDOW_S = 0.25
    # Times an admitted request waits for the event loop to run it before it is answered.
    LOOP_TURNS = 4

    def __init__(
        self, initial_s_per_record: float = 1e-4, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.decode_s_per_record = initial_s_per_record
        self.commit_s_per_record = initial_s_per_record
        self.commit_s = 0.01
        self.records_per_request = 100.0
        self.admitted_requests = 0
        self.queued_records = 0
        # Records finished per second while the system was busy (None: not measured yet): the
        # moving average, and the latest window's (the wait takes the lower: a collector that
        # just slowed down -- a snapshot, a neighbour's burst on the CPU -- is slow now).
        self.throughput: float | None = None
        self.last_throughput: float | None = None
        self._window_start: float | None = None  # None while the system is empty
        self._window_done = 0
        # The fastest commit seen: what any request costs at least. Before the first, 5 ms (a
        # commit that reaches the disk does not take less).
        self._commit_floor_s: float | None = None
        # How late the event loop runs callbacks (seconds): a request that arrives now waits
        # about this long before anyone reads it, so it is part of every request's wait.
        self.loop_lag_s = 0.0
        # Records other processes of the collector hold (see the class's text).
        self.elsewhere_records = 0.0
        # Seconds the loader needs to bring the journal back under its soft bound, as the
        # writer announced them (loader.py): the door counts them in every new request's wait,
        # so a loader that falls behind sheds uploads before the journal fills.
        self.stall_s = 0.0
        # Called (on the caller's thread, outside the lock) after this process's own admitted
        # work changed: a front end tells the writer.
        self.on_change: Callable[[], None] | None = None

    def expected_wait_s(self) -> float:
        """Seconds until the work already accepted is committed, this request's own share
        (at the average request size) included. With nothing admitted or queued it is the
        fastest commit seen: a cost estimate a burst inflated must not refuse an idle
        collector's requests forever (they are what measures it again)."""
        with self._lock:
            if self._idle():
                floor = 0.005 if self._commit_floor_s is None else self._commit_floor_s
                # Since the journal a commit is one append and fdatasync, 0.3 ms at best here,
                # but no request is answered that fast: reading, checking and signing it come
                # first (a request's median was 9-10 ms server side at half load on the quiet
                # machine, README). Below this an idle collector admitted a 1 ms deadline.
                floor = max(floor, MIN_SERVICE_S)
                return floor + self.loop_lag_s + self.stall_s
            unread = (self.admitted_requests + 1) * self.records_per_request
            held = self.queued_records + self.elsewhere_records
            rate = self._rate()
            if rate is not None:
                ahead = (unread + held) / rate
            else:
                ahead = (
                    unread * (self.decode_s_per_record + self.commit_s_per_record)
                    + held * self.commit_s_per_record
                )
            # An admitted request waits for the loop at each of its turns on it (its body, the
            # hand-off to a decode thread, to the writer, the answer), not once.
            return ahead + self.commit_s + self.LOOP_TURNS * self.loop_lag_s + self.stall_s

    def commit_wait_s(self) -> float:
        """Seconds until records handed to the writer now would be committed: what is held
        ahead of them (queued for the writer, held by the other front ends) over the
        throughput, one commit and a turn of the event loop. The least an admitted request
        still has to wait once its body is read and checked. Not the loader's announced lag
        (``stall_s``): an upload is answered once it is in the journal, so the loader's lag
        is the door's reason to shed (the journal's bound), not a wait of this upload's."""
        with self._lock:
            held = self.queued_records + self.elsewhere_records
            rate = self._rate()
            ahead = held / rate if rate is not None else held * self.commit_s_per_record
            return ahead + self.commit_s + self.loop_lag_s

    def _rate(self) -> float | None:
        # Called with the lock held. The throughput a wait is reckoned at: the lower of the
        # moving average and the latest window (a collector that just slowed down is slow
        # now); None before a busy window has been measured.
        if self.throughput is None or self.last_throughput is None:
            return None
        return min(self.throughput, self.last_throughput)

    def stalling(self, seconds: float) -> None:
        """The writer will stand still for about ``seconds`` from now (0: it is moving)."""
        with self._lock:
            self.stall_s = max(0.0, seconds)
        self._changed()

    def records_ahead(self) -> float:
        """Records a new request would find ahead of it: admitted here (at the average
        request size), queued for the writer, held by other processes."""
        with self._lock:
            return (
                self.admitted_requests * self.records_per_request
                + self.queued_records
                + self.elsewhere_records
            )

    def admitted_records(self) -> float:
        """This process's admitted requests not yet queued, at the average request size."""
        with self._lock:
            return self.admitted_requests * self.records_per_request

    def _idle(self) -> bool:
        return (
            self.admitted_requests == 0 and self.queued_records == 0 and self.elsewhere_records <= 0
        )

    def elsewhere(self, records: float) -> None:
        """The records the collector's other processes hold now."""
        with self._lock:
            self.elsewhere_records = max(0.0, records)
            if self.elsewhere_records > 0:
                self._busy()
            else:
                self._maybe_idle()

    def view(self, others_records: float) -> WriterView:
        """What this (the writer's) backlog tells a front end whose peers hold
        ``others_records``."""
        with self._lock:
            return WriterView(
                others_records,
                self.throughput,
                self.last_throughput,
                self.commit_s,
                self.commit_s_per_record,
                self._commit_floor_s,
                self.stall_s,
            )

    def heard(self, view: WriterView) -> None:
        """A front end's: the writer's word on the collector. Its costs and throughput replace
        this process's own (they are the whole collector's, measured where every record
        passes); the records of the other front ends count as held elsewhere."""
        with self._lock:
            self.elsewhere_records = max(0.0, view.others_records)
            if view.throughput is not None:
                self.throughput = view.throughput
                self.last_throughput = view.last_throughput
            self.commit_s = view.commit_s
            self.commit_s_per_record = view.commit_s_per_record
            if view.commit_floor_s is not None:
                self._commit_floor_s = view.commit_floor_s
            self.stall_s = view.stall_s

    def lagged(self, seconds: float) -> None:
        """The event loop ran a callback ``seconds`` late."""
        with self._lock:
            self.loop_lag_s += self.ALPHA * (seconds - self.loop_lag_s)

    def _busy(self) -> None:
        # Called with the lock held, after work entered the system.
        if self._window_start is None:
            self._window_start, self._window_done = self._clock(), 0

    def _maybe_idle(self) -> None:
        # Called with the lock held, after work left the system: an empty system ends the
        # window. Shorter than WINDOW_S it measures no throughput, but what it finished in its
        # time is a floor under the throughput: an estimate below the floor is raised to it.
        # Else a collector that had measured itself slow (a neighbour's burst on the CPU) and
        # then shed nearly everything would never run busy long enough to learn otherwise.
        if self._idle():
            if self._window_start is not None and self._window_done > 0:
                elapsed = self._clock() - self._window_start
                if elapsed > 0:
                    floor = self._window_done / elapsed
                    if self.throughput is not None and floor > self.throughput:
                        self.throughput = floor
                    if self.last_throughput is not None and floor > self.last_throughput:
                        self.last_throughput = floor
            self._window_start = None

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def admitted(self) -> None:
        with self._lock:
            self.admitted_requests += 1
            self._busy()
        self._changed()

    def left(self) -> None:
        """An admitted request was queued for the writer, or refused."""
        with self._lock:
            self.admitted_requests -= 1
            self._maybe_idle()
        self._changed()

    def decoded(self, records: int, seconds: float) -> None:
        with self._lock:
            if records > 0:
                self.decode_s_per_record += self.ALPHA * (
                    seconds / records - self.decode_s_per_record
                )
                self.records_per_request += self.ALPHA * (records - self.records_per_request)
        self._changed()

    def queued(self, records: int) -> None:
        with self._lock:
            self.queued_records += records
            self._busy()

    def unqueued(self, records: int) -> None:
        """Records that left this process's queue with no commit measured here: the writer
        refused them or went away, or (a front end) the writer process committed them and
        measures its commits itself."""
        with self._lock:
            self.queued_records -= records
            self._maybe_idle()

    def committed(self, records: int, seconds: float) -> None:
        with self._lock:
            self.queued_records -= records
            if records > 0:
                self.commit_s_per_record += self.ALPHA * (
                    seconds / records - self.commit_s_per_record
                )
                self.commit_s += self.ALPHA * (seconds - self.commit_s)
                floor = self._commit_floor_s
                self._commit_floor_s = seconds if floor is None else min(floor, seconds)
            if self._window_start is not None:
                self._window_done += records
                now = self._clock()
                elapsed = now - self._window_start
                if elapsed >= self.WINDOW_S and self._window_done > 0:
                    rate = self._window_done / elapsed
                    self.last_throughput = rate
                    old = self.throughput
                    self.throughput = rate if old is None else old + self.ALPHA * (rate - old)
                    self._window_start, self._window_done = now, 0
            self._maybe_idle()
