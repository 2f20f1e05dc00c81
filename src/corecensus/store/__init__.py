"""Storage: the :class:`Store` protocol, its DuckDB adapter and an in-memory fake.

``open_store()`` opens (or creates) the default ``./corecensus.duckdb``. Each table is declared
once in :mod:`corecensus.store.tables` (``CRASHES``, ``EXPOSURE``, ``DEPLOYS``, ``HEARTBEATS``,
``SCREEN_RESULTS``).
"""

from __future__ import annotations

import os

from corecensus.store.duckdb_store import DEFAULT_STORE_PATH, DuckDBStore
from corecensus.store.memory import MemoryStore
from corecensus.store.protocol import Store
from corecensus.store.records import (
    AddResult,
    CodedColumn,
    CrashColumns,
    CrashRow,
    DamagedCrash,
    DeployRow,
    EncodedCrashRows,
    ExposureRow,
    Heartbeat,
    ScreenResultRow,
    SignatureColumns,
)
from corecensus.store.schema import SCHEMA_VERSION
from corecensus.store.tables import (
    CRASHES,
    DEPLOYS,
    EXPOSURE,
    HEARTBEATS,
    SCREEN_RESULTS,
    TABLES,
    Table,
)

__all__ = [
    "CRASHES",
    "DEFAULT_STORE_PATH",
    "DEPLOYS",
    "EXPOSURE",
    "HEARTBEATS",
    "SCHEMA_VERSION",
    "SCREEN_RESULTS",
    "TABLES",
    "AddResult",
    "CodedColumn",
    "CrashColumns",
    "CrashRow",
    "DamagedCrash",
    "DeployRow",
    "DuckDBStore",
    "EncodedCrashRows",
    "ExposureRow",
    "Heartbeat",
    "MemoryStore",
    "ScreenResultRow",
    "SignatureColumns",
    "Store",
    "Table",
    "open_store",
]


def open_store(
    path: str | os.PathLike[str] = DEFAULT_STORE_PATH,
    *,
    read_only: bool = False,
    threads: int | None = None,
    row_group_rows: int | None = None,
) -> DuckDBStore:
    """Open the DuckDB store at ``path`` (created if missing, unless ``read_only``), with
    ``threads`` DuckDB threads if given (else DuckDB's default, one per CPU), writing row
    groups of ``row_group_rows`` if given (else DuckDB's default)."""
    return DuckDBStore(path, read_only=read_only, threads=threads, row_group_rows=row_group_rows)
