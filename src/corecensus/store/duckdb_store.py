"""The DuckDB adapter of :class:`corecensus.store.Store` (the only module that imports duckdb).

DuckDB holds an exclusive lock on a database file while a read-write connection is open, so a
second writer process fails at open; we turn that, a corrupt or foreign file, a full disk and
every other ``duckdb.Error`` into a :class:`StoreError` that says what happened and what to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import duckdb
import msgspec
import numpy as np
import numpy.typing as npt

from corecensus.errors import StoreError
from corecensus.model import CrashRecord
from corecensus.outside import require_regular
from corecensus.store.known_ids import KnownCrashIds, crash_id_digest
from corecensus.store.records import (
    AddResult,
    CodedColumn,
    CrashColumns,
    CrashRow,
    DamagedCrash,
    EncodedCrashRows,
    Heartbeat,
    ScreenResultRow,
    SignatureColumns,
    decode_crash,
    decoded_record,
)
from corecensus.store.schema import MIGRATIONS, READ_AS_IS_SINCE, SCHEMA_VERSION, TABLE_DDL
from corecensus.store.tables import (
    BATCH_ROWS,
    CRASHES,
    HEARTBEATS,
    SCREEN_RESULTS,
    SIGNATURE_FIELDS,
    TABLES,
    Table,
    batched,
    population_column,
)

__all__ = [
    "BATCH_ROWS",
    "DEFAULT_STORE_PATH",
    "DuckDBStore",
    "batched",
    "population_column",
    "snapshot_path",
    "translate_error",
]

DEFAULT_STORE_PATH = Path("corecensus.duckdb")


def snapshot_path(store: str | os.PathLike[str]) -> Path:
    """Where a writer leaves the copy readers use while it holds the store."""
    return Path(f"{os.fspath(store)}.snapshot")


R = TypeVar("R")

# Extra columns a Parquet export adds: readable timestamps beside the microsecond columns.
_EXPORT_TIMES: dict[str, tuple[str, ...]] = {
    "crashes": ("time_us AS time",),
    "exposure": ("start_us AS start_time", "end_us AS end_time"),
    "deploys": ("time_us AS time",),
    "heartbeats": ("time_us AS time",),
    "screen_results": ("time_us AS time",),
}
# The string columns crash_columns returns dictionary-encoded (besides the population key);
# those in _DETAILS only when asked for.
_CODED = ("host", "cpu_model", "microcode", "kernel", "service", "version", "exe", "cpus_allowed")
_DETAILS = ("exe",)
# The per-CPU test's facts, returned only when some crash has them.
_OPTIONAL_FACTS = ("host_cpus", "cpu_core", "cpus_allowed")
# Rows per query when reading crash columns: DuckDB materializes a query's whole result before
# NumPy gets it, so one query for ten million crashes held them twice (about 1.4 GB more).
FETCH_ROWS = 1 << 20


_LOCK_PID = re.compile(r"\(PID (\d+)\)")


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def translate_error(exc: BaseException, location: str, action: str) -> StoreError:
    """A :class:`StoreError` for a DuckDB (or OS) error, saying what to do about it."""
    message = str(exc)
    lowered = message.lower()
    if "could not set lock" in lowered or "conflicting lock" in lowered:
        pid = _LOCK_PID.search(message)
        holder = f"process {pid.group(1)}" if pid else "another process"
        return StoreError(
            f"{location}: the store is in use by {holder}; corecensus allows one writer per "
            "store file. Stop the other corecensus process, or use a different store path."
        )
    if (
        "no space left" in lowered
        or "disk full" in lowered
        or (isinstance(exc, OSError) and exc.errno == errno.ENOSPC)
    ):
        return StoreError(
            f"{location}: disk full while {action}; free space and run again (work committed "
            "before this point is kept)."
        )
    if (
        "not a valid duckdb database" in lowered
        or "corrupt" in lowered
        or "checksum" in lowered
        or "could not read enough bytes" in lowered
        or "magic bytes" in lowered
    ):
        return StoreError(
            f"{location}: not a corecensus store, or the file is corrupt ({message}). Move it "
            "aside and re-ingest, or restore it from a Parquet export."
        )
    if "permission denied" in lowered:
        return StoreError(f"{location}: permission denied while {action}.")
    if "version number" in lowered or "storage version" in lowered:
        return StoreError(
            f"{location}: written by an incompatible DuckDB version ({message}); open it with "
            "the corecensus that wrote it and export to Parquet."
        )
    return StoreError(f"{location}: DuckDB error while {action}: {message}")


class DuckDBStore:
    """:class:`corecensus.store.Store` on a DuckDB file (default ``./corecensus.duckdb``), or
    in memory with ``path=":memory:"``.

    ``clock`` gives the ingest time in seconds since the epoch. Calls are serialized with a lock, so one store may be shared by
    threads; it is the one writer of its file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = DEFAULT_STORE_PATH,
        *,
        read_only: bool = False,
        clock: Callable[[], float] = time.time,
        threads: int | None = None,
        row_group_rows: int | None = None,
    ) -> None:
        raw = os.fspath(path)
        self._location = raw if raw == ":memory:" else str(Path(raw))
        self._read_only = read_only
        self._clock = clock
        self._lock = threading.RLock()
        # Held by a checkpoint, and by a snapshot from its checkpoint to the end of its copy of
        # the file (write_snapshot), so re-entered by the checkpoint the snapshot makes.
        self._checkpoint_lock = threading.RLock()
        # Set by defer_checkpoints: the file changes only in checkpoint().
        self._checkpoints_deferred = False
        self._file_fd: int | None = None  # see _file_descriptor
        self._con: duckdb.DuckDBPyConnection | None = None
        # The stored crashes' ids, read by the first add_crashes (known_ids.py).
        self._known: KnownCrashIds | None = None
        # The file's schema: SCHEMA_VERSION once created or migrated; an older one only when
        # read as it is (read-only, READ_AS_IS_SINCE).
        self._schema_version = SCHEMA_VERSION
        if raw != ":memory:":
            parent = Path(raw).parent
            if not parent.is_dir():
                raise StoreError(f"{self._location}: directory {parent} does not exist")
            try:
                require_regular(raw)  # DuckDB would block forever opening a FIFO
            except FileNotFoundError:
                pass  # a new store
            except OSError as exc:
                raise StoreError(f"{self._location}: {exc.strerror or exc}") from exc
        # Set when a reader found the file held by a writer and opened its snapshot instead.
        self.snapshot: str | None = None
        try:
            if row_group_rows is not None and not read_only and raw != ":memory:":
                con = _attached(raw, row_group_rows)
            else:
                con = duckdb.connect(raw, read_only=read_only)
        except duckdb.Error as exc:
            fallback = self._snapshot_instead(raw, exc) if read_only else None
            if fallback is None:
                raise translate_error(exc, self._location, "opening the store") from exc
            con = fallback
        except OSError as exc:
            raise translate_error(exc, self._location, "opening the store") from exc
        if threads is not None:
            # DuckDB's own threads for this store (its default: one per CPU), for a process
            # whose store work is background work beside other CPU-bound work (the collector).
            con.execute(f"SET threads = {int(threads)}")
        self._con = con
        try:
            self._ensure_schema()
        except BaseException:
            self.close()
            raise

    def _snapshot_instead(self, raw: str, exc: duckdb.Error) -> duckdb.DuckDBPyConnection | None:
        """A read-only connection to the writer's snapshot when ``exc`` says another process
        holds the file (DuckDB lets no second process open a file being written, not even to
        read): ``analyze`` may run while ``ingest`` writes (issue 10)."""
        lowered = str(exc).lower()
        snap = snapshot_path(raw)
        if not ("lock" in lowered and snap.is_file()):
            return None
        try:
            con = duckdb.connect(str(snap), read_only=True)
        except duckdb.Error:
            return None
        self.snapshot = str(snap)
        return con

    def write_snapshot(self) -> None:
        """Copy what is committed to ``<store>.snapshot`` for readers while this process holds
        the file: into a temporary file, then renamed over the last one (readers that have
        the old one open keep reading it). No-op for an in-memory or read-only store.

        A store whose checkpoints are deferred (:meth:`defer_checkpoints`, the collector's)
        changes its file only in :meth:`checkpoint`: the snapshot checkpoints, then copies the
        file as it is (the kernel's copy, no DuckDB work) while no checkpoint may start, and
        writes go on into the write-ahead log meanwhile. DuckDB's own copy (``COPY FROM
        DATABASE``, below) decodes and encodes every value again: 5.8 s of CPU for 100,000
        crash rows (980 MB of record JSON, 8.4 MB in the file), where copying the file took
        no measurable time -- a cost that grew with the store, without bound, in a process
        that runs for months (/tmp measurement, bench's record, DuckDB 2.0.1).

        Otherwise the copy runs on a connection of its own (a DuckDB cursor) without the
        store's lock: it reads one committed state (its transaction's) while writes go on, and
        may be called from another thread while this one commits -- a copy of a large store
        takes seconds, and the collector's writer held every commit behind it for that long
        (2.1 s measured at half the collector's capacity on a 100 MB store). The caller must
        not close the store until it returns."""
        if self._location == ":memory:" or self._read_only:
            return
        target = snapshot_path(self._location)
        tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
        tmp.unlink(missing_ok=True)
        if self._checkpoints_deferred:
            self._copy_checkpointed(tmp)
        else:
            self._copy_database(tmp)
        os.replace(tmp, target)

    def _copy_checkpointed(self, tmp: Path) -> None:
        """The file as the checkpoint this makes left it, copied to ``tmp``. DuckDB writes a
        checkpoint's blocks before the header that names them and frees the old ones only
        after, so while no other checkpoint runs the copy reads one whole state; a large
        insert may write new blocks of its own meanwhile (DuckDB's optimistic writes), but
        only into blocks that state does not use."""
        with self._checkpoint_lock:
            self.checkpoint()
            with self._guard("writing a snapshot"):
                source = self._file_descriptor()
                size = os.fstat(source).st_size
                with open(tmp, "wb") as out:
                    _copy_range(source, out.fileno(), size)

    def _file_descriptor(self) -> int:
        """A descriptor of the store's file, opened once and closed only after DuckDB's: on
        Linux, closing *any* descriptor of a file drops every POSIX lock the process holds on
        it (fcntl(2), "record locks are ... released when any file descriptor referring to the
        file is closed"), DuckDB's writer lock among them. A snapshot that opened and closed
        the file (shutil.copyfile) let another process open the store while this one wrote
        it (found by tests/store/test_store_snapshot.py)."""
        if self._file_fd is None:
            self._file_fd = os.open(self._location, os.O_RDONLY | os.O_CLOEXEC)
        return self._file_fd

    def _copy_database(self, tmp: Path) -> None:
        with self._connection("writing a snapshot") as con:
            cursor = con.cursor()
        with self._guard("writing a snapshot"), contextlib.closing(cursor):
            row = cursor.execute("SELECT current_database()").fetchone()
            name = str(row[0]) if row else "main"
            cursor.execute(f"ATTACH {_quote_literal(str(tmp))} AS corecensus_snapshot")
            try:
                cursor.execute(f'COPY FROM DATABASE "{name}" TO corecensus_snapshot')
            finally:
                cursor.execute("DETACH corecensus_snapshot")

    def defer_checkpoints(self) -> None:
        """From now on, move the write-ahead log into the file only in :meth:`checkpoint`.

        DuckDB checkpoints inside the COMMIT that takes its log past ``checkpoint_threshold``
        (16 MB by default), and that COMMIT returns only when the checkpoint is done: hundreds
        of milliseconds for a collector's 16 MB of crash rows, while every commit behind it
        waits (DuckDB 2.0 lets commits go on during a checkpoint, but not appends to the table
        it is writing: duckdb/duckdb#20052, #25988). A single writer that can tell when it is
        idle checkpoints then instead (the collector's writer, after answering a group).

        Such a writer lives long and commits often: it reads the stored crashes' ids now
        (:mod:`known_ids`) rather than in its first
        commit, which the first requests would wait for."""
        with self._connection("deferring checkpoints") as con:
            con.execute("SET checkpoint_threshold = '1000 GB'")
            self._checkpoints_deferred = True
            if not self._read_only:
                self._known_ids(con)

    def log_bytes(self) -> int:
        """Bytes in the write-ahead log (committed, not yet checkpointed into the file)."""
        if self._location == ":memory:":
            return 0
        try:
            return os.stat(f"{self._location}.wal").st_size
        except FileNotFoundError:
            return 0

    def checkpoint(self) -> None:
        """Move what the write-ahead log holds into the file (DuckDB's ``CHECKPOINT``)."""
        if self._read_only or self._location == ":memory:":
            return
        with self._checkpoint_lock, self._connection("checkpointing") as con:
            con.execute("CHECKPOINT")

    # -- plumbing -------------------------------------------------------------------------

    @property
    def location(self) -> str:
        return self._location

    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        try:
            yield
        except duckdb.Error as exc:
            raise translate_error(exc, self._location, action) from exc
        except OSError as exc:
            raise translate_error(exc, self._location, action) from exc

    @contextlib.contextmanager
    def _connection(self, action: str) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock, self._guard(action):
            if self._con is None:
                raise StoreError(f"{self._location}: the store is closed")
            yield self._con

    @contextlib.contextmanager
    def _writing(self, action: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection, to write with; each statement is a transaction of its own (one
        statement's BEGIN and COMMIT cost about 1 ms of CPU that a single INSERT does without)."""
        with self._connection(action) as con:
            if self._read_only:
                raise StoreError(f"{self._location}: opened read-only; cannot {action}")
            yield con

    @contextlib.contextmanager
    def _transaction(self, action: str) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._writing(action) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    @staticmethod
    @contextlib.contextmanager
    def _snapshot(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
        """Several reads that see one state of the database (a transaction, read-only too)."""
        con.execute("BEGIN TRANSACTION")
        try:
            yield
        finally:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")

    def _ensure_schema(self) -> None:
        with self._connection("checking the schema") as con:
            tables = {
                row[0]
                for row in con.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'main' AND table_catalog = current_database()"
                ).fetchall()
            }
            if not tables:
                if self._read_only:
                    raise StoreError(f"{self._location}: empty database opened read-only")
                con.execute("BEGIN TRANSACTION")
                for name, ddl in TABLE_DDL.items():
                    con.execute(f"CREATE TABLE {name} ({ddl})")
                con.execute(
                    "INSERT INTO corecensus_meta VALUES ('schema_version', ?)",
                    [str(SCHEMA_VERSION)],
                )
                con.execute("COMMIT")
                return
            if "corecensus_meta" not in tables:
                raise StoreError(
                    f"{self._location}: a DuckDB database but not a corecensus store "
                    f"(tables: {', '.join(sorted(tables))})"
                )
            row = con.execute(
                "SELECT value FROM corecensus_meta WHERE key = 'schema_version'"
            ).fetchone()
            version = int(row[0]) if row and str(row[0]).isdigit() else None
            if version is None:
                raise StoreError(f"{self._location}: store has no valid schema_version")
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self._location}: store schema version {version} is newer than this "
                    f"corecensus understands ({SCHEMA_VERSION}); upgrade corecensus."
                )
            if version < SCHEMA_VERSION:
                self._migrate(con, version)

    def _migrate(self, con: duckdb.DuckDBPyConnection, version: int) -> None:
        if self._read_only and version >= READ_AS_IS_SINCE:
            # Only what a writer uses is missing (schema 5 added the collector's
            # journal_applied): a reader reads the file as it is, so `analyze --db` works on a
            # store an older corecensus wrote, without a command that writes it first.
            self._schema_version = version
            return
        if self._read_only:
            raise StoreError(
                f"{self._location}: store schema version {version} needs migrating to "
                f"{SCHEMA_VERSION}; open it read-write once."
            )
        missing = [v for v in range(version, SCHEMA_VERSION) if v not in MIGRATIONS]
        if missing:
            raise StoreError(
                f"{self._location}: no migration from store schema version {missing[0]} "
                f"(this corecensus writes version {SCHEMA_VERSION})"
            )
        con.execute("BEGIN TRANSACTION")
        for step in range(version, SCHEMA_VERSION):
            MIGRATIONS[step](con)
        con.execute(
            "UPDATE corecensus_meta SET value = ? WHERE key = 'schema_version'",
            [str(SCHEMA_VERSION)],
        )
        con.execute("COMMIT")

    def _insert(
        self,
        con: duckdb.DuckDBPyConnection,
        table: Table[R],
        rows: Sequence[R],
        *,
        or_ignore: bool = True,
        constants: Mapping[str, Any] | None = None,
    ) -> int:
        """INSERT (OR IGNORE, unless the caller knows no row is stored yet) ``rows`` in one
        statement; returns how many were new. A column in ``constants`` gets that value in every
        row (:meth:`Table.column_lists`).

        The rows cross into DuckDB as one Arrow table, column by column: passing Python lists
        as parameters costs DuckDB a conversion per value (about 0.1 ms of CPU per 10 KB crash
        row, measured in bench/collector_bench.py's set-up; Arrow about a third of that). Each
        column's Arrow type is given: left to infer it, ``pa.array`` tries to import
        ``dateutil`` on every call, a failed import that searches the whole ``sys.path`` each
        time (a third of a 20-row insert's CPU). ``OR IGNORE`` costs DuckDB a conflict check
        per statement (measured: 8 ms of CPU for 20 crash rows, twice the plain insert)."""
        if not rows:
            return 0
        import pyarrow as pa  # heavy: loaded by the first write, not by opening a store

        try:
            columns = {
                c.name: _arrow_array(pa, c.base_type, column)
                for c, column in zip(
                    table.columns, table.column_lists(rows, constants), strict=True
                )
            }
        except (pa.ArrowException, OverflowError, TypeError) as exc:
            raise StoreError(f"{self._location}: a {table.name} row does not fit: {exc}") from exc
        names = ", ".join(table.names)
        selects = ", ".join(f"{c.name}::{c.base_type}" for c in table.columns)
        verb = "INSERT OR IGNORE" if or_ignore else "INSERT"
        # DuckDB reads the Arrow table from this local variable by its name (its replacement
        # scan): registering it as a view and dropping the view after cost 1.5 ms of CPU per
        # insert, a tenth of a 20-crash group commit.
        corecensus_insert = pa.table(columns)  # noqa: F841 (read by the SQL below)
        result = con.execute(
            f"{verb} INTO {table.name} ({names}) SELECT {selects} FROM corecensus_insert"
        ).fetchone()
        return int(result[0]) if result else 0

    def add(self, table: Table[R], rows: Iterable[R]) -> AddResult:
        if table is CRASHES:
            self._known = None  # read again by the next add_crashes
        total = AddResult()
        for batch in batched(rows, BATCH_ROWS):
            with self._writing(f"adding {table.name}") as con:
                new = self._insert(con, table, batch)  # one statement: its own transaction
            total += AddResult(new, len(batch) - new)
        return total

    def rows(self, table: Table[R]) -> Iterator[R]:
        for values in self._select(
            f"SELECT {', '.join(table.names)} FROM {table.name} ORDER BY {', '.join(table.order)}",
            action=f"reading {table.name}",
        ):
            yield table.row(values)

    def _select(self, sql: str, params: Sequence[Any] = (), action: str = "reading") -> list[Any]:
        with self._connection(action) as con:
            return con.execute(sql, list(params)).fetchall()

    # -- crashes --------------------------------------------------------------------------

    def add_crashes(self, rows: Iterable[CrashRow]) -> AddResult:
        total = AddResult()
        for batch in batched(rows, BATCH_ROWS):
            unique: dict[str, CrashRow] = {}
            for row in batch:
                unique.setdefault(row.core_id, row)
            try:
                new = self._add_unique_crashes(unique)
            except _KnownIdsBehind:
                # A crash the known ids said was new is stored (written by another connection
                # to this file, or a commit that failed after all): read them again, and retry.
                self._known = None
                new = self._add_unique_crashes(unique)
            total += AddResult(new, len(batch) - new)
        return total

    def add_uploads(
        self,
        crashes: Sequence[CrashRow] | EncodedCrashRows,
        heartbeats: Sequence[Heartbeat],
        screens: Sequence[ScreenResultRow],
        *,
        journal: tuple[str, int, int] | None = None,
    ) -> tuple[AddResult, AddResult, AddResult]:
        try:
            return self._add_uploads(crashes, heartbeats, screens, journal)
        except _KnownIdsBehind:
            self._known = None  # (see add_crashes) read them again, and retry
            return self._add_uploads(crashes, heartbeats, screens, journal)

    def _add_uploads(
        self,
        crashes: Sequence[CrashRow] | EncodedCrashRows,
        heartbeats: Sequence[Heartbeat],
        screens: Sequence[ScreenResultRow],
        journal: tuple[str, int, int] | None,
    ) -> tuple[AddResult, AddResult, AddResult]:
        # (rows of EncodedCrashRows have a CrashRow's attributes; _insert takes their text)
        unique: dict[str, CrashRow] = {}
        for row in crashes:
            unique.setdefault(row.core_id, row)
        digests = [crash_id_digest(core_id) for core_id in unique]
        read_now = self._known is None
        with self._transaction("adding uploads") as con:
            known = self._known_ids(con)
            maybe = [cid for cid, m in zip(unique, known.may_hold(digests), strict=True) if m]
            existing: set[str] = set()
            for batch in batched(maybe, BATCH_ROWS):
                existing.update(
                    found[0]
                    for found in con.execute(
                        "SELECT core_id FROM crashes WHERE core_id IN (SELECT unnest(?::VARCHAR[]))",
                        [batch],
                    ).fetchall()
                )
            fresh = [r for cid, r in unique.items() if cid not in existing]
            now_us = int(self._clock() * 1_000_000)
            new_crashes = sum(
                self._insert_new(con, batch, now_us, read_now)
                for batch in batched(fresh, BATCH_ROWS)
            )
            beats = self._insert_distinct(con, HEARTBEATS, heartbeats)
            screened = self._insert_distinct(con, SCREEN_RESULTS, screens)
            if journal is not None:
                con.execute(
                    "INSERT OR REPLACE INTO journal_applied VALUES (?, ?, ?)", list(journal)
                )
        # Committed: from now on these are known (not before: a failed commit stored nothing).
        known.add(d for d, cid in zip(digests, unique, strict=True) if cid not in existing)
        return AddResult(new_crashes, len(crashes) - new_crashes), beats, screened

    def _insert_distinct(
        self, con: duckdb.DuckDBPyConnection, table: Table[R], rows: Sequence[R]
    ) -> AddResult:
        """INSERT OR IGNORE ``rows`` with one copy of each key (OR IGNORE is for the rows
        stored before, not for a key twice in one statement)."""
        distinct = list({table.key_of(r): r for r in reversed(rows)}.values())
        new = 0
        for batch in batched(distinct, BATCH_ROWS):
            new += self._insert(con, table, batch)
        return AddResult(new, len(rows) - new)

    def journal_applied(self, journal: str) -> tuple[int, int] | None:
        if self._schema_version < 5:
            return None  # (read-only, an older store: no journal was ever applied to it)
        rows = self._select(
            "SELECT segment, end_offset FROM journal_applied WHERE journal = ?",
            [journal],
            "reading how far the journal is applied",
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else None

    def _add_unique_crashes(self, unique: Mapping[str, CrashRow]) -> int:
        """Insert the crashes of ``unique`` not stored yet, in one transaction; returns how
        many. Only the ids the known ids may hold are looked up (:mod:`known_ids`)."""
        digests = [crash_id_digest(core_id) for core_id in unique]
        read_now = self._known is None  # then they are exact: a refusal has another cause
        with self._writing("adding crashes") as con:
            known = self._known_ids(con)
            maybe = [cid for cid, m in zip(unique, known.may_hold(digests), strict=True) if m]
            now_us = int(self._clock() * 1_000_000)
            if not maybe:  # all certainly new: one INSERT, its own transaction
                existing: set[str] = set()
                new = self._insert_new(con, list(unique.values()), now_us, read_now)
            else:
                with self._transaction("adding crashes"):
                    # Looked up in the transaction that inserts, under the store's lock: what
                    # it finds missing is still missing at the INSERT, which so needs no OR
                    # IGNORE.
                    existing = {
                        found[0]
                        for found in con.execute(
                            "SELECT core_id FROM crashes "
                            "WHERE core_id IN (SELECT unnest(?::VARCHAR[]))",
                            [maybe],
                        ).fetchall()
                    }
                    fresh = [r for cid, r in unique.items() if cid not in existing]
                    new = self._insert_new(con, fresh, now_us, read_now)
        # Committed: from now on these are known (not before: a failed commit stored nothing).
        known.add(d for d, cid in zip(digests, unique, strict=True) if cid not in existing)
        return new

    def _insert_new(
        self, con: duckdb.DuckDBPyConnection, rows: Sequence[CrashRow], now_us: int, exact: bool
    ) -> int:
        """INSERT crashes believed new; the primary key's refusal is :class:`_KnownIdsBehind`
        unless the known ids were ``exact`` (read in this call)."""
        try:
            return self._insert(
                con, CRASHES, rows, or_ignore=False, constants={"ingested_us": now_us}
            )
        except duckdb.ConstraintException as exc:
            if exact:
                raise
            raise _KnownIdsBehind from exc

    def _known_ids(self, con: duckdb.DuckDBPyConnection) -> KnownCrashIds:
        """The digests of the stored crashes, read once (this process holds the file: nothing
        else writes it)."""
        if self._known is None:
            chunks = [np.empty(0, dtype=np.int64)]
            span = con.execute("SELECT min(rowid), max(rowid) FROM crashes").fetchone()
            first, last = span if span is not None else (None, None)
            # (in chunks: ten million ids as Python strings at once would take a gigabyte)
            for lo in range(
                0 if first is None else int(first), 0 if last is None else int(last) + 1, FETCH_ROWS
            ):
                ids = con.execute(
                    "SELECT core_id FROM crashes WHERE rowid >= ? AND rowid < ?",
                    [lo, lo + FETCH_ROWS],
                ).fetchnumpy()["core_id"]
                chunks.append(np.fromiter(map(crash_id_digest, ids), np.int64, len(ids)))
            self._known = KnownCrashIds(np.concatenate(chunks))
        return self._known

    def iter_crashes(self, *, signature_version_below: int | None = None) -> Iterator[CrashRecord]:
        for outcome in self.iter_crash_outcomes(signature_version_below=signature_version_below):
            yield decoded_record(outcome, self._location)

    def iter_crash_outcomes(
        self, *, signature_version_below: int | None = None
    ) -> Iterator[CrashRecord | DamagedCrash]:
        last = ""
        where = "core_id > ?"
        extra: list[Any] = []
        if signature_version_below is not None:
            where += " AND sig_version < ?"
            extra.append(signature_version_below)
        while True:
            page = self._select(
                f"SELECT core_id, record_json FROM crashes WHERE {where} ORDER BY core_id LIMIT ?",
                [last, *extra, BATCH_ROWS],
                "reading crashes",
            )
            if not page:
                return
            for core_id, record_json in page:
                yield decode_crash(core_id, record_json)
            last = page[-1][0]

    def _decode(self, core_id: str, record_json: str) -> CrashRecord:
        return decoded_record(decode_crash(core_id, record_json), self._location)

    def get_crash(self, core_id: str) -> CrashRecord | None:
        rows = self._select(
            "SELECT record_json FROM crashes WHERE core_id = ?", [core_id], "reading a crash"
        )
        return self._decode(core_id, rows[0][0]) if rows else None

    def get_crashes(self, core_ids: Iterable[str]) -> dict[str, CrashRecord]:
        out: dict[str, CrashRecord] = {}
        for batch in batched(dict.fromkeys(core_ids), BATCH_ROWS):
            for core_id, record_json in self._select(
                "SELECT core_id, record_json FROM crashes "
                "WHERE core_id IN (SELECT unnest(?::VARCHAR[]))",
                [batch],
                "reading crashes",
            ):
                out[core_id] = self._decode(core_id, record_json)
        return out

    def replace_crashes(self, rows: Iterable[CrashRow], remove: Iterable[str] = ()) -> int:
        self._known = None  # read again by the next add_crashes (reprocessing is rare)
        written = 0
        gone = list(dict.fromkeys(remove))
        for batch in batched(rows, BATCH_ROWS):
            unique = {r.core_id: r for r in batch}  # the last of one id wins
            now_us = int(self._clock() * 1_000_000)
            fresh = [dataclasses.replace(r, ingested_us=now_us) for r in unique.values()]
            with self._transaction("replacing crashes") as con:
                con.execute(
                    "DELETE FROM crashes WHERE core_id IN (SELECT unnest(?::VARCHAR[]))",
                    [[*unique, *gone]],
                )
                written += self._insert(con, CRASHES, fresh)
            gone = []
        if gone:
            with self._transaction("removing crashes") as con:
                con.execute(
                    "DELETE FROM crashes WHERE core_id IN (SELECT unnest(?::VARCHAR[]))", [gone]
                )
        return written

    def count_crashes(self) -> int:
        return int(self._select("SELECT count(*) FROM crashes")[0][0])

    def update_signatures(self, updates: Iterable[tuple[str, SignatureColumns]]) -> int:
        types = {c.name: c.base_type for c in CRASHES.columns}
        changed = 0
        for batch in batched(updates, BATCH_ROWS):
            latest = {core_id: sig for core_id, sig in batch}
            sets = ", ".join(f"{name} = u.{name}" for name in SIGNATURE_FIELDS)
            unnests = ", ".join(
                f"unnest(${i}::{types[name]}[]) AS {name}"
                for i, name in enumerate(SIGNATURE_FIELDS, 2)
            )
            params: list[Any] = [list(latest)]
            params += [
                [_sql_value(getattr(v, name)) for v in latest.values()] for name in SIGNATURE_FIELDS
            ]
            with self._transaction("updating signatures") as con:
                result = con.execute(
                    f"UPDATE crashes SET {sets} FROM (SELECT unnest($1::VARCHAR[]) AS core_id, "
                    f"{unnests}) AS u WHERE crashes.core_id = u.core_id",
                    params,
                ).fetchone()
            changed += int(result[0]) if result else 0
        return changed

    def crash_columns(self, level: str = "symbolic", *, details: bool = False) -> CrashColumns:
        pop = population_column(level)
        coded = [c for c in _CODED if details or c not in _DETAILS] + ["population"]
        source = {c: c for c in coded} | {"population": pop}
        with (
            self._connection("reading crash columns") as con,
            _evicting(con),
            self._snapshot(con),
        ):
            stats = con.execute(
                "SELECT count(*), min(rowid), max(rowid), "
                + ", ".join(f"count({c})" for c in _OPTIONAL_FACTS)
                + " FROM crashes"
            ).fetchone()
            assert stats is not None  # an aggregate has one row
            count, first, last, *known = stats
            # DuckDB does the dictionary encoding: each string column's distinct values, sorted
            # (binary collation: the order of Python's sorted()), numbered, and joined back, so
            # only int32 codes and the small vocabularies cross into Python.
            vocab = {
                c: tuple(
                    r[0]
                    for r in con.execute(
                        f"SELECT DISTINCT {source[c]} FROM crashes WHERE {source[c]} <> '' "
                        "ORDER BY 1"
                    ).fetchall()
                )
                for c in coded
            }
            facts = [f for f, k in zip(_OPTIONAL_FACTS, known, strict=True) if k]
            if facts and "cpus_allowed" not in facts:
                coded.remove("cpus_allowed")
            ints = {"cpu": "cpu"} | {f: f for f in facts if f != "cpus_allowed"}
            if details:
                ints["signal"] = "signal"
            cols = _fetch_columns(con, int(count), first, last, source, coded, ints, vocab)
            if len(cols["row"]) != count:
                raise StoreError(f"{self._location}: the crashes table changed while read")
            order = _time_order(con, cols["row"], cols["time_us"], cols["time_known"])
        out = {name: array[order] for name, array in cols.items()}
        del cols

        def category(c: str) -> CodedColumn | None:
            return CodedColumn(out[c], vocab[c]) if c in out else None

        return CrashColumns(
            level=str(level),
            row=out["row"],
            host=CodedColumn(out["host"], vocab["host"]),
            time_us=out["time_us"],
            time_known=out["time_known"],
            cpu=out["cpu"],
            cpu_model=CodedColumn(out["cpu_model"], vocab["cpu_model"]),
            microcode=CodedColumn(out["microcode"], vocab["microcode"]),
            kernel=CodedColumn(out["kernel"], vocab["kernel"]),
            service=CodedColumn(out["service"], vocab["service"]),
            version=CodedColumn(out["version"], vocab["version"]),
            population=CodedColumn(out["population"], vocab["population"]),
            anomaly_mask=out["anomaly_mask"],
            host_cpus=out.get("host_cpus"),
            cpu_core=out.get("cpu_core"),
            cpus_allowed=category("cpus_allowed"),
            exe=category("exe"),
            signal=out.get("signal"),
        )

    def core_ids(self, rows: Iterable[int]) -> list[str]:
        return self._at(rows, "core_id", "reading crash ids")

    def signatures(self, rows: Iterable[int]) -> list[str]:
        # (the first crash of each population from the time order the analysis already has:
        # a GROUP BY with arg_min over every crash took 0.2-0.3 s at a million crashes)
        return self._at(rows, "sig_symbolic", "reading population signatures")

    def _at(self, rows: Iterable[int], column: str, doing: str) -> list[str]:
        """``column`` of each crash of :meth:`crash_columns`'s ``row`` handles, in order."""
        wanted = [int(r) for r in rows]
        if not wanted:
            return []
        # (the column read for them stays cached, 170 MB of core_id at ten million crashes,
        # while the analysis that asked goes on: given back)
        with self._connection(doing) as con, _evicting(con):
            found = dict(
                con.execute(
                    f"SELECT rowid, {column} FROM crashes WHERE rowid IN (SELECT unnest(?))",
                    [wanted],
                ).fetchall()
            )
        try:
            return [found[r] for r in wanted]
        except KeyError as exc:
            raise StoreError(f"{self.location}: no crash at row {exc.args[0]}") from None

    # -- export, lifecycle ----------------------------------------------------------------

    def export_parquet(self, directory: str | os.PathLike[str]) -> dict[str, Path]:
        """Write every table to ``directory/<table>.parquet`` (each file written to a temporary
        name and renamed into place); returns table -> path."""
        out = Path(directory)
        with self._guard("creating the export directory"):
            out.mkdir(parents=True, exist_ok=True)
        written: dict[str, Path] = {}
        for table in TABLES:
            final = out / f"{table.name}.parquet"
            tmp = out / f".{table.name}.parquet.tmp"
            times = ", ".join(
                f"make_timestamp({expr.split()[0]}) AS {expr.split()[-1]}"
                for expr in _EXPORT_TIMES[table.name]
            )
            query = f"SELECT *, {times} FROM {table.name} ORDER BY {', '.join(table.order)}"
            with self._connection(f"exporting {table.name} to Parquet") as con:
                con.execute(f"COPY ({query}) TO {_quote_literal(str(tmp))} (FORMAT parquet)")
                os.replace(tmp, final)
            written[table.name] = final
        return written

    def close(self) -> None:
        with self._lock:
            con, self._con = self._con, None
            try:
                if con is not None:
                    with self._guard("closing the store"):
                        con.close()
            finally:
                # (after DuckDB's own: closing this one drops the process's locks on the file)
                fd, self._file_fd = self._file_fd, None
                if fd is not None:
                    os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _attached(path: str, row_group_rows: int) -> duckdb.DuckDBPyConnection:
    """A connection whose database is the file ``path``, attached with rows groups of
    ``row_group_rows`` (a multiple of 2048, DuckDB's vector size; DuckDB's default is
    122,880). DuckDB sets the size only when it attaches a file, not when it opens one.

    A transaction that inserts at least a row group's rows into a table has DuckDB write them
    into the file as it inserts, compressed, and its commit merely adds the row groups to the
    table, with their blocks' places in the write-ahead log; otherwise the commit copies every
    row into the table's last row group, writes the rows themselves into the log, and the
    next checkpoint compresses and writes them again (rewriting that row group's earlier rows
    too). The collector's loads are 2,000-3,000 crash rows at capacity: with row groups of
    2048, load, commit and checkpoints took 0.080 against 0.109 ms of CPU per 10 KB crash
    (100,000 rows in loads of 2,500, in-process; README, the writer process's round)."""
    if row_group_rows <= 0 or row_group_rows % 2048:
        raise StoreError(f"row groups of {row_group_rows} rows: must be a multiple of 2048")
    con = duckdb.connect(":memory:")
    try:
        con.execute(
            f"ATTACH {_quote_literal(path)} AS corecensus_store "
            f"(ROW_GROUP_SIZE {int(row_group_rows)})"
        )
        con.execute("USE corecensus_store")
    except BaseException:
        con.close()
        raise
    return con


class _KnownIdsBehind(Exception):
    """The primary key refused a crash the known ids said was new."""


def _arrow_type(pa: Any, base_type: str) -> Any:
    """The Arrow type a column of ``base_type`` crosses in as: integers as 64 bits (the INSERT's
    cast to the column's own type checks the range, as it did for Python values)."""
    if base_type.endswith("[]"):
        return pa.list_(_arrow_type(pa, base_type[:-2]))
    if base_type == "VARCHAR":
        return pa.string()
    if base_type == "BOOLEAN":
        return pa.bool_()
    if base_type in _INTEGER_TYPES:
        return pa.int64()
    raise StoreError(f"no Arrow type for column type {base_type}")


_INTEGER_TYPES = frozenset({"BIGINT", "INTEGER", "SMALLINT", "USMALLINT", "UINTEGER", "TINYINT"})


def _arrow_array(pa: Any, base_type: str, values: list[Any]) -> Any:
    """``values`` as the Arrow array of a ``base_type`` column. A text column's values may be
    the msgpack encoding of the text (:class:`msgspec.Raw`, :class:`EncodedCrashRows`' record
    JSON): their bytes go into the array's buffer as they are, one copy."""
    if base_type == "VARCHAR" and values and any(type(v) is msgspec.Raw for v in values):
        return _encoded_texts(pa, values)
    return pa.array(values, type=_arrow_type(pa, base_type))


def _encoded_texts(pa: Any, values: list[Any]) -> Any:
    """A string array of msgpack-encoded texts (a plain ``str`` among them is encoded here).
    msgpack's str is a head (its length, 1-5 bytes) and the UTF-8 bytes; anything else is not
    a text and refused (DuckDB checks the UTF-8 as it reads the array)."""
    parts: list[memoryview] = []
    sizes = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        view = memoryview(msgspec.msgpack.encode(value) if type(value) is str else value)
        first = view[0] if view else 0xC1  # (0xc1: a byte msgpack never uses)
        head = _MSGPACK_STR_HEAD.get(first & 0xE0 if first < 0xC0 else first)
        if head is None:
            raise StoreError(
                f"a text column's value is not a msgpack str (head {bytes(view[:1])!r})"
            )
        parts.append(view[head:])
        sizes[i] = len(view) - head
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    data = b"".join(parts)
    return pa.LargeStringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(data))


