"""Storage: the :class:`Store` protocol, its DuckDB adapter and an in-memory fake.

``open_store()`` opens (or creates) the default ``./corecensus.duckdb``.
"""

from __future__ import annotations

import os

from corecensus.store.duckdb_store import DEFAULT_STORE_PATH, DuckDBStore
from corecensus.store.memory import MemoryStore
from corecensus.store.protocol import TABLES, Store
from corecensus.store.records import (
    AddResult,
    CrashColumns,
    DeployRow,
    ExposureRow,
    Heartbeat,
    ScreenResultRow,
)
from corecensus.store.schema import SCHEMA_VERSION

__all__ = [
    "DEFAULT_STORE_PATH",
    "SCHEMA_VERSION",
    "TABLES",
    "AddResult",
    "CrashColumns",
    "DeployRow",
    "DuckDBStore",
    "ExposureRow",
    "Heartbeat",
    "MemoryStore",
    "ScreenResultRow",
    "Store",
    "open_store",
]


def open_store(
    path: str | os.PathLike[str] = DEFAULT_STORE_PATH, *, read_only: bool = False
) -> DuckDBStore:
    """Open the DuckDB store at ``path`` (created if missing, unless ``read_only``)."""
    return DuckDBStore(path, read_only=read_only)
