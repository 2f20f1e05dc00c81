"""The per-CPU test's facts travel from a sidecar to the analysis table (issue 9): online CPUs,
physical core and the allowed CPUs (CORECENSUS_CPUS_ALLOWED, else systemd-coredump's
COREDUMP_PROC_STATUS), through a real sidecar, the pipeline and a real DuckDB store, including
one migrated from schema version 1."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from corecensus.app.analyze import crash_table
from corecensus.app.ingest import store_records
from corecensus.ingest import read_sidecar, sidecar_path
from corecensus.ingest.fields import cpus_allowed_of
from corecensus.model import CrashRecord, ParseStatus
from corecensus.store import SCHEMA_VERSION, open_store

T0 = 1_700_000_000_000_000
STATUS = "Name:\tsvc\nCpus_allowed:\tf0\nCpus_allowed_list:\t4-7\nMems_allowed_list:\t0\n"


def _record(i: int, **meta: str) -> CrashRecord:
    return CrashRecord(
        core_id=f"c{i}",
        status=ParseStatus.OK,
        exe="/usr/bin/svc",
        signal=11,
        metadata={
            "COREDUMP_HOSTNAME": "h1",
            "COREDUMP_TIMESTAMP": str(T0 + i * 3_600_000_000),
            "CORECENSUS_CPU": "5",
            **meta,
        },
    )


def test_sidecar_cpu_facts_are_checked(tmp_path: Path) -> None:
    core = tmp_path / "core"
    core.write_bytes(b"")
    sidecar_path(core).write_text(
        json.dumps(
            {
                "CORECENSUS_HOST_CPUS": "64",
                "CORECENSUS_CPU_CORE": "many",
                "CORECENSUS_CPUS_ALLOWED": "7,4-6",
                "COREDUMP_PROC_STATUS": STATUS,
            }
        )
    )
    found = read_sidecar(core)
    assert found is not None
    assert found.fields["CORECENSUS_HOST_CPUS"] == "64"
    assert found.fields["CORECENSUS_CPUS_ALLOWED"] == "4-7"  # the kernel's spelling
    assert "CORECENSUS_CPU_CORE" not in found.fields  # malformed: dropped and reported
    assert any("CORECENSUS_CPU_CORE" in str(e) for e in found.errors)


def test_allowed_cpus_from_proc_status() -> None:
    assert cpus_allowed_of({"COREDUMP_PROC_STATUS": STATUS}) == "4-7"
    assert cpus_allowed_of({"CORECENSUS_CPUS_ALLOWED": "2", "COREDUMP_PROC_STATUS": STATUS}) == "2"
    assert cpus_allowed_of({"COREDUMP_PROC_STATUS": "Name:\tsvc\n"}) is None
    assert cpus_allowed_of({"COREDUMP_PROC_STATUS": "Cpus_allowed_list:\t9-3\n"}) is None
    assert cpus_allowed_of({}) is None


def test_facts_reach_the_crash_table_through_a_migrated_store(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with open_store(path) as store:
        store_records(store, [_record(0)])
    # make it a version-1 store: the columns schema 2 added are not there yet
    con = duckdb.connect(str(path))
    for name in ("host_cpus", "cpu_core", "cpus_allowed"):
        con.execute(f"ALTER TABLE crashes DROP COLUMN {name}")
    # schema 3's and 4's, not in a version-1 store
    for name in ("uptime_s", "agent_uptime_s", "lost", "microcode", "kernel"):
        con.execute(f"ALTER TABLE heartbeats DROP COLUMN {name}")
    con.execute("DROP TABLE journal_applied")  # schema 5's
    con.execute("UPDATE corecensus_meta SET value = '1' WHERE key = 'schema_version'")
    con.close()
    with open_store(path) as store:  # migrated on open
        store_records(
            store,
            [
                _record(1, CORECENSUS_HOST_CPUS="16", CORECENSUS_CPU_CORE="5"),
                _record(2, COREDUMP_PROC_STATUS=STATUS, CORECENSUS_HOST_CPUS="8"),
            ],
        )
        table, _ = crash_table(store)
    con = duckdb.connect(str(path), read_only=True)
    version = con.execute(
        "SELECT value FROM corecensus_meta WHERE key = 'schema_version'"
    ).fetchone()
    con.close()
    assert version == (str(SCHEMA_VERSION),)
    assert table.host_cpus is not None and table.host_cpus.tolist() == [16]  # largest seen
    assert table.cpu_core is not None and table.cpu_core.tolist() == [-1, 5, -1]
    assert table.cpus_allowed is not None
    assert [table.cpus_allowed.vocab[c] if c >= 0 else None for c in table.cpus_allowed.codes] == [
        None,
        None,
        "4-7",
    ]


def test_store_without_facts_gives_a_table_without_them(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.duckdb") as store:
        store_records(store, [_record(0), _record(1)])
        table, _ = crash_table(store)
    assert table.host_cpus is None and table.cpu_core is None and table.cpus_allowed is None
