"""The store's schema and its version.

The schema version lives in ``corecensus_meta``. Opening a store checks it: an older store is
migrated in one transaction (each step in :data:`MIGRATIONS` moves one version up), a newer one
is refused rather than misread, and a DuckDB file without ``corecensus_meta`` is not a store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from corecensus.store.tables import TABLES

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "TABLE_DDL"]

SCHEMA_VERSION = 1

TABLE_DDL: Mapping[str, str] = {
    "corecensus_meta": "key VARCHAR NOT NULL PRIMARY KEY, value VARCHAR NOT NULL",
    **{t.name: t.ddl() for t in TABLES},
}

# from_version -> step that brings a connection's schema to from_version + 1. Version 1 is the
# first; the next schema change adds MIGRATIONS[1] and bumps SCHEMA_VERSION.
MIGRATIONS: Mapping[int, Callable[[Any], None]] = {}
