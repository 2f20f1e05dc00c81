"""Behaviour every Store has: run against the DuckDB adapter and the in-memory fake alike."""

from __future__ import annotations

import dataclasses
import json

import msgspec
import numpy as np
import pytest
from store_records import T0, make_record, rows

from corecensus.errors import StoreError
from corecensus.model import ANOMALY_NAMES
from corecensus.pipeline import signature_columns
from corecensus.signature import (
    SIGNATURE_VERSION,
    PopulationLevel,
    compute_signatures,
    population_key,
)
from corecensus.store import (
    DEPLOYS,
    EXPOSURE,
    HEARTBEATS,
    SCREEN_RESULTS,
    AddResult,
    CrashRow,
    DamagedCrash,
    DeployRow,
    DuckDBStore,
    EncodedCrashRows,
    ExposureRow,
    Heartbeat,
    MemoryStore,
    ScreenResultRow,
    SignatureColumns,
    Store,
)
from corecensus.store.tables import BATCH_ROWS, CRASHES, SIGNATURE_FIELDS


def test_both_implementations_satisfy_the_protocol(store: Store) -> None:
    assert isinstance(store, Store)
    assert isinstance(DuckDBStore(":memory:"), Store)
    assert isinstance(MemoryStore(), Store)


def test_add_is_idempotent_and_counts_new_and_duplicates(store: Store) -> None:
    records = [make_record(i) for i in range(10)]
    assert store.add_crashes(rows(records)) == AddResult(new=10, duplicate=0)
    # Ingesting the same cores again, plus a repeat inside the batch and two new ones.
    again = [*records[:5], records[0], make_record(10), make_record(11)]
    assert store.add_crashes(rows(again)) == AddResult(new=2, duplicate=6)
    assert store.count_crashes() == 12


def test_duplicate_keeps_the_first_copy(store: Store) -> None:
    first = make_record(1, host="first")
    second = dataclasses.replace(first, metadata={**first.metadata, "COREDUMP_HOSTNAME": "late"})
    store.add_crashes(rows([first]))
    store.add_crashes(rows([second]))
    got = store.get_crash(first.core_id)
    assert got is not None
    assert got.metadata["COREDUMP_HOSTNAME"] == "first"


def test_record_round_trips_and_iteration_is_in_core_id_order(store: Store) -> None:
    records = [make_record(i) for i in (5, 3, 9, 1)]
    store.add_crashes(rows(records))
    got = list(store.iter_crashes())
    assert got == sorted(records, key=lambda r: r.core_id)
    assert store.get_crash("nope") is None


def test_a_damaged_row_is_yielded_as_damage_and_the_walk_goes_on(store: Store) -> None:
    """Rows whose record cannot be read back (JSON cut short, not an object, lacking a field,
    another core's record) come as DamagedCrash with their id and why; every other row comes
    whole, in order. iter_crashes, which promises records, stops at the first with its id."""
    good = rows(make_record(i) for i in range(6))
    other = good[5].record_json
    damage = {0: '{"core_id": "x", "sta', 2: "[1, 2]", 3: '{"core_id": "%s"}', 4: other}
    stored = [
        dataclasses.replace(r, record_json=damage[i].replace("%s", r.core_id)) if i in damage else r
        for i, r in enumerate(good[:5])
    ]
    store.add_crashes(stored)
    outcomes = list(store.iter_crash_outcomes())
    assert [o.core_id for o in outcomes] == sorted(r.core_id for r in stored)
    damaged = {o.core_id: o.reason for o in outcomes if isinstance(o, DamagedCrash)}
    assert damaged == {
        good[0].core_id: "stored record is not JSON: Unterminated string starting at: "
        "line 1 column 18 (char 17)",
        good[2].core_id: "stored record is a JSON list, not an object",
        good[3].core_id: "stored record lacks 'status'",
        good[4].core_id: f"stored record is that of core {good[5].core_id!r}",
    }
    assert [o.core_id for o in outcomes if not isinstance(o, DamagedCrash)] == [good[1].core_id]
    with pytest.raises(StoreError, match=f"stored record {min(damaged)} cannot be decoded"):
        list(store.iter_crashes())
    with pytest.raises(StoreError, match="is a JSON list"):
        store.get_crash(good[2].core_id)


def test_iteration_spans_many_batches(store: Store) -> None:
    n = BATCH_ROWS * 2 + 17
    result = store.add_crashes(rows(make_record(i) for i in range(n)))
    assert result == AddResult(new=n, duplicate=0)
    ids = [r.core_id for r in store.iter_crashes()]
    assert len(ids) == n
    assert ids == sorted(ids)


