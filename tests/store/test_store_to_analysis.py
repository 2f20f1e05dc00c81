"""The store's dictionary-encoded crash columns as the analysis reads them (app.crash_table):
the same table on DuckDB and the fake, unknown hosts named, crash ids looked up by handle."""

from __future__ import annotations

import dataclasses

import numpy as np
from store_records import T0, make_record, rows

from corecensus.app.analyze import UNKNOWN_HOST, crash_table
from corecensus.epidemiology import analyze
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
