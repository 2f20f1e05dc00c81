"""``/api/v1/analysis``: the analysis JSON, computed at most every ``interval_s`` seconds.

Analysis reads every crash, so it must not run per request. The first reader waits for the
first computation; afterwards readers get the cached document at once, and a reader who finds it
older than the interval starts one recomputation in the background (never two at a time) and
still gets the cached one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["AnalysisCache"]


class AnalysisCache:
    def __init__(
        self,
        compute: Callable[[], dict[str, Any]],
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._compute = compute
        self._interval = interval_s
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._doc: dict[str, Any] | None = None
        self._stamp = 0.0
        self._running = False
        self._error: str | None = None
        self.computations = 0

    def get(self, wait_s: float) -> tuple[dict[str, Any] | None, str | None]:
        """(document, None), or (None, error) when there is none yet: the last computation
        failed, or none finished within ``wait_s``. Call from a worker thread: it may block."""
        with self._lock:
            stale = self._doc is None or self._clock() - self._stamp >= self._interval
            if stale and not self._running:
                self._running = True
                threading.Thread(target=self._run, name="corecensus-analysis", daemon=True).start()
            if self._doc is None:
                self._ready.wait_for(lambda: not self._running, timeout=wait_s)
            if self._doc is None:
                return None, self._error or "the first analysis is still running"
            return self._doc, None

    def _run(self) -> None:
        started = self._clock()
        doc: dict[str, Any] | None = None
        error: str | None = None
        try:
            doc = self._compute()
            doc["computed_at_us"] = int(self._wall() * 1_000_000)
        except Exception as exc:  # reported to readers; the next reader retries
            error = f"analysis failed: {exc}"
        with self._lock:
            self.computations += 1
            if doc is not None:
                self._doc, self._stamp, self._error = doc, started, None
            else:
                self._error = error
            self._running = False
            self._ready.notify_all()