def test_signed_rows_are_stored_as_given(store: Store) -> None:
    record = make_record(2, anomalies=("sp_off_by_8",))
    [row] = rows([record])
    store.add_crashes([row])
    sig = compute_signatures(record)
    assert sig.version == SIGNATURE_VERSION
    assert sig.anomaly_class == "sp_off_by_8"
    cols = store.crash_columns("address")
    assert store.signatures(cols.row) == ["Server::handle"]
    assert cols.population.decode() == [population_key(sig, PopulationLevel.ADDRESS)]
    assert store.get_crash(record.core_id) == record


def test_signatures_follow_the_row_handles(store: Store) -> None:
    early = make_record(1, time_us=T0, function="first_fn")
    late = make_record(2, time_us=T0 + 10, function="second_fn")
    store.add_crashes(rows([late, early]))
    cols = store.crash_columns("anomaly")
    assert store.signatures(cols.row) == ["first_fn", "second_fn"]  # the columns' time order
    assert store.signatures(cols.row[::-1]) == ["second_fn", "first_fn"]
    assert store.signatures([]) == []
    with pytest.raises(StoreError):
        store.signatures([int(cols.row.max()) + 1000])


def test_update_signatures_and_the_stale_filter(store: Store) -> None:
    records = [make_record(i) for i in range(6)]
    store.add_crashes(rows(records))
    old = [
        (
            r.core_id,
            signature_columns(
                dataclasses.replace(compute_signatures(r), version=SIGNATURE_VERSION - 1)
            ),
        )
        for r in records[:4]
    ]
    assert store.update_signatures([*old, ("unknown-core", old[0][1])]) == 4
    stale = [r.core_id for r in store.iter_crashes(signature_version_below=SIGNATURE_VERSION)]
    assert stale == sorted(r.core_id for r in records[:4])
    # reprocess: recompute while iterating the stale ones.
    new_sig = dataclasses.replace(compute_signatures(records[0]), symbolic="new | sig")
    changed = store.update_signatures(
        (
            r.core_id,
            signature_columns(dataclasses.replace(compute_signatures(r), symbolic="new | sig")),
        )
        for r in store.iter_crashes(signature_version_below=SIGNATURE_VERSION)
    )
    assert changed == 4
    assert list(store.iter_crashes(signature_version_below=SIGNATURE_VERSION)) == []
    columns = store.crash_columns("symbolic")
    ids = store.core_ids(columns.row)
    updated = columns.population.decode()[ids.index(records[0].core_id)]
    assert updated == population_key(new_sig, PopulationLevel.SYMBOLIC)
    assert store.signatures(columns.row)[ids.index(records[0].core_id)] == "new | sig"


def test_crash_columns(store: Store) -> None:
    late = make_record(1, time_us=T0 + 50_000_000, anomalies=("sp_off_by_8", "pc_zero"))
    early = make_record(2, time_us=T0, host="db-1")
    untimed = dataclasses.replace(
        make_record(3),
        cpu=None,
        signal=None,
        metadata={"COREDUMP_HOSTNAME": "x", "CORECENSUS_CPU": "bad"},
    )
    store.add_crashes(rows([untimed, late, early]))
    cols = store.crash_columns(details=True)
    assert len(cols) == 3
    assert store.core_ids(cols.row) == [early.core_id, late.core_id, untimed.core_id]
    assert store.core_ids(cols.row[::-1]) == [untimed.core_id, late.core_id, early.core_id]
    assert store.core_ids([]) == []
    assert cols.time_us.dtype == np.int64
    assert list(cols.time_us) == [T0, T0 + 50_000_000, 0]
    assert list(cols.time_known) == [True, True, False]
    # string columns come dictionary-encoded: int32 codes into a sorted vocabulary
    assert cols.host.vocab == ("db-1", "host-1", "x") and cols.host.codes.tolist() == [0, 1, 2]
    assert cols.host.codes.dtype == np.int32
    assert list(cols.cpu) == [2, 1, -1] and cols.cpu.dtype == np.int32
    assert cols.signal is not None and list(cols.signal) == [11, 11, -1]
    assert cols.exe is not None and cols.exe.codes.dtype == np.int32
    # the analysis reads neither exe nor signal; without details they are not read at all
    plain = store.crash_columns()
    assert plain.exe is None and plain.signal is None
    assert plain.host.codes.tolist() == cols.host.codes.tolist()
    assert cols.service.decode()[2] is None and cols.service.codes[2] == -1
    assert cols.version.decode()[0] == "1.2.0"
    assert cols.microcode.decode()[0] == "0x2006e05"
    assert cols.anomaly_mask.dtype == np.uint16
    expected = (1 << ANOMALY_NAMES.index("sp_off_by_8")) | (1 << ANOMALY_NAMES.index("pc_zero"))
    assert int(cols.anomaly_mask[1]) == expected
    assert int(cols.anomaly_mask[0]) == 0
    anomaly_level = store.crash_columns("anomaly")
    assert anomaly_level.population.decode() == ["none", "pc_zero+sp_off_by_8", "none"]
    assert anomaly_level.population.vocab == ("none", "pc_zero+sp_off_by_8")
    assert cols.population.decode()[0] == "svc SIGSEGV [none] Server::handle"


