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

__all__ = ["Backlog", "RateLimiter", "retry_after_s"]


def retry_after_s(seconds: float) -> int:
    """A ``Retry-After`` value: whole seconds (RFC 9110 §10.2.3), at least 1."""
    return max(1, math.ceil(seconds))


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

    def expected_wait_s(self) -> float:
        """Seconds until the work already accepted is committed, this request's own share
        (at the average request size) included. With nothing admitted or queued it is the
        fastest commit seen: a cost estimate a burst inflated must not refuse an idle
        collector's requests forever (they are what measures it again)."""
        with self._lock:
            if self.admitted_requests == 0 and self.queued_records == 0:
                floor = 0.005 if self._commit_floor_s is None else self._commit_floor_s
                return floor + self.loop_lag_s
            unread = (self.admitted_requests + 1) * self.records_per_request
            if self.throughput is not None and self.last_throughput is not None:
                rate = min(self.throughput, self.last_throughput)
                ahead = (unread + self.queued_records) / rate
            else:
                ahead = (
                    unread * (self.decode_s_per_record + self.commit_s_per_record)
                    + self.queued_records * self.commit_s_per_record
                )
            # An admitted request waits for the loop at each of its turns on it (its body, the
            # hand-off to a decode thread, to the writer, the answer), not once.
            return ahead + self.commit_s + self.LOOP_TURNS * self.loop_lag_s

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
        if self.admitted_requests == 0 and self.queued_records == 0:
            if self._window_start is not None and self._window_done > 0:
                elapsed = self._clock() - self._window_start
                if elapsed > 0:
                    floor = self._window_done / elapsed
                    if self.throughput is not None and floor > self.throughput:
                        self.throughput = floor
                    if self.last_throughput is not None and floor > self.last_throughput:
                        self.last_throughput = floor
            self._window_start = None

    def admitted(self) -> None:
        with self._lock:
            self.admitted_requests += 1
            self._busy()

    def left(self) -> None:
        """An admitted request was queued for the writer, or refused."""
        with self._lock:
            self.admitted_requests -= 1
            self._maybe_idle()

    def decoded(self, records: int, seconds: float) -> None:
        with self._lock:
            if records > 0:
                self.decode_s_per_record += self.ALPHA * (
                    seconds / records - self.decode_s_per_record
                )
                self.records_per_request += self.ALPHA * (records - self.records_per_request)

    def queued(self, records: int) -> None:
        with self._lock:
            self.queued_records += records
            self._busy()

    def unqueued(self, records: int) -> None:
        """Records queued for a writer that refused them or went away."""
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
