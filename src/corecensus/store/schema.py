"""The store's tables and schema version.

The schema version lives in ``corecensus_meta``. Opening a store checks it: an older store is
migrated in one transaction (each step in :data:`MIGRATIONS` moves one version up), a newer one
is refused rather than misread, and a DuckDB file without ``corecensus_meta`` is not a store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from corecensus.store.rows import CRASH_COLUMNS

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "TABLE_DDL"]

SCHEMA_VERSION = 1

TABLE_DDL: Mapping[str, str] = {
    "corecensus_meta": "key VARCHAR NOT NULL PRIMARY KEY, value VARCHAR NOT NULL",
    "crashes": ", ".join(f"{name} {kind}" for name, kind in CRASH_COLUMNS),
    "exposure": (
        "host VARCHAR NOT NULL, start_us BIGINT NOT NULL, end_us BIGINT NOT NULL, "
        "service VARCHAR NOT NULL, version VARCHAR NOT NULL, cpu_model VARCHAR, "
        "PRIMARY KEY (host, start_us, end_us, service, version)"
    ),
    "deploys": (
        "time_us BIGINT NOT NULL, service VARCHAR NOT NULL, version VARCHAR NOT NULL, "
        "PRIMARY KEY (time_us, service, version)"
    ),
    "heartbeats": (
        "host VARCHAR NOT NULL, time_us BIGINT NOT NULL, service VARCHAR NOT NULL, "
        "version VARCHAR NOT NULL, PRIMARY KEY (host, time_us, service, version)"
    ),
    "screen_results": (
        "result_id VARCHAR NOT NULL PRIMARY KEY, host VARCHAR NOT NULL, time_us BIGINT NOT NULL, "
        "mode VARCHAR NOT NULL, decision VARCHAR NOT NULL, result_json VARCHAR NOT NULL"
    ),
}

# from_version -> step that brings a connection's schema to from_version + 1. Version 1 is the
# first; the next schema change adds MIGRATIONS[1] and bumps SCHEMA_VERSION.
MIGRATIONS: Mapping[int, Callable[[Any], None]] = {}