def test_crash_columns_of_an_empty_store(store: Store) -> None:
    cols = store.crash_columns()
    assert len(cols) == 0
    assert cols.anomaly_mask.dtype == np.uint16
    assert cols.time_us.dtype == np.int64
    assert cols.host.vocab == () and cols.host.codes.dtype == np.int32


def test_other_tables_are_idempotent_and_ordered(store: Store) -> None:
    exposure = [
        ExposureRow("b", T0, T0 + 3_600_000_000, "svc", "1.0", "Xeon"),
        ExposureRow("a", T0, T0 + 7_200_000_000, "svc", "1.0", None),
    ]
    assert store.add(EXPOSURE, exposure) == AddResult(2, 0)
    assert store.add(EXPOSURE, exposure[:1]) == AddResult(0, 1)
    assert list(store.rows(EXPOSURE)) == [exposure[1], exposure[0]]

    deploys = [DeployRow(T0 + 10, "svc", "1.1"), DeployRow(T0, "svc", "1.0")]
    assert store.add(DEPLOYS, [*deploys, deploys[0]]) == AddResult(2, 1)
    assert list(store.rows(DEPLOYS)) == [deploys[1], deploys[0]]

    beats = [Heartbeat("a", T0, "svc", "1.0"), Heartbeat("a", T0 + 60_000_000, "svc", "1.0")]
    assert store.add(HEARTBEATS, beats) == AddResult(2, 0)
    assert store.add(HEARTBEATS, beats) == AddResult(0, 2)
    assert list(store.rows(HEARTBEATS)) == beats

    screens = [
        ScreenResultRow.of("a", T0, "periodic", "pass", {"cpus": {"0": "pass"}, "budget_s": 30}),
        ScreenResultRow.of("a", T0, "periodic", "fail", {"cpus": {"3": "fail"}, "check": "fma"}),
    ]
    assert store.add(SCREEN_RESULTS, screens) == AddResult(2, 0)
    assert store.add(SCREEN_RESULTS, screens[:1]) == AddResult(0, 1)
    stored = sorted(store.rows(SCREEN_RESULTS), key=lambda r: r.decision)
    assert stored == sorted(screens, key=lambda r: r.decision)
    assert stored[0].result == {"cpus": {"3": "fail"}, "check": "fma"}


def test_exposure_that_ends_before_it_starts_is_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="ends before it starts"):
        store.add(EXPOSURE, [ExposureRow("a", T0 + 1, T0, "svc", "1.0")])
    assert list(store.rows(EXPOSURE)) == []


def test_closed_store_raises_store_error(store: Store) -> None:
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.count_crashes()
    with pytest.raises(StoreError, match="closed"):
        store.add_crashes(rows([make_record(1)]))


def test_record_that_json_cannot_hold_is_a_store_error(store: Store) -> None:
    from corecensus.model import Anomaly

    bad = dataclasses.replace(
        make_record(1), anomalies=(Anomaly("pc_zero", "x", data={"raw": b"\x00"}),)
    )
    # Signing (the pipeline) turns the record into a row; a record JSON cannot hold stops there.
    with pytest.raises(StoreError, match=f"crash {bad.core_id} cannot be stored as JSON"):
        store.add_crashes(rows([bad]))
    assert store.count_crashes() == 0


