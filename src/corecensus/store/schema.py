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

SCHEMA_VERSION = 4

TABLE_DDL: Mapping[str, str] = {
    "corecensus_meta": "key VARCHAR NOT NULL PRIMARY KEY, value VARCHAR NOT NULL",
    **{t.name: t.ddl() for t in TABLES},
}


def _cpu_facts(con: Any) -> None:
    """1 -> 2: the per-CPU test's facts (issue 9), unknown for crashes stored before."""
    for name, sql in (
        ("host_cpus", "INTEGER"),
        ("cpu_core", "INTEGER"),
        ("cpus_allowed", "VARCHAR"),
    ):
        con.execute(f"ALTER TABLE crashes ADD COLUMN {name} {sql}")


def _heartbeat_health(con: Any) -> None:
    """2 -> 3: uptimes and loss counts in the agent's heartbeat (issue 12), unknown before."""
    for name, sql in (("uptime_s", "BIGINT"), ("agent_uptime_s", "BIGINT"), ("lost", "VARCHAR")):
        con.execute(f"ALTER TABLE heartbeats ADD COLUMN {name} {sql}")


def _heartbeat_host_facts(con: Any) -> None:
    """3 -> 4: the host's microcode and kernel in the agent's heartbeat (issue 9), unknown
    before."""
    for name in ("microcode", "kernel"):
        con.execute(f"ALTER TABLE heartbeats ADD COLUMN {name} VARCHAR")


# from_version -> step that brings a connection's schema to from_version + 1.
MIGRATIONS: Mapping[int, Callable[[Any], None]] = {
    1: _cpu_facts,
    2: _heartbeat_health,
    3: _heartbeat_host_facts,
}
