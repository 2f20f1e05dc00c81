"""The steps analyze builds its whole-table facts from (epidemiology/facts.py), each alone on a
table small enough to count by hand."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from corecensus.epidemiology import AnalysisParams, Categorical, CrashTable, ExposureTable
from corecensus.epidemiology.facts import (
    RATES_UNAVAILABLE,
    anomaly_counts,
    candidate_cells,
    candidate_pairs,
    cited_rows,
    excess_pairs,
    exposure_index,
    exposure_rates,
    given_host_cpus,
    group_pairs,
    scan_settings,
    time_order,
    top_pairs,
)
from corecensus.epidemiology.hostscan import ScanSettings
from corecensus.epidemiology.table import anomaly_mask_of
from corecensus.model import ANOMALY_NAMES

HOUR = 3_600_000_000


def table(rows: list[tuple[str, str, int]], **extra: Any) -> CrashTable:
    """Crashes as (population, host, cpu), one microsecond apart."""
    return CrashTable.from_rows(
        [
            {"population": p, "host": h, "cpu": c, "time_us": i, **extra}
            for i, (p, h, c) in enumerate(rows)
        ]
    )


def exposure(hours: dict[str, float]) -> ExposureTable:
    names = tuple(sorted(hours))
    return ExposureTable.from_arrays(
        host=Categorical(np.arange(len(names)), names),
        start_us=np.zeros(len(names), np.int64),
        end_us=np.array([int(hours[h] * HOUR) for h in names], np.int64),
    )


def test_exposure_index_only_with_positive_hours() -> None:
    crashes = table([("p", "a", 0)])
    assert exposure_index(crashes, None) == (None, RATES_UNAVAILABLE)
    assert exposure_index(crashes, exposure({"a": 0.0})) == (None, RATES_UNAVAILABLE)
    index, note = exposure_index(crashes, exposure({"a": 10.0, "z": 5.0}))
    assert note is None and index is not None
    # crash hosts keep their codes; hosts seen only in the exposure come after them
    assert index.hosts == ("a", "z")


def test_group_pairs_sorts_by_population_then_host_and_orders_each_by_size() -> None:
    pop = np.array([0, 1, 0, 0, 1, 1], np.int32)
    host = np.array([2, 0, 2, 1, 0, 2], np.int32)
    pairs = group_pairs(pop, host, n_hosts=3)
    assert pairs.pop.tolist() == [0, 0, 1, 1]
    assert pairs.host.tolist() == [1, 2, 0, 2]
    assert pairs.counts.tolist() == [1, 2, 2, 1]
    assert pairs.by_size.tolist() == [1, 0, 2, 3]
    assert pairs.groups.inverse.tolist() == [1, 2, 1, 0, 2, 3]
    assert len(pairs) == 4


def test_given_host_cpus_cover_exposure_only_hosts_and_are_never_inferred() -> None:
    crashes = table([("p", "a", 3), ("p", "b", 5)])
    given = CrashTable.from_rows(
        [{"population": "p", "host": "a", "cpu": 3, "time_us": 0}], host_cpus={"a": 64}
    )
    got = given_host_cpus(given, 2)
    assert got is not None and got.tolist() == [64, 0]
    assert given_host_cpus(crashes, 3) is None  # no facts: the placement falls back per host


def test_scan_settings_carry_the_scan_parameters() -> None:
    params = AnalysisParams(
        host_alpha=1e-4,
        stream_alpha=2e-4,
        anomaly_prior_strength=7.0,
        explain_min_rate=0.3,
        explain_min_hosts=4,
        streaming=False,
        host_p_exact_below=0.02,
        stream_p_exact_below=0.002,
    )
    assert scan_settings(params) == ScanSettings(
        host_alpha=1e-4,
        stream_alpha=2e-4,
        anomaly_prior_strength=7.0,
        explain_min_rate=0.3,
        explain_min_hosts=4,
        streaming=False,
        exact_below=0.02,
        stream_exact_below=0.002,
    )


def test_time_order_is_stable() -> None:
    assert time_order(np.array([5, 3, 5, 1], np.int64)).tolist() == [3, 1, 0, 2]
    assert time_order(np.zeros(0, np.int64)).tolist() == []


def test_exposure_rates_note_crashed_hosts_without_exposure() -> None:
    crashes = table([("p", "a", 0), ("p", "a", 1), ("p", "b", 0)])
    pairs = group_pairs(crashes.population.codes, crashes.host.codes, 2)
    covered = exposure({"a": 10.0, "b": 10.0})
    index, _ = exposure_index(crashes, covered)
    assert index is not None
    rates = exposure_rates(index, covered, crashes, pairs, 1, AnalysisParams())
    assert rates.note is None
    assert rates.hosts.observed.tolist() == [2, 1]
    # the same crash count expected of each equally exposed host
    assert rates.pairs.expected.tolist() == pytest.approx([1.5, 1.5])
    partial = exposure({"a": 10.0})
    index, _ = exposure_index(crashes, partial)
    assert index is not None
    rates = exposure_rates(index, partial, crashes, pairs, 1, AnalysisParams())
    assert rates.note is not None and rates.note.startswith("1 host(s) have crashes")


def test_anomaly_counts_per_population_and_class() -> None:
    sp8, flip = anomaly_mask_of(["sp_off_by_8"]), anomaly_mask_of(["bit_flip_candidate"])
    pop = np.array([0, 0, 1, 1, 1], np.int32)
    mask = np.array([sp8, sp8 | flip, 0, flip, flip], np.uint16)
    hardware = np.array([True, True, False, True, False])
    counts = anomaly_counts(pop, mask, hardware, n_pops=3)
    assert counts.shape == (3, len(ANOMALY_NAMES) + 1)
    col = {name: 1 + i for i, name in enumerate(ANOMALY_NAMES)}
    assert counts[:, 0].tolist() == [2, 1, 0]
    assert counts[:, col["sp_off_by_8"]].tolist() == [2, 0, 0]
    assert counts[:, col["bit_flip_candidate"]].tolist() == [1, 2, 0]
    assert counts[:, col["pc_zero"]].tolist() == [0, 0, 0]
    where = np.array([False, True, False, False, True])
    only = anomaly_counts(pop, mask, hardware, n_pops=3, where=where)
    assert only[:, 0].tolist() == [1, 0, 0]
    assert only[:, col["sp_off_by_8"]].tolist() == [1, 0, 0]
    assert only[:, col["bit_flip_candidate"]].tolist() == [1, 1, 0]


def test_top_pairs_largest_then_lowest_host_and_none_for_empty_populations() -> None:
    pop = np.array([0, 0, 0, 2, 2], np.int32)
    host = np.array([1, 1, 0, 3, 2], np.int32)
    pairs = group_pairs(pop, host, n_hosts=4)
    top = top_pairs(pairs, n_pops=3)
    assert top[1] == -1
    assert (pairs.pop[top[0]], pairs.host[top[0]]) == (0, 1)
    assert (pairs.pop[top[2]], pairs.host[top[2]]) == (2, 2)  # a tie goes to the lower host


def test_excess_without_rates_is_a_dominant_top_host() -> None:
    params = AnalysisParams(min_crashes=3, concentration_share=0.5)
    # population 0: host 0 holds 3 of 4 crashes (dominant); population 1: 2 of 2 (too few);
    # population 2: 3 of 7 (not a majority)
    pop = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2, 2], np.int32)
    host = np.array([0, 0, 0, 1, 0, 0, 0, 0, 0, 1, 1, 2, 2], np.int32)
    pairs = group_pairs(pop, host, n_hosts=3)
    top = top_pairs(pairs, 3)
    pop_crashes = np.bincount(pop, minlength=3).astype(np.int64)
    excess = excess_pairs(pairs, None, top, pop_crashes, params)
    assert [(int(pairs.pop[i]), int(pairs.host[i])) for i in np.flatnonzero(excess)] == [(0, 0)]


def test_excess_with_rates_needs_a_high_rate_and_two_crashes() -> None:
    # host "a" crashes 12 times in 10 hours, each of "b".."k" once in 100 hours
    rows = [("p", "a", 0)] * 12 + [("p", h, 0) for h in "bcdefghijk"]
    crashes = table(rows)
    hours = {"a": 10.0} | {h: 100.0 for h in "bcdefghijk"}
    exp = exposure(hours)
    index, _ = exposure_index(crashes, exp)
    assert index is not None
    pairs = group_pairs(crashes.population.codes, crashes.host.codes, len(index.hosts))
    rates = exposure_rates(index, exp, crashes, pairs, 1, AnalysisParams())
    top = top_pairs(pairs, 1)
    excess = excess_pairs(pairs, rates.pairs, top, np.array([22]), AnalysisParams())
    assert [index.hosts[int(pairs.host[i])] for i in np.flatnonzero(excess)] == ["a"]
    # the same crashes at the rate of every other host are not in excess
    even = exposure(dict.fromkeys(hours, 100.0))
    index, _ = exposure_index(crashes, even)
    assert index is not None
    flat = [("p", h, 0) for h in "abcdefghijk" for _ in range(2)]
    crashes = table(flat)
    pairs = group_pairs(crashes.population.codes, crashes.host.codes, len(index.hosts))
    rates = exposure_rates(index, even, crashes, pairs, 1, AnalysisParams())
    top = top_pairs(pairs, 1)
    assert not excess_pairs(pairs, rates.pairs, top, np.array([22]), AnalysisParams()).any()


def test_candidate_pairs_top_flagged_and_the_largest_excess_pairs() -> None:
    # one population over hosts 0..5 with 6, 5, 4, 3, 2, 1 crashes
    host = np.repeat(np.arange(6), [6, 5, 4, 3, 2, 1]).astype(np.int32)
    pairs = group_pairs(np.zeros(host.size, np.int32), host, n_hosts=6)
    top = top_pairs(pairs, 1)
    excess = np.array([False, True, True, True, True, False])
    flagged = np.array([False, False, False, False, False, True])
    cands = candidate_pairs(pairs, top, excess, flagged, max_excess=1)
    # top (host 0), the two largest excess pairs (hosts 1, 2), the flagged host 5
    assert pairs.host[cands].tolist() == [0, 1, 2, 5]
    none = candidate_pairs(pairs, top, np.zeros(6, bool), np.zeros(6, bool), max_excess=1)
    assert pairs.host[none].tolist() == [0]


def test_candidate_cells_modal_cpu_hardware_and_flagged_cpu_counts() -> None:
    sp8 = ["sp_off_by_8"]
    rows = [
        {"population": "p", "host": "a", "cpu": 3, "time_us": 0, "anomalies": sp8},
        {"population": "p", "host": "a", "cpu": 3, "time_us": 1, "anomalies": sp8},
        {"population": "p", "host": "a", "cpu": 1, "time_us": 2},
        {"population": "p", "host": "b", "cpu": 3, "time_us": 3},
        {"population": "q", "host": "b", "cpu": -1, "time_us": 4},
    ]
    crashes = CrashTable.from_rows(rows)
    hardware = crashes.anomaly_mask != 0
    pairs = group_pairs(crashes.population.codes, crashes.host.codes, 2)
    cand_pairs = np.array([0, 1, 2], np.int64)  # (p, a), (p, b), (q, b)
    cells = candidate_cells(
        cand_pairs,
        pairs,
        crashes,
        hardware,
        cpus=np.array([8, 8], np.int64),
        flagged_host=np.array([True, False]),
        flagged_cpu=np.array([3, 3], np.int64),
        n_pops=2,
    )
    assert cells.start.tolist() == [0, 2, 3]
    assert cells.cpu.tolist() == [3, 3, -1]
    assert cells.cpu_count.tolist() == [2, 1, 0]
    assert cells.hardware.tolist() == [2, 0, 0]
    # only host a is flagged: its crashes on CPU 3 count, host b's on CPU 3 do not
    assert cells.on_flagged_cpu.tolist() == [2, 0, 0]
    assert cells.evidence.tolist() == [2, 0, 0]  # by default, what is on the flagged CPU
    assert cells.cpu_p.tolist()[1:] == [1.0, 1.0]  # one crash, or none: no evidence
    assert 0.0 < cells.cpu_p[0] < 1.0
    # with the host test's cells (a's second crash lost its CPU, say pinned) and a crash loop
    # (a's first two crashes one event): one anomalous event, no pile-up on CPU 3
    cells = candidate_cells(
        cand_pairs,
        pairs,
        crashes,
        hardware,
        cpus=np.array([8, 8], np.int64),
        flagged_host=np.array([True, False]),
        flagged_cpu=np.array([3, 3], np.int64),
        n_pops=2,
        cell=np.array([3, -1, 1, 3, -1], np.int64),
        event=np.array([True, False, True, True, True]),
        evidence=np.array([0, 2], np.int64),
    )
    assert cells.cpu_count.tolist() == [1, 1, 0]
    assert cells.hardware.tolist() == [1, 0, 0]
    assert cells.on_flagged_cpu.tolist() == [1, 0, 0]
    assert cells.evidence.tolist() == [2, 0, 0]  # the rows given, per candidate pair


def test_cited_rows_are_the_first_crashes_of_each_candidate_pair() -> None:
    # table rows 0..7: pair (0, host 0) holds rows 0, 2, 4, 6; pair (0, host 1) rows 1, 3;
    # pair (1, host 0) rows 5, 7
    pop = np.array([0, 0, 0, 0, 0, 1, 0, 1], np.int32)
    host = np.array([0, 1, 0, 1, 0, 0, 0, 0], np.int32)
    pairs = group_pairs(pop, host, n_hosts=2)
    assert cited_rows(pairs, np.array([0, 2], np.int64), 3).tolist() == [0, 2, 4, 5, 7]
    assert cited_rows(pairs, np.array([1], np.int64), 3).tolist() == [1, 3]
    assert cited_rows(pairs, np.array([0, 1, 2], np.int64), 0).tolist() == []
    assert cited_rows(pairs, np.zeros(0, np.int64), 3).tolist() == []
