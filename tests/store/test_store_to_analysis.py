"""The store's dictionary-encoded crash columns as the analysis reads them (app.crash_table):
the same table on DuckDB and the fake, unknown hosts named, crash ids looked up by handle."""

from __future__ import annotations

import dataclasses

import numpy as np
from store_records import T0, make_record, rows

from corecensus.app.analyze import UNKNOWN_HOST, crash_table
from corecensus.epidemiology import analyze
from corecensus.model import CrashRecord
from corecensus.signature import PopulationLevel
from corecensus.store import Store

DAY = 86_400_000_000  # µs; a day apart, so not a crash loop


def test_crash_table_names_unknown_hosts_and_cites_crashes_by_core_id(store: Store) -> None:
    records = [
        make_record(i, host="db-1", time_us=T0 + i * DAY, anomalies=("sp_off_by_8",))
        for i in range(6)
    ]
    signed = list(rows(records))
    # one crash without a host: it still counts, under an explicit name
    signed[5] = dataclasses.replace(signed[5], host=None)
    store.add_crashes(signed)
    table, info = crash_table(store)
    assert UNKNOWN_HOST in table.host.vocab
    assert sorted(table.host.vocab) == list(table.host.vocab)
    assert [table.host.vocab[c] for c in table.host.codes][5] == UNKNOWN_HOST
    assert callable(table.crash_id)
    assert table.crash_id(table.host.codes[:0].astype("int64")) == []
    # the lookup names rows in crash_columns order, which is time order here
    assert list(table.crash_id(np.array([0, 5]))) == [records[0].core_id, records[5].core_id]
    (population,) = analyze(table, population_info=info).populations
    (suspect,) = population.suspects
    assert suspect.host == "db-1"
    assert suspect.crash_ids == tuple(r.core_id for r in records[:5])


def test_each_population_is_described_by_its_first_crash_in_time_order(store: Store) -> None:
    def untimed(i: int, function: str, anomalies: tuple[str, ...] = ()) -> CrashRecord:
        record = make_record(i, function=function, anomalies=anomalies)
        return dataclasses.replace(record, metadata={"COREDUMP_HOSTNAME": "x"})

    early = make_record(1, time_us=T0 + 10, function="first_fn")
    late = make_record(2, time_us=T0 + 20, function="second_fn")
    # All in one anomaly-level population ("none"): the earliest crash names it, and crashes
    # without a time come after every timed one (then by core_id).
    store.add_crashes(rows([untimed(3, "untimed_fn"), late, early]))
    _, info = crash_table(store, PopulationLevel.ANOMALY)
    assert list(info) == ["none"]
    assert info["none"].signature == "first_fn"
    assert info["none"].top_frames == ("first_fn",)
    # at the symbolic level each is its own population, named by its own signature
    _, info = crash_table(store)
    assert sorted(i.signature for i in info.values()) == ["first_fn", "second_fn", "untimed_fn"]
    store.add_crashes(rows([make_record(4, time_us=T0, function="earliest_fn")]))
    _, info = crash_table(store, PopulationLevel.ANOMALY)
    assert info["none"].signature == "earliest_fn"
    # a population of untimed crashes only: the first by core_id
    flagged = [untimed(i, f, ("sp_off_by_8",)) for i, f in [(6, "b_fn"), (5, "a_fn")]]
    store.add_crashes(rows(flagged))
    _, info = crash_table(store, PopulationLevel.ANOMALY)
    assert {k: i.signature for k, i in info.items()} == {
        "none": "earliest_fn",
        "sp_off_by_8": "a_fn",
    }