def test_replace_crashes_rewrites_and_removes_in_place(store: Store) -> None:
    """The store primitive behind "one record per crash, the best kept" (the choice of the
    best is the pipeline's): a row replaces the stored one of its core_id, ``remove`` deletes."""
    records = [make_record(i, host=f"h{i}") for i in range(4)]
    store.add_crashes(rows(records))
    better = dataclasses.replace(
        records[1], metadata={**records[1].metadata, "COREDUMP_HOSTNAME": "replaced"}
    )
    assert store.replace_crashes(rows([better]), remove=[records[2].core_id]) == 1
    assert store.count_crashes() == 3
    got = store.get_crash(records[1].core_id)
    assert got is not None and got.metadata["COREDUMP_HOSTNAME"] == "replaced"
    assert store.get_crash(records[2].core_id) is None
    found = store.get_crashes([records[0].core_id, records[2].core_id, "no-such-id"])
    assert set(found) == {records[0].core_id}
    assert found[records[0].core_id].metadata["COREDUMP_HOSTNAME"] == "h0"
    # A row whose core_id is not stored yet is simply added.
    assert store.replace_crashes(rows([make_record(9)])) == 1
    assert store.count_crashes() == 4


def test_crash_column_vocabularies_sort_as_python_and_empty_is_unknown(store: Store) -> None:
    names = ["é-1", "B-2", "a-3", "b-4", "", None]
    records = [make_record(i, time_us=T0 + i) for i in range(len(names))]
    store.add_crashes(
        dataclasses.replace(row, host=h) for row, h in zip(rows(records), names, strict=True)
    )
    cols = store.crash_columns()
    assert cols.host.vocab == ("B-2", "a-3", "b-4", "é-1")  # code points, as Python sorts
    assert cols.host.decode() == [*names[:4], None, None]
    with pytest.raises(StoreError, match="no crash at row"):
        store.core_ids([int(cols.row.max()) + 1000])


def test_crash_columns_are_declared_once_by_the_row_and_its_signature_columns() -> None:
    """The signature columns are SignatureColumns's fields, in place among the crash's own
    (the DDL of existing stores), and a row survives being flattened to columns and back."""
    sig = [f.name for f in dataclasses.fields(SignatureColumns)]
    names = list(CRASHES.names)
    at = names.index("sig_address")
    assert names[at - 1] == "anomaly_mask" and names[at + len(sig)] == "ingested_us"
    assert names[at : at + len(sig)] == sig == list(SIGNATURE_FIELDS)
    assert "signature" not in names
    [row] = rows([make_record(3, anomalies=("sp_off_by_8",))])
    values = CRASHES.values(row)
    assert values[names.index("sig_version")] == row.signature.sig_version
    assert CRASHES.row(values) == row


def _encoded(crashes: list[CrashRow]) -> EncodedCrashRows:
    """``crashes`` as the collector's loader reads them from its journal (msgpack of the
    rows, each record's JSON left encoded), in two payloads."""
    half = len(crashes) // 2
    return EncodedCrashRows.decode(
        msgspec.msgpack.encode(part) for part in (crashes[:half], crashes[half:])
    )


def test_crashes_given_encoded_are_stored_as_the_same_rows(store: Store) -> None:
    """Each record's JSON, left as msgpack to the insert, is stored as the text it encodes:
    every msgpack str length (fixstr, str 8, 16, 32) and text beyond ASCII."""
    texts = [
        json.dumps({"pad": pad}, ensure_ascii=False)
        for pad in ("", "é", "x" * 200, "é€😀" * 3000, "😀" * 20000)
    ]
    crashes = [
        dataclasses.replace(row, record_json=text)
        for row, text in zip(rows([make_record(i) for i in range(5)]), texts, strict=True)
    ]
    encoded = _encoded(crashes)
    assert [type(r.record_json) for r in encoded.rows] == [msgspec.Raw] * 5
    assert store.add_uploads(encoded, [], [])[0] == AddResult(5, 0)
    assert store.add_uploads(_encoded(crashes), [], [])[0] == AddResult(0, 5)
    stored = list(store.rows(CRASHES))
    now_us = 1_700_000_100 * 1_000_000
    assert stored == sorted(
        (dataclasses.replace(r, ingested_us=now_us) for r in crashes), key=lambda r: r.core_id
    )


def test_an_encoded_record_that_is_not_text_is_refused_and_nothing_stored(store: Store) -> None:
    crash = rows([make_record(1)])[0]
    payload = msgspec.msgpack.encode([crash]).replace(
        msgspec.msgpack.encode(crash.record_json), msgspec.msgpack.encode(12345)
    )
    with pytest.raises(StoreError):
        store.add_uploads(EncodedCrashRows.decode([payload]), [], [])
    assert store.count_crashes() == 0
