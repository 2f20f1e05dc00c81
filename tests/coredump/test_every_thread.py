"""Every thread of a real multi-threaded core, as gdb sees them (the independent oracle).

thread_crash (tests/data/crashers/thread_crash.c) has three threads: the second worker crashes
in crash_in_thread(), the first blocks in read(), main waits in pthread_join().
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest

from corecensus.coredump import inspect_core
from corecensus.ingest.wire import RecordKind, decode_batch, decode_body, encode_batch
from corecensus.model import CrashRecord, FrameTrust
from crashers import CrashResult, gdb_facts, readelf_notes

pytestmark = pytest.mark.kernel_cores

OWN = {"main", "blocked_worker", "crashing_worker", "crash_in_thread"}


@pytest.fixture(scope="module")
def thread_crash(kernel_cores: Mapping[str, CrashResult]) -> tuple[CrashResult, dict[str, Any]]:
    r = kernel_cores["thread_crash"]
    assert r.core is not None
    return r, gdb_facts(r.exe, r.core)


@pytest.mark.parametrize("symbolize", [True, False])
def test_every_thread_crashing_first(
    thread_crash: tuple[CrashResult, dict[str, Any]], symbolize: bool
) -> None:
    r, facts = thread_crash
    assert r.core is not None
    rec = inspect_core(r.core, symbolize=symbolize)
    tids = [t.tid for t in rec.threads_detail]
    assert tids[0] == r.crash_tid == rec.crashed_tid
    assert sorted(tids) == sorted(readelf_notes(r.core).prstatus_pids)
    assert len(tids) == rec.threads == 3
    # `frames` stays the crashing thread's.
    assert rec.threads_detail[0].frames == rec.frames
    assert rec.threads_detail[0].signal == rec.signal == 11
    by_tid = {t.tid: t for t in rec.threads_detail}
    for g in facts["threads"]:
        mine = by_tid[g["lwp"]]
        assert mine.registers["rip"] == g["pc"] == mine.frames[0].pc
        assert mine.registers["rsp"] == g["sp"]
        assert mine.frames[0].trust is FrameTrust.CONTEXT


def test_other_threads_are_unwound_like_gdb(
    thread_crash: tuple[CrashResult, dict[str, Any]],
) -> None:
    r, facts = thread_crash
    assert r.core is not None
    rec = inspect_core(r.core)
    by_tid = {t.tid: t for t in rec.threads_detail}
    for g in facts["threads"]:
        mine = [f.function for f in by_tid[g["lwp"]].frames]
        assert [n for n in mine if n in OWN] == [n for n in g["frames"] if n in OWN], (mine, g)
    blocked = by_tid[r.info_int("blocked_tid")]
    assert "blocked_worker" in [f.function for f in blocked.frames]
    assert {f.trust for f in blocked.frames[1:]} == {FrameTrust.UNWOUND}


def test_threads_detail_round_trips_through_json_and_the_wire(
    thread_crash: tuple[CrashResult, dict[str, Any]],
) -> None:
    r, _facts = thread_crash
    assert r.core is not None
    rec = inspect_core(r.core)
    assert CrashRecord.from_json(rec.to_json()) == rec
    rec = dataclasses.replace(rec, metadata={"COREDUMP_HOSTNAME": "web-1"})
    body = decode_body(encode_batch(RecordKind.CRASHES, [rec]))
    decoded = decode_batch(RecordKind.CRASHES, body)
    assert decoded.problems == ()
    assert decoded.records[0].value == rec
