"""The store's schema and its version.

The schema version lives in ``corecensus_meta``. Opening a store checks it: an older store is
migrated in one transaction (each step in :data:`MIGRATIONS` moves one version up), a newer one
is refused rather than misread, and a DuckDB file without ``corecensus_meta`` is not a store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from corecensus.store.tables import TABLES

__all__ = ["MIGRATIONS", "READ_AS_IS_SINCE", "SCHEMA_VERSION", "TABLE_DDL"]

_JOURNAL_APPLIED = (
    "journal VARCHAR NOT NULL PRIMARY KEY, segment BIGINT NOT NULL, end_offset BIGINT NOT NULL"
)

SCHEMA_VERSION = 5
# The oldest schema a read-only opener reads without migrating: what came after it only adds
# tables no reader reads (5: journal_applied, the collector's).
READ_AS_IS_SINCE = 4

TABLE_DDL: Mapping[str, str] = {
    "corecensus_meta": "key VARCHAR NOT NULL PRIMARY KEY, value VARCHAR NOT NULL",
    # How far a journal in front of the store (the collector's) is applied: written in the
    # transaction that stores its rows, so a replay after a crash applies each frame once.
    "journal_applied": _JOURNAL_APPLIED,
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


def _journal_applied(con: Any) -> None:
    """4 -> 5: the collector's journal and how far it is applied (issue 11), nothing yet."""
    con.execute(f"CREATE TABLE journal_applied ({_JOURNAL_APPLIED})")


# from_version -> step that brings a connection's schema to from_version + 1.
MIGRATIONS: Mapping[int, Callable[[Any], None]] = {
    1: _cpu_facts,
    2: _heartbeat_health,
    3: _heartbeat_host_facts,
    4: _journal_applied,
}