# The length of a msgpack str's head, by its first byte (fixstr: 0xa0-0xbf, masked to 0xa0;
# str 8, 16, 32).
_MSGPACK_STR_HEAD = {0xA0: 1, 0xD9: 2, 0xDA: 3, 0xDB: 5}


def _copy_range(source: int, target: int, size: int) -> None:
    """``size`` bytes from the start of descriptor ``source`` to ``target``: by the kernel
    (copy_file_range(2), no copy through this process), else read and written here where the
    file system does not offer it."""
    offset = 0
    try:
        while offset < size:
            moved = os.copy_file_range(source, target, size - offset, offset_src=offset)
            if moved == 0:
                return  # (the file ended early: it is what it is)
            offset += moved
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    while offset < size:
        chunk = memoryview(os.pread(source, min(size - offset, 1 << 20), offset))
        if not chunk:
            return
        offset += len(chunk)
        while chunk:
            chunk = chunk[os.write(target, chunk) :]


def _sql_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@contextlib.contextmanager
def _evicting(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Give back, after a read of every crash, the memory DuckDB kept from it: the blocks it
    read stay cached and its allocator keeps what the query used until memory runs short, and
    the analysis that follows needs that memory more (300 MB at ten million crashes). Lowering
    the memory limit for a moment evicts them; the store never sets the limit, so it goes back
    to DuckDB's default."""
    try:
        yield
    finally:
        with contextlib.suppress(duckdb.Error):  # never hides what the read raised
            con.execute("SET memory_limit = '16MB'")
            con.execute("RESET memory_limit")


def _fetch_columns(
    con: duckdb.DuckDBPyConnection,
    count: int,
    first: int | None,
    last: int | None,
    source: Mapping[str, str],
    coded: Sequence[str],
    ints: Mapping[str, str],
    vocab: Mapping[str, tuple[str, ...]],
) -> dict[str, npt.NDArray[Any]]:
    """The crashes' columns in storage order, :data:`FETCH_ROWS` rowids at a time, into arrays
    allocated once: ``row`` (rowid), ``time_us`` (0 unknown) and ``time_known``,
    ``anomaly_mask``, each of ``ints`` as ``int32`` (-1 unknown) and each of ``coded`` as
    ``int32`` codes into ``vocab`` (-1 unknown)."""
    dtypes: dict[str, Any] = {"row": np.int64, "time_us": np.int64, "time_known": np.bool_}
    dtypes |= {"anomaly_mask": np.uint16} | dict.fromkeys([*ints, *coded], np.int32)
    out = {name: np.empty(count, dtype=dtype) for name, dtype in dtypes.items()}
    if not count or first is None or last is None:
        return out
    # (a transaction: the count and every chunk see one state of the table)
    # each vocabulary joined back as (name, code) from a list parameter
    lookups = " ".join(
        f"LEFT JOIN (SELECT unnest(${i}::VARCHAR[]) AS name, "
        f"(generate_subscripts(${i}::VARCHAR[], 1) - 1)::INTEGER AS code) v_{c} "
        f"ON c.{source[c]} = v_{c}.name"
        for i, c in enumerate(coded, 3)
    )
    selects = ", ".join(
        ["c.rowid AS row", "coalesce(c.time_us, 0) AS time_us"]
        + ["c.time_us IS NOT NULL AS time_known", "c.anomaly_mask"]
        + [f"coalesce(c.{col}, -1)::INTEGER AS {name}" for name, col in ints.items()]
        + [f"coalesce(v_{c}.code, -1) AS {c}" for c in coded]
    )
    sql = f"SELECT {selects} FROM crashes c {lookups} WHERE c.rowid >= $1 AND c.rowid < $2"
    lists = [list(vocab[c]) for c in coded]
    filled = 0
    for lo in range(int(first), int(last) + 1, FETCH_ROWS):
        part = con.execute(sql, [lo, lo + FETCH_ROWS, *lists]).fetchnumpy()
        size = min(len(part["row"]), count - filled)
        for name, array in out.items():
            array[filled : filled + size] = part[name][:size]
        filled += size
    return {name: array[:filled] for name, array in out.items()}


def _time_order(
    con: duckdb.DuckDBPyConnection,
    row: npt.NDArray[np.int64],
    time_us: npt.NDArray[np.int64],
    known: npt.NDArray[np.bool_],
) -> npt.NDArray[np.int64]:
    """The order ``ORDER BY time_us NULLS LAST, core_id`` as positions in the arrays: NumPy
    sorts the times; only crashes that share a time (or have none) are put in ``core_id``
    order by DuckDB (sorting every row with its ``core_id`` there took seconds and gigabytes
    at ten million crashes)."""
    with_time = np.flatnonzero(known)
    if with_time.size == known.size:
        order = np.argsort(time_us).astype(np.int64, copy=False)
    else:
        order = np.concatenate(
            [with_time[np.argsort(time_us[with_time])], np.flatnonzero(~known)]
        ).astype(np.int64, copy=False)
    t = time_us[order]
    k = known[order]
    # positions whose (known, time) equals a neighbour's
    same = (t[1:] == t[:-1]) & (k[1:] == k[:-1])
    tied = np.zeros(order.size, dtype=bool)
    tied[1:] |= same
    tied[:-1] |= same
    del t, k, same
    if not tied.any():
        return order
    members = order[tied]
    rowids = row[members]
    con.register("corecensus_tied", {"r": rowids})
    try:
        ranked = con.execute(
            "SELECT rowid FROM crashes WHERE rowid IN (SELECT r FROM corecensus_tied) "
            "ORDER BY time_us NULLS LAST, core_id"
        ).fetchnumpy()["rowid"]
    finally:
        con.unregister("corecensus_tied")
    by_row = np.argsort(rowids)
    # the tied positions hold the same times in the same order as the ranked rows
    order[tied] = members[by_row[np.searchsorted(rowids[by_row], ranked)]]
    return order
