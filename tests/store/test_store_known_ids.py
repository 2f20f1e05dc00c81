"""The known crash ids of a store's writer (store/known_ids.py): a crash whose id they do not
hold is inserted without asking the database, so they must never miss a stored crash -- after
a restart, after kill -9, after another connection wrote -- and a false "maybe" must not keep a
new crash out."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from store_records import make_record, rows

from corecensus.store import DuckDBStore, duckdb_store, known_ids
from corecensus.store.known_ids import KnownCrashIds, crash_id_digest

SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_the_digests_read_from_a_store_are_those_of_its_ids(tmp_path: Path) -> None:
    """The digests the writer reads from the store at start are its ids' own, so a stored
    crash is known as such without asking (a digest read wrongly would send a retried batch's
    crash to the INSERT, which the primary key then refuses: a StoreError, not a duplicate)."""
    ids = [make_record(i).core_id for i in range(5)]
    with DuckDBStore(tmp_path / "d.duckdb") as s:
        s.add_crashes(rows(make_record(i) for i in range(5)))
    with DuckDBStore(tmp_path / "d.duckdb") as s:
        s.defer_checkpoints()  # reads them
        known = s._known
        assert known is not None and len(known) == 5
        assert known.may_hold([crash_id_digest(i) for i in ids]) == [True] * 5
        assert known.may_hold([crash_id_digest("not stored")]) == [False]


def test_known_ids_are_certain_when_they_say_no_and_remember_what_is_added(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(known_ids, "_MERGE_MIN", 4)
    stored = [crash_id_digest(f"s{i}") for i in range(10)]
    known = KnownCrashIds(np.array(stored, dtype=np.int64))
    others = [crash_id_digest(f"n{i}") for i in range(30)]
    assert known.may_hold(stored) == [True] * 10
    assert known.may_hold(others) == [False] * 30
    assert known.may_hold([]) == []
    known.add(others[:3])  # kept aside, not yet merged into the sorted digests
    assert known.may_hold(others[:4]) == [True, True, True, False]
    known.add(others[3:20])  # past the merge bound: sorted in
    assert known.may_hold(others) == [True] * 20 + [False] * 10
    assert known.may_hold(stored) == [True] * 10
    assert len(known) == 30
    empty = KnownCrashIds(np.array([], dtype=np.int64))
    assert empty.may_hold([stored[0], 2**63 - 1]) == [False, False]


def test_known_ids_are_read_again_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    with DuckDBStore(path) as s:
        assert s.add_crashes(rows(make_record(i) for i in range(20))).new == 20
    with DuckDBStore(path) as s:
        again = s.add_crashes(rows(make_record(i) for i in range(15, 25)))
        assert (again.new, again.duplicate) == (5, 5)
        assert s.count_crashes() == 25


def test_a_batch_retried_after_kill_9_is_stored_once(tmp_path: Path) -> None:
    """A writer killed right after its commit (no close, no checkpoint): the next process
    reads the known ids from the store and the retried batch adds nothing."""
    path = tmp_path / "k.duckdb"
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from store_records import make_record, rows
        from corecensus.store import DuckDBStore
        s = DuckDBStore({str(path)!r})
        s.defer_checkpoints()
        s.add_crashes(rows(make_record(i) for i in range(3)))
        s.add_crashes(rows(make_record(i) for i in range(3, 12)))
        os.kill(os.getpid(), 9)
    """)
    killed = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": SRC}, timeout=120
    )
    assert killed.returncode == -9
    with DuckDBStore(path) as s:
        s.defer_checkpoints()
        retried = s.add_crashes(rows(make_record(i) for i in range(3, 14)))
        assert (retried.new, retried.duplicate) == (2, 9)
        assert s.count_crashes() == 14


def test_a_crash_written_behind_the_known_ids_back_is_still_stored_once(tmp_path: Path) -> None:
    """Another connection to the same file (the same process) stores a crash after this store
    read its known ids; adding it here finds the primary key's refusal, reads the ids again and
    counts it as already there -- and stores the batch's new crash."""
    path = tmp_path / "two.duckdb"
    with DuckDBStore(path) as first, DuckDBStore(path) as second:
        first.add_crashes(rows(make_record(i) for i in range(3)))  # reads its known ids
        second.add_crashes(rows([make_record(7)]))
        result = first.add_crashes(rows([make_record(7), make_record(8)]))
        assert (result.new, result.duplicate) == (1, 1)
        assert first.count_crashes() == 5


def test_other_crash_writes_are_not_missed(tmp_path: Path) -> None:
    """replace_crashes and add(CRASHES, ...) write crashes too: add_crashes after them sees
    those crashes as stored."""
    with DuckDBStore(tmp_path / "o.duckdb") as s:
        s.add_crashes(rows([make_record(0)]))
        assert s.replace_crashes(rows([make_record(1)])) == 1
        s.add(duckdb_store.CRASHES, rows([make_record(2)]))
        result = s.add_crashes(rows(make_record(i) for i in range(4)))
        assert (result.new, result.duplicate) == (1, 3)
        assert s.count_crashes() == 4


def test_a_digest_shared_with_a_stored_crash_does_not_keep_a_new_one_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every id given the same digest (as if 64 bits collided): each crash is then a "maybe",
    asked about, and the new ones are stored."""
    monkeypatch.setattr(duckdb_store, "crash_id_digest", lambda core_id: 7)
    with DuckDBStore(tmp_path / "c.duckdb") as s:
        assert s.add_crashes(rows(make_record(i) for i in range(4))).new == 4
        result = s.add_crashes(rows(make_record(i) for i in range(2, 6)))
        assert (result.new, result.duplicate) == (2, 2)
        assert s.count_crashes() == 6


def test_a_bad_row_is_still_a_store_error_with_nothing_stored(tmp_path: Path) -> None:
    """A refusal that is not a duplicate (a NOT NULL column left empty) is the store's error,
    not a retry that loops, whether the known ids were read in that call or before."""
    import dataclasses

    from corecensus.errors import StoreError

    with DuckDBStore(tmp_path / "b.duckdb") as s:
        bad = dataclasses.replace(rows([make_record(1)])[0], status=None)  # type: ignore[arg-type]
        with pytest.raises(StoreError):
            s.add_crashes([bad])
        s.add_crashes(rows([make_record(0)]))
        with pytest.raises(StoreError):
            s.add_crashes([bad])
        assert s.count_crashes() == 1
