"""Reading a store's crash columns while the analysis's libraries load.

``analyze`` from a store spends its first second on two things that do not depend on each
other: loading SciPy and the analysis modules (Python, under the interpreter lock) and reading
the crashes (DuckDB's query and NumPy's sort, which release it). A front end that starts the
read first, on a thread of its own, and imports :mod:`corecensus.app.analyze` afterwards gets
both done in the time of the longer on a machine with a core to spare (0.3-0.4 s of the 6-7 s
of ``analyze --db`` on a million crashes, issue 7), and loses nothing on a machine without.

This module imports nothing heavy itself (the store package, which a front end has loaded to
open the store): the point is to start the read before the analysis is imported.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corecensus.store import CrashColumns, Store

__all__ = ["CrashColumnsAhead"]


class CrashColumnsAhead:
    """``store.crash_columns(level)`` started on a thread; :meth:`result` waits for it and
    returns it, or raises what it raised (a :class:`~corecensus.errors.StoreError` reaches the
    caller as if it had read the columns itself). The store must not be written meanwhile."""

    def __init__(self, store: Store, level: str) -> None:
        self.store = store
        self.level = str(level)
        self._columns: CrashColumns | None = None
        self._error: BaseException | None = None
        # daemon: an interrupted command does not wait for a read nobody will use
        self._thread = threading.Thread(target=self._read, name="crash-columns", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            self._columns = self.store.crash_columns(self.level)
        except BaseException as exc:  # handed to the caller of result()
            self._error = exc

    def result(self) -> CrashColumns:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._columns is not None  # the thread ended without an error
        return self._columns
