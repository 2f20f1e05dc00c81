"""Pile-ups on one CPU that are not the silicon (issue 9, pileups.py): one (population,
service) the scheduler keeps placing on one CPU, and a CPU index busier on many hosts. Each
rule with the case where it must not fire (a healthy host) and where it must (a faulty core
under the same conditions), and the second look's p-values never below the first look's."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from test_epi_placement import DAY, T0, background, crash, faulty

from corecensus.epidemiology import CrashTable, analyze
from corecensus.epidemiology.concentration import max_cell_pvalue
from corecensus.epidemiology.hostscan import ScanSettings, scan_hosts
from corecensus.epidemiology.pileups import (
    BUSY_CPU0_LEVEL,
    BUSY_GROUP_LEVEL,
    BUSY_INDEX_LEVEL,
    busy_indices,
    group_busy,
    group_codes,
)
from corecensus.epidemiology.poisson import poisson_upper


def nightly(
    host: str, cpu: int, *, pops: int = 1, anomalous: int = 0, hour: float | None = 3.0
) -> list[dict[str, Any]]:
    """21 nights of a job dying at start at ``hour`` (None: at any time of day), 15 on ``cpu``
    of 32 and 6 elsewhere, in ``pops`` populations (rotating), the first ``anomalous`` of those
    on ``cpu`` anomalous."""
    rows = []
    for night in range(21):
        on = night < 15
        rows.append(
            crash(
                host,
                night + (hour / 24 if hour is not None else (0.37 * night) % 1.0),
                cpu if on else (cpu + 3 + 5 * night) % 32,
                pop=f"job{night % pops}",
                service="report-cron",
                anomalous=on and night < anomalous,
                host_cpus=32,
            )
        )
    return rows


def test_nightly_job_on_one_cpu_is_not_a_bad_core() -> None:
    # the largest-cell test alone on 15 of 21 crashes on one of 32 CPUs
    assert float(max_cell_pvalue(21.0, 15.0, 32)) < 1e-12
    a = analyze(CrashTable.from_rows(background() + nightly("h077", 5)))
    assert a.flagged_hosts() == ()
    i = list(a.host_names).index("h077")
    assert a.scan is not None and a.scan.set_aside[i] == 15
    assert a.scan.p_value[i] > 1e-3


def test_bad_core_crashing_the_hosts_one_service_in_several_populations_is_found() -> None:
    a = analyze(CrashTable.from_rows(background() + nightly("h077", 5, pops=5)))
    assert a.flagged_hosts() == ("h077",)
    assert a.scan is not None and a.scan.set_aside.sum() == 0


def test_bad_core_failing_one_code_path_at_any_time_is_found() -> None:
    # one population of one service on one CPU, no anomaly, but at every time of day: not a
    # job a timer starts (one bad stepping failing the same code)
    a = analyze(CrashTable.from_rows(background() + nightly("h077", 5, hour=None)))
    assert a.flagged_hosts() == ("h077",)
    assert a.scan is not None and a.scan.set_aside.sum() == 0


def test_nightly_job_on_two_cpus_is_not_a_pair_of_bad_cores() -> None:
    job = [
        crash("h150", d + 0.125, 4 + 17 * (d % 2), pop="nightly", host_cpus=32) for d in range(12)
    ]
    assert analyze(CrashTable.from_rows(background() + job)).flagged_hosts() == ()
    spread = [dict(r, time_us=r["time_us"] + (i * 5 % 12) * DAY // 12) for i, r in enumerate(job)]
    assert analyze(CrashTable.from_rows(background() + spread)).flagged_hosts() == ("h150",)


def test_bad_core_failing_one_code_path_with_anomalies_is_found() -> None:
    # one population of one service on one CPU, but 4 of its 15 crashes there anomalous
    a = analyze(CrashTable.from_rows(background() + nightly("h077", 5, anomalous=4)))
    assert a.flagged_hosts() == ("h077",)
    [h] = a.hosts
    assert any("CPU 5" in r for r in h.recommendations)


def test_bad_core_beside_a_nightly_job_is_found_and_named_not_the_jobs_cpu() -> None:
    bad = faulty("h077", 9, np.linspace(4, 28, 8), host_cpus=32)
    a = analyze(CrashTable.from_rows(background() + nightly("h077", 5) + bad))
    assert a.flagged_hosts() == ("h077",)
    i = list(a.host_names).index("h077")
    assert a.scan is not None and a.scan.set_aside[i] == 15 and a.scan.top_cpu[i] == 9
    [h] = a.hosts
    assert any("CPU 9" in r for r in h.recommendations)
    assert not any("CPU 5" in r for r in h.recommendations + h.reasons)
    assert any("set aside in a second look" in r for r in h.reasons + h.recommendations)


def skewed_fleet(seed: int, extra: list[tuple[int, int, int, int]]) -> CrashTable:
    """300 hosts of 16 CPUs, 20-100 ordinary crashes each in 10 populations, CPU 0 three times
    as likely on 40 % of them (IRQ affinity), 2 % anomalous; ``extra`` adds (host, cpu,
    crashes, anomalous) of a faulty core in rotating populations."""
    rng = np.random.default_rng(seed)
    hosts, cpus, pops, times, flags = [], [], [], [], []
    w_skew = np.ones(16)
    w_skew[0] = 3.0
    for h in range(300):
        k = int(rng.integers(20, 101))
        w = w_skew if h % 5 < 2 else np.ones(16)
        hosts += [h] * k
        cpus += rng.choice(16, size=k, p=w / w.sum()).tolist()
        pops += rng.integers(0, 10, k).tolist()
        times += rng.uniform(0, 30, k).tolist()
        flags += (rng.random(k) < 0.02).tolist()
    for h, cpu, k, z in extra:
        hosts += [h] * k
        cpus += [cpu] * k
        pops += [j % 10 for j in range(k)]
        times += np.linspace(3, 27, k).tolist()
        flags += [j < z for j in range(k)]
    return CrashTable.from_rows(
        [
            {
                "host": f"s{h:03d}",
                "time_us": T0 + int(d * DAY),
                "cpu": c,
                "population": f"bg{p}",
                "service": "api",
                "anomalies": ("sp_off_by_8",) if f else (),
                "host_cpus": 16,
            }
            for h, c, p, d, f in zip(hosts, cpus, pops, times, flags, strict=True)
        ]
    )


def test_cpu0_busier_on_many_hosts_is_not_a_bad_core() -> None:
    a = analyze(skewed_fleet(1, []))
    assert a.scan is not None
    # the first look flagged skewed hosts on CPU 0; the second set CPU 0 aside there and
    # tested them on their 15 other CPUs
    aside = np.flatnonzero(a.scan.set_aside)
    assert aside.size >= 1 and np.all(a.scan.cpus[aside] == 15)
    assert np.all(a.scan.top_cpu[aside] != 0)
    assert a.flagged_hosts() == ()


def test_bad_cpu0_with_anomalies_and_a_bad_cpu7_on_a_skewed_host_are_found() -> None:
    # s000 is skewed (h % 5 < 2): a bad CPU 0 with 5 of 10 anomalous; s001, skewed too: a bad
    # CPU 7 without anomalies
    a = analyze(skewed_fleet(1, [(0, 0, 10, 5), (1, 7, 14, 0)]))
    assert a.flagged_hosts() == ("s000", "s001")


def test_busy_indices_count_other_hosts_only() -> None:
    # 1,000 hosts of 16 cells, each with its busiest cell alone at 6 crashes
    n = 1000
    exp = n / 16
    # what one host sees: the other hosts' expectation
    need = next(k for k in range(1, 400) if poisson_upper(k, exp - 1 / 16) <= BUSY_INDEX_LEVEL)
    others = np.array([c for c in range(16) if c not in (0, 3)])
    busiest = others[np.arange(n) % others.size]
    busiest[:need] = 3  # exactly enough hosts on index 3
    busiest[need : need + 160] = 0  # index 0: far beyond chance
    g_host = np.repeat(np.arange(n), 2)
    g_cell = np.stack([busiest, (busiest + 1) % 16], axis=1).ravel()
    g_count = np.tile([6, 2], n)
    b = busy_indices(g_host, g_cell, g_count, np.full(n, 16))
    assert np.allclose(b.expected, exp)
    assert b.busy(need, 0, 6) and b.busy(n - 1, 0, 2)
    assert not b.busy(0, 3, 6)  # without its own count index 3 is short of the level
    assert b.busy(n - 1, 3, 2)
    assert not b.busy(n - 1, 5, 6) and not b.busy(n - 1, 16, 6)
    # CPU 0 is suspect a priori: a milder excess makes it busy, not another index
    mild = next(k for k in range(1, 400) if poisson_upper(k, exp - 1 / 16) <= BUSY_CPU0_LEVEL)
    assert mild < need
    for index, busy_expected in ((0, True), (3, False)):
        cells = others[np.arange(n) % others.size]
        cells[:mild] = index
        g_cell = np.stack([cells, (cells + 1) % 16], axis=1).ravel()
        got = busy_indices(g_host, g_cell, g_count, np.full(n, 16))
        assert got.busy(n - 1, index, 2) is busy_expected
    # ties share one host: two busiest cells of 6 count half each
    tied = busy_indices(np.array([0, 0]), np.array([2, 5]), np.array([6, 6]), np.array([8]))
    assert tied.observed[2] == tied.observed[5] == 0.5
    # a host with a cell beyond its number of cells (a cpuset away from 0) counts nowhere
    away = busy_indices(np.array([0]), np.array([20]), np.array([9]), np.array([4]))
    assert away.observed.sum() == 0 and not away.counts[0]


def test_second_look_never_lowers_a_pvalue() -> None:
    rng = np.random.default_rng(11)
    n_hosts, n = 200, 6000
    host = rng.integers(0, n_hosts, n)
    cpu = rng.integers(0, 8, n)
    pop = rng.integers(0, 6, n)
    service = rng.integers(0, 3, n)
    # pile-ups of every kind: one population, several, on CPU 0 of many hosts, with anomalies
    for h in range(0, n_hosts, 4):
        sel = np.flatnonzero(host == h)[:12]
        cpu[sel] = 0 if h % 8 == 0 else 5
        if h % 3 == 0:
            pop[sel] = 1
            service[sel] = 2
    hardware = rng.random(n) < 0.03
    hardware[np.flatnonzero(host == 8)[:5]] = True
    kw: dict[str, Any] = dict(
        host=host,
        cpu=cpu,
        time_us=rng.integers(0, 30 * DAY, n),
        hardware=hardware,
        population=pop,
        n_hosts=n_hosts,
        cpus=np.full(n_hosts, 8),
        settings=ScanSettings(streaming=False),
    )
    one = scan_hosts(**kw)
    two = scan_hosts(**kw, service=service)
    assert one.flagged.sum() >= 10 and two.set_aside.sum() > 0
    assert np.all(two.p_value >= one.p_value)
    assert np.all(two.focus.p_value >= one.focus.p_value)
    assert not np.any(two.flagged & ~one.flagged)
    assert np.any(one.flagged & ~two.flagged)


def sharded_fleet(seed: int, extra: list[dict[str, Any]]) -> CrashTable:
    """300 hosts of 16 CPUs: ``api`` crashes uniform over the CPUs (40-100 a host, 10
    populations) everywhere; on 30 of them a thread-per-core ``db`` whose shard 0 runs on
    CPU 9 (its NUMA socket's first CPU, say) and does 4x the work: 15-40 crashes in three
    populations ``db-0``-``db-2``. Host ``s299`` is such a host with a bad config: 180 ``db``
    crashes, about 38 of them on CPU 9. Anomalies on 2 % of crashes."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []

    def add(h: int, cpu: int, pop: str, service: str) -> None:
        rows.append(
            {
                "host": f"s{h:03d}",
                "time_us": T0 + int(rng.uniform(0, 30) * DAY),
                "cpu": cpu,
                "population": pop,
                "service": service,
                "anomalies": ("sp_off_by_8",) if rng.random() < 0.02 else (),
                "host_cpus": 16,
            }
        )

    w = np.ones(16)
    w[9] = 4.0
    for h in range(300):
        for _ in range(int(rng.integers(40, 101))):
            add(h, int(rng.integers(16)), f"bg{int(rng.integers(10))}", "api")
        if h % 10 == 0 or h == 299:
            k = 180 if h == 299 else int(rng.integers(15, 41))
            for cpu in rng.choice(16, size=k, p=w / w.sum()).tolist():
                add(h, cpu, f"db-{int(rng.integers(3))}", "db")
    return CrashTable.from_rows(rows + extra)


def test_shard0_away_from_cpu0_busy_for_its_service_is_not_a_bad_core() -> None:
    t = sharded_fleet(5, [])
    a = analyze(t)
    assert a.scan is not None
    i = list(a.host_names).index("s299")
    on9 = (t.host.codes == i) & (t.cpu == 9)
    db = np.asarray(t.service.vocab)[t.service.codes] == "db"
    # the first look flagged s299 on CPU 9; the fleet's check over all crashes leaves CPU 9
    # alone (the db's skew drowns in api crashes: its api crashes there keep their CPU and the
    # host is tested on its 16 cells), the check within each (db-k, db) group sets it aside
    # (events: two crashes of one group within half an hour are one)
    assert 30 <= a.scan.set_aside[i] <= np.count_nonzero(on9 & db)
    assert np.count_nonzero(on9 & ~db) > 0 and a.scan.cpus[i] == 16
    assert a.flagged_hosts() == ()


def test_bad_core_at_a_services_busy_index_is_found_by_its_anomalies() -> None:
    # s010 runs the db (10 % 10 == 0); its bad CPU is 9, db's shard 0 index, 6 of 12 crashes
    # anomalous; s007 (no db) has a bad CPU 9 without anomalies in api populations: CPU 9 is
    # busy for the db's groups only, the api crashes there stay
    bad = [
        crash("s010", d, 9, pop=f"db-{j % 3}", service="db", anomalous=j % 2 == 0, host_cpus=16)
        for j, d in enumerate(np.linspace(3, 27, 12))
    ]
    bad += [
        crash("s007", d, 9, pop=f"bg{j % 10}", host_cpus=16)
        for j, d in enumerate(np.linspace(3, 27, 14))
    ]
    a = analyze(sharded_fleet(5, bad))
    assert set(a.flagged_hosts()) == {"s010", "s007"}


def test_group_busy_shares_its_level_over_the_indices_it_looks_at() -> None:
    # 400 hosts of 32 cells, one group, each host's busiest cell alone
    n, cells = 400, 32
    exp = n / cells

    def fleet(index: int, hosts: int) -> tuple[NDArray[Any], NDArray[Any]]:
        """Host i's busiest cell (3 crashes, one more on each of the next 3 cells) cycles
        over the cells other than ``index``; the first ``hosts`` hosts put ``index`` first."""
        others = np.array([x for x in range(cells) if x != index])
        busiest = others[np.arange(n) % others.size]
        busiest[:hosts] = index
        c = (busiest[:, None] + np.array([0, 0, 0, 1, 2, 3])[None, :]) % cells
        return np.repeat(np.arange(n), 6), c.ravel()

    # a mild excess: the tail at most 1e-2 but not 1e-2 / 32
    mild = next(k for k in range(1, 400) if poisson_upper(k, exp - 1 / cells) <= BUSY_CPU0_LEVEL)
    assert poisson_upper(mild, exp - 1 / cells) > BUSY_GROUP_LEVEL / cells
    pop = np.zeros(n * 6, np.int64)
    svc = np.zeros(n * 6, np.int64)
    code = int(group_codes(pop[:1], svc[:1], 2)[0])
    for index, want in ((0, True), (7, False)):
        h, c = fleet(index, mild)
        got = group_busy([(n - 1, code, index)], h, c, (pop, svc), np.full(n, cells))
        assert ((n - 1, code, index) in got.busy) is want
        assert got.level[(n - 1, code, index)] == (
            BUSY_CPU0_LEVEL if index == 0 else BUSY_GROUP_LEVEL / cells
        )
    # far beyond chance any index is busy; the asking host's own count is left out
    strong = next(
        k for k in range(1, 400) if poisson_upper(k, exp - 1 / cells) <= BUSY_GROUP_LEVEL / cells
    )
    h, c = fleet(7, strong)
    assert (n - 1, code, 7) in group_busy(
        [(n - 1, code, 7)], h, c, (pop, svc), np.full(n, cells)
    ).busy
    assert (0, code, 7) not in group_busy([(0, code, 7)], h, c, (pop, svc), np.full(n, cells)).busy
