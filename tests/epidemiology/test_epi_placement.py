"""Host verdicts that hold on real fleets (issue 9): CPU sets, pinning, crash loops, SMT,
several bad CPUs, shared defects and faults that stop. Each rule on a small deterministic
fleet, with the case where it must fire and the case where it must not."""

from __future__ import annotations

from typing import Any

import numpy as np

from corecensus.cpulist import canonical_cpu_list, parse_cpu_list
from corecensus.epidemiology import AnalysisParams, CrashTable, HostKind, PopulationVerdict, analyze
from corecensus.epidemiology.loops import find_bursts
from corecensus.epidemiology.placement import place_crashes

DAY = 86_400_000_000
T0 = 1_717_200_000 * 1_000_000
SP8 = ("sp_off_by_8",)
N_HOSTS = 200


def background(seed: int = 3, *, facts: bool = True) -> list[dict[str, Any]]:
    """200 hosts of 32 CPUs, 1,000 ordinary crashes over 30 days in 10 signatures, 2 %
    anomalous, service ``api``."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(1000):
        h = int(rng.integers(N_HOSTS))
        row: dict[str, Any] = {
            "host": f"h{h:03d}",
            "population": f"bg{int(rng.integers(10))}",
            "time_us": T0 + int(rng.uniform(0, 30) * DAY),
            "cpu": int(rng.integers(32)),
            "service": "api",
            "anomalies": SP8 if rng.random() < 0.02 else (),
            "microcode": "0x10",
        }
        if facts:
            row["host_cpus"] = 32
        rows.append(row)
    return rows


def crash(
    host: str,
    day: float,
    cpu: int,
    *,
    pop: str = "bg1",
    anomalous: bool = False,
    service: str = "api",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "host": host,
        "population": pop,
        "time_us": T0 + int(day * DAY),
        "cpu": cpu,
        "service": service,
        "anomalies": SP8 if anomalous else (),
        **extra,
    }


def faulty(host: str, cpu: int, days: Any, **extra: Any) -> list[dict[str, Any]]:
    """Crashes of a bad CPU in rotating signatures, every other one anomalous."""
    return [
        crash(host, d, cpu, pop=f"bg{i % 10}", anomalous=i % 2 == 0, **extra)
        for i, d in enumerate(days)
    ]


def flagged(rows: list[dict[str, Any]], **kw: Any) -> tuple[str, ...]:
    return analyze(CrashTable.from_rows(rows), params=AnalysisParams(**kw)).flagged_hosts()


def test_cpu_lists_parse_and_canonicalize() -> None:
    assert parse_cpu_list("0-3,8, 10-11") == (0, 1, 2, 3, 8, 10, 11)
    assert canonical_cpu_list("3,0-2,8,9") == "0-3,8-9"


def test_bad_cpu_is_found_when_the_host_says_how_many_cpus_it_has() -> None:
    rows = background() + faulty("h150", 11, np.linspace(5, 28, 7), host_cpus=32)
    assert flagged(rows) == ("h150",)


def test_small_host_is_not_tested_as_big_as_its_model() -> None:
    """A 2-CPU host without facts, its model shared with 64-CPU hosts that crash on CPU 63:
    its crashes are over at most 2 CPUs (the largest index it showed), never 64."""
    rows = background(facts=False)
    for r in rows:
        r["cpu_model"] = "big"
    rows.append(crash("h001", 3, 63, cpu_model="big"))
    rows += [crash("small", d, 1, pop=f"bg{d % 10}", cpu_model="big") for d in range(1, 8)]
    rows += [crash("small", 9, 0, cpu_model="big")]
    assert flagged(rows) == ()
    a = analyze(CrashTable.from_rows(rows))
    assert int(a.scan.cpus[a.host_names.index("small")]) == 2  # type: ignore[union-attr]
    # the same crashes on a host known to have 64 CPUs are a pile-up, with anomalies a flag
    rows_known = [dict(r, host_cpus=64) if r["host"] == "small" else r for r in rows]
    for r in rows_known[-8:-1:2]:
        r["anomalies"] = SP8
    assert flagged(rows_known) == ("small",)


def test_pinned_crashes_say_nothing_about_their_cpu() -> None:
    base = background()
    pinned = [crash("h042", d, 5, pop="pin-bug", cpus_allowed="5") for d in range(1, 30, 3)]
    assert flagged(base + pinned) == ()
    a = analyze(CrashTable.from_rows(base + pinned))
    assert a.population("pin-bug").verdict is not PopulationVerdict.HARDWARE
    # the same crashes from a process allowed all 32 CPUs are a pile-up worth flagging
    loose = [
        dict(r, cpus_allowed="0-31", anomalies=SP8 if i % 3 == 0 else ())
        for i, r in enumerate(pinned)
    ]
    assert flagged(base + loose) == ("h042",)


def test_small_cpuset_is_the_null_law() -> None:
    base = background()
    cpuset = [crash("h042", d, 2 + d % 2, cpus_allowed="2-3") for d in range(1, 30, 3)]
    assert flagged(base + cpuset) == ()
    # a bad CPU inside the cpuset still shows, with its anomalies, against 2 cells (not 32)
    bad = [
        crash("h042", d, 2, cpus_allowed="0-3", anomalous=i % 2 == 0)
        for i, d in enumerate(range(1, 30, 2))
    ]
    assert flagged(base + bad) == ("h042",)


def test_service_pinned_on_many_hosts_without_the_fact() -> None:
    """No Cpus_allowed_list recorded: a service whose crashes sit on one CPU of each of its
    hosts is pinned somewhere; its crashes there lose their CPU (an anomaly-heavy bug)."""
    base = background()
    pinned = []
    for j, h in enumerate(range(10, 22)):
        pinned += [
            crash(
                f"h{h:03d}",
                d + j / 10,
                j % 32,
                pop="pin-bug",
                service="pinned",
                anomalous=d % 2 == 0,
            )
            for d in range(2, 29, 5)
        ]
    a = analyze(CrashTable.from_rows(base + pinned))
    assert a.flagged_hosts() == ()
    assert a.population("pin-bug").verdict is PopulationVerdict.SOFTWARE
    # a bad CPU under a service that is not pinned anywhere is still found without the fact
    assert flagged(base + faulty("h150", 11, np.linspace(5, 28, 7))) == ("h150",)


def test_crash_loop_is_one_event_and_reported_as_a_loop() -> None:
    base = background()
    loop = [
        crash("h077", 12 + i * 20 / 86_400, 7, pop="loop-bug", anomalous=i % 5 == 0)
        for i in range(120)
    ]
    a = analyze(CrashTable.from_rows(base + loop))
    assert a.flagged_hosts() == ()
    assert a.flagged_hosts(HostKind.CRASH_LOOP) == ("h077",)
    assert a.population("loop-bug").verdict is not PopulationVerdict.HARDWARE
    [finding] = [h for h in a.hosts if h.kind is HostKind.CRASH_LOOP]
    assert finding.crashes == 120 and "CPU 7" in finding.reasons[0]
    # the same number of crashes a day apart is no loop (and, on one CPU, a bad CPU)
    spread = [dict(r, time_us=T0 + i * DAY // 4) for i, r in enumerate(loop[:8])]
    a = analyze(CrashTable.from_rows(base + spread))
    assert a.flagged_hosts(HostKind.CRASH_LOOP) == ()
    assert a.flagged_hosts() == ("h077",)


def test_faulty_core_seen_on_both_smt_siblings() -> None:
    base = background()
    for r in base:
        r["cpu_core"] = r["cpu"] % 16  # 16 cores, siblings i and i + 16
    bad = [
        crash(
            "h150",
            d,
            3 if i % 2 else 19,
            pop=f"bg{i}",
            anomalous=i % 3 == 0,
            cpu_core=3,
            host_cpus=32,
        )
        for i, d in enumerate(np.linspace(4, 28, 6))
    ]
    a = analyze(CrashTable.from_rows(base + bad))
    assert a.flagged_hosts() == ("h150",)
    [h] = a.hosts
    assert any("logical CPUs seen: 3, 19" in r for r in h.recommendations)
    assert any("whole physical core" in r for r in h.recommendations)
    # the same crashes without core facts split 3 / 3 over two CPUs: not enough for a flag
    plain = [{k: v for k, v in r.items() if k != "cpu_core"} for r in base + bad]
    assert flagged(plain) == ()


def test_two_bad_cpus_are_both_named() -> None:
    rows = background()
    rows += faulty("h150", 4, np.linspace(2, 28, 8), host_cpus=32)
    rows += faulty("h150", 21, np.linspace(3, 27, 6), host_cpus=32)
    a = analyze(CrashTable.from_rows(rows))
    [h] = a.hosts
    assert h.host == "h150"
    assert any("CPU 4 with 8" in r and "CPU 21 with" in r for r in h.reasons)
    assert any("CPUs 4, 21" in r for r in h.recommendations)
    # one bad CPU: only it is named
    one = background() + faulty("h150", 4, np.linspace(2, 28, 8), host_cpus=32)
    [h] = analyze(CrashTable.from_rows(one)).hosts
    assert any("CPUs 4 " in r for r in h.recommendations)


def test_shared_defect_is_not_explained_away() -> None:
    """Five hosts with one bad CPU each, crashing in the same signature with anomalies (a bad
    stepping failing the same code): anomalies on one CPU per host do not explain each other
    away; a wild-pointer bug on random CPUs of many hosts still does."""
    rows = background()
    shared = []
    for j, h in enumerate((20, 40, 60, 80, 100)):
        shared += [
            crash(f"h{h:03d}", d, j + 3, pop="stepping", anomalous=i != 1)
            for i, d in enumerate(np.linspace(3 + j, 27, 4))
        ]
    a = analyze(CrashTable.from_rows(rows + shared))
    assert set(a.flagged_hosts()) == {"h020", "h040", "h060", "h080", "h100"}
    rng = np.random.default_rng(5)
    wild = [
        crash(
            f"h{h:03d}",
            float(rng.uniform(0, 30)),
            int(rng.integers(32)),
            pop="wild",
            anomalous=True,
        )
        for h in range(20, 40)
        for _ in range(4)
    ]
    a = analyze(CrashTable.from_rows(rows + wild))
    assert a.flagged_hosts() == ()
    assert a.population("wild").verdict is PopulationVerdict.SOFTWARE


def test_fault_that_stopped_gets_a_rescreen_not_a_denylist() -> None:
    rows = background()
    for r in rows:  # the microcode update reached h150 on day 10
        if r["host"] == "h150" and r["time_us"] > T0 + 10 * DAY:
            r["microcode"] = "0x11"
    stopped = faulty("h150", 9, np.linspace(2, 8, 8), microcode="0x10")
    later = [crash("h150", d, int(d) % 32, microcode="0x11") for d in (12, 18, 25)]
    a = analyze(CrashTable.from_rows(rows + stopped + later))
    [h] = a.hosts
    assert any("stopped" in r for r in h.reasons)
    assert any(
        r.startswith("Microcode changed from 0x10 to 0x11 after they stopped, first seen")
        and r.endswith("in its crashes.")
        for r in h.reasons
    )
    assert h.recommendations[0].startswith("Rescreen h150")
    assert not any("Take" in r for r in h.recommendations)
    # still going: denylist
    going = faulty("h150", 9, np.linspace(2, 29, 8))
    [h] = analyze(CrashTable.from_rows(rows + going)).hosts
    assert any("still going" in r for r in h.reasons)
    assert any(r.startswith("Take the CPU out on h150") for r in h.recommendations)


def test_placement_rules_directly() -> None:
    host = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    cpu = np.array([5, 5, 6, 1, 2, 3, 40, 1])
    allowed = np.array([0, 0, 1, -1, -1, -1, -1, -1])
    p = place_crashes(
        host=host,
        cpu=cpu,
        service=np.zeros(8, dtype=np.int64),
        n_hosts=3,
        host_cpus=np.array([0, 16, 0]),
        cpus_allowed=allowed,
        cpus_allowed_sets=("5", "0-7"),
    )
    # host 0: two pinned crashes lose their CPU; the third counts over its 8 allowed CPUs
    assert p.cell.tolist() == [-1, -1, 6, 1, 2, 3, 40, 1]
    # host 2 has no facts: CPU 40 seen, 41 rounded down to 32 (a lower bound either way)
    assert p.cells.tolist() == [8, 16, 32]
    assert p.cells_source.tolist() == [0, 1, 2]
    assert p.pinned.tolist() == [2, 0, 0]


def test_a_steady_crash_stream_is_not_a_loop() -> None:
    """A busy host crashing one signature every ~12 minutes all month chains into bursts by the
    gap rule, but that is its rate: folded for the host tests, not reported as a loop."""
    rng = np.random.default_rng(9)
    steady = [
        crash("h077", float(d), int(rng.integers(32)), pop="steady")
        for d in np.sort(rng.uniform(0, 30, 3600))
    ]
    a = analyze(CrashTable.from_rows(background() + steady))
    assert a.flagged_hosts(HostKind.CRASH_LOOP) == ()
    assert a.flagged_hosts() == ()


def nightly_loops(host: str, cpu: int, nights: int, pops: list[str]) -> list[dict[str, Any]]:
    """A loop of 8 crashes 15 s apart at 03:00 each night, the first on ``cpu`` (where the
    scheduler starts a process on an idle host), the restarts spread over other CPUs."""
    return [
        crash(host, n + 3 / 24 + i * 15 / 86_400, cpu if i == 0 else (cpu + 3 * i) % 32,
              pop=pops[n % len(pops)], service="report-cron")
        for n in range(nights)
        for i in range(8)
    ]  # fmt: skip


def test_a_loop_that_recurs_every_night_is_one_event() -> None:
    """bench/fleet_adversary.py, *loops*: a cron job dying at start every night began each loop
    on the same CPU; counted loop by loop that was 20 crashes on one of 32 CPUs."""
    base = background()
    a = analyze(CrashTable.from_rows(base + nightly_loops("h042", 3, 20, ["cron-bug"])))
    assert a.flagged_hosts() == ()
    assert set(a.flagged_hosts(HostKind.CRASH_LOOP)) == {"h042"}  # each night's loop listed
    assert a.population("cron-bug").verdict is not PopulationVerdict.HARDWARE
    # loops of different populations are different faults: each stays an event, and 20 of
    # them starting on one CPU are that CPU's doing
    pops = [f"nightly{n}" for n in range(20)]
    assert analyze(
        CrashTable.from_rows(base + nightly_loops("h042", 3, 20, pops))
    ).flagged_hosts() == ("h042",)


def poller_fleet() -> list[dict[str, Any]]:
    """A poller pinned to one CPU of each of 12 hosts, no allowed list recorded, an ordinary
    bug: 4 crashes a host."""
    return [
        crash(f"h{h:03d}", d + j / 10, (3 * j) % 32, pop=f"poll{d % 3}", service="poller")
        for j, h in enumerate(range(10, 22))
        for d in range(3, 29, 7)
    ]


def test_pinned_service_moved_while_its_cpu_was_offline() -> None:
    """bench/fleet_adversary.py, *recall*: a pinned poller whose CPU was offline for a few days
    (hotplug; a resized VM) crashed elsewhere meanwhile. Required to fit all in one window, its
    crashes on its own CPU counted as a pile-up on a healthy host."""
    base = background() + poller_fleet()
    moved = [
        crash("h150", d, 21, pop=f"poll{i % 3}", service="poller")
        for i, d in enumerate(range(2, 29, 3))
    ]
    moved += [crash("h150", 12.5, 5, pop="poll1", service="poller"),
              crash("h150", 13.5, 2, pop="poll2", service="poller")]  # fmt: skip
    assert flagged(base + moved) == ()
    # a bad CPU under the same service, its other crashes spread over the host, is no window:
    # 7 of 11 crashes on CPU 21, the rest on four other CPUs
    bad = [dict(r, service="poller") for r in faulty("h150", 21, np.linspace(5, 28, 7))]
    bad += [
        crash("h150", d, cpu, service="poller") for d, cpu in ((3, 2), (9, 8), (15, 27), (20, 14))
    ]
    assert flagged(base + bad) == ("h150",)


def test_confined_window_counts_and_chance_against_enumeration() -> None:
    from itertools import product

    from corecensus.epidemiology.placement import _busiest_window, _confined_need, _window_chance
    from corecensus.epidemiology.segments import Groups

    rng = np.random.default_rng(5)
    group = rng.integers(0, 40, 400)
    cpu = rng.integers(0, 24, 400)
    g = Groups.of(group)
    best, start, top = _busiest_window(g, cpu, 4)
    for i, key in enumerate(g.keys.tolist()):
        mine = cpu[group == key]
        counts = [int(np.count_nonzero((mine >= s) & (mine < s + 4))) for s in range(24)]
        assert best[i] == max(counts) and start[i] == min(m for m in mine if counts[m] == best[i])
        assert top[i] == int(np.bincount(mine).max())  # the busiest single CPU (rule 3c)
    # the chance is at least the exact probability (the fleet-level test stays conservative)
    cells, w = 6, 3
    for k in (2, 3, 4, 5):
        need = int(_confined_need(np.array([k]))[0])
        hits = sum(
            max(sum(s <= x < s + w for x in seq) for s in range(cells)) >= need
            for seq in product(range(cells), repeat=k)
        )
        chance = float(_window_chance(np.array([k]), np.array([need]), np.array([cells]), w)[0])
        exact = hits / cells**k
        assert chance >= exact - 1e-12
        if need == k:
            assert abs(chance - exact) < 1e-12


def test_odd_cpuset_over_smt_siblings_is_not_half_and_half() -> None:
    """bench/fleet_adversary.py, *cpusets*: a busy service in cpuset 20-22 of a host whose
    siblings are adjacent (cores 10, 10, 11) puts 2/3 of its crashes on core 10 by chance;
    tested over ceil(3 / 2) = 2 even cores, 160 of 240 there were a bad core."""
    base = background()
    busy = [
        crash("h150", d, cpu, pop=f"bg{i % 10}", cpus_allowed="20-22", cpu_core=cpu // 2,
              host_cpus=32)
        for i, (d, cpu) in enumerate(zip(np.linspace(1, 29, 240), [20, 21, 22] * 80, strict=True))
    ]  # fmt: skip
    assert flagged(base + busy) == ()
    # a bad core in a 4-CPU set (two whole cores) is still found: 30 crashes on its two
    # siblings, every other one anomalous, 3 on the other core
    bad = [
        crash("h150", d, 20 + i % 2, pop=f"bg{i % 10}", anomalous=i % 2 == 0,
              cpus_allowed="20-23", cpu_core=10, host_cpus=32)
        for i, d in enumerate(np.linspace(1, 29, 30))
    ] + [crash("h150", d, 22, cpus_allowed="20-23", cpu_core=11, host_cpus=32) for d in (4, 14, 24)]  # fmt: skip
    assert flagged(base + bad) == ("h150",)


def test_a_recurring_loop_folds_its_nights_too_short_to_report() -> None:
    """bench/fleet_adversary.py, *loops*: a nightly loop of 5 crashes is not reported on its
    own (the pair crashes densely all month); once one night's loop is, every loop-sized burst
    of that pair is the same fault."""
    nights = nightly_loops("h042", 3, 20, ["cron-bug"])
    short = [r for i, r in enumerate(nights) if i % 8 < 5 or i < 24]  # 8 crashes 3 nights, 5 after
    a = analyze(CrashTable.from_rows(background() + short))
    assert a.flagged_hosts() == ()
    # bursts below a loop's size stay events night by night (2 crashes of the same pair each
    # night after the 3 loops): the rule folds loops, not every burst of a looping pair
    small = [r for i, r in enumerate(nights) if i < 24 or i % 8 < 2]

    def events(rows: list[dict[str, Any]]) -> int:
        t = CrashTable.from_rows(rows)
        return int(
            find_bursts(
                host=t.host.codes,
                service=t.service.codes,
                population=t.population.codes,
                time_us=t.time_us,
                cpu=t.cpu,
                gap_us=1800 * 1_000_000,
                min_crashes=5,
            ).event.sum()
        )

    assert events(short) == 1
    assert events(small) == 1 + 17


def cpuset_fleet(*, told_hosts: int = 20, busy_fault: bool = False) -> list[dict[str, Any]]:
    """The background, plus service ``kube`` in a 6-CPU cpuset on hosts that say so
    (``cpus_allowed`` and 32 host CPUs; ``told_hosts`` of them, 3 crashes each), and on
    h150, whose crashes do not say so, a busy ``kube`` (60 crashes) in cpuset 20-25 moved to
    2-7 mid-month; with ``busy_fault`` h150's CPU 22 is also faulty (its ``api`` crashes)."""
    rows = background()
    rng = np.random.default_rng(8)
    for j in range(told_hosts):
        h = f"h{100 + j:03d}"
        rows += [
            crash(h, float(rng.uniform(0, 30)), 8 + int(rng.integers(6)), service="kube",
                  pop="kube-bug", cpus_allowed="8-13", host_cpus=32)
            for _ in range(3)
        ]  # fmt: skip
    for _ in range(60):
        day = float(rng.uniform(0, 30))
        first = 20 if day < 14 else 2
        rows.append(
            crash("h150", day, first + int(rng.integers(6)), service="kube", pop="kube-bug",
                  host_cpus=32)
        )  # fmt: skip
    if busy_fault:
        rows += faulty("h150", 22, np.linspace(3, 29, 8), host_cpus=32)
    return rows


def test_a_service_in_cpusets_on_the_hosts_that_say_so_is_confined_where_they_do_not() -> None:
    """A 6-CPU cpuset, moved mid-month, is wider than rule 3's window and two windows in all:
    without hosts that report the service's allowed set its crashes pile up on the host; with
    them it is known to run in cpusets, and h150's kube crashes lose their CPU."""
    assert flagged(cpuset_fleet(told_hosts=0)) == ("h150",)
    assert flagged(cpuset_fleet()) == ()
    rows = cpuset_fleet()
    a = analyze(CrashTable.from_rows(rows))
    api = sum(1 for r in rows if r["host"] == "h150" and r["service"] == "api")
    assert a.scan is not None and int(a.scan.known_cpu[a.host_names.index("h150")]) == api
    # a bad CPU inside the cpuset still shows through the host's other crashes on it
    assert flagged(cpuset_fleet(busy_fault=True)) == ("h150",)


def test_a_service_confined_on_some_hosts_only_keeps_its_cpu_elsewhere() -> None:
    """Rule 3b needs the service confined on 90 % of the hosts that report: one confined on
    half of them (a NUMA binding on some hosts) keeps its CPUs where the fact is missing."""
    host = np.repeat(np.arange(11), 4)
    cpu = np.tile(np.array([1, 2, 3, 4]), 11)
    allowed = np.where(host < 10, np.where(host % 2 == 0, 0, 1), -1)
    kw: dict[str, Any] = {
        "host": host,
        "cpu": cpu,
        "service": np.zeros(host.size, dtype=np.int64),
        "n_hosts": 11,
        "host_cpus": np.full(11, 32),
        "cpus_allowed": allowed,
    }
    half = place_crashes(**kw, cpus_allowed_sets=("0-15", "0-31"))
    assert half.inferred[10] == 0 and (half.cell[host == 10] >= 0).all()
    every = place_crashes(**kw, cpus_allowed_sets=("0-15", "0-7"))
    assert every.inferred[10] == 4 and (every.cell[host == 10] == -1).all()
    # two hosts that say so are not enough
    three = np.isin(host, [0, 2, 10])
    few = place_crashes(
        host=host[three],
        cpu=cpu[three],
        service=np.zeros(int(three.sum()), dtype=np.int64),
        n_hosts=11,
        host_cpus=np.full(11, 32),
        cpus_allowed=allowed[three],
        cpus_allowed_sets=("0-15", "0-7"),
    )
    assert few.inferred[10] == 0


def numa_host(split: bool = False, fault: bool = False) -> list[dict[str, Any]]:
    """The background, plus h160 (32 CPUs, no allowed set recorded) running ``db`` bound to
    its second socket: CPUs 16-31, or 8-15 and 24-31 under split SMT numbering; 200 crashes
    spread evenly there. With ``fault``, its CPU 24 fails in the last 4 days (10 crashes, half
    anomalous: on a host this busy a fault shows in a time window)."""
    rng = np.random.default_rng(4)
    socket = np.r_[8:16, 24:32] if split else np.arange(16, 32)
    rows = background()
    rows += [
        crash("h160", float(rng.uniform(0, 30)), int(rng.choice(socket)), service="db",
              pop=f"db{int(rng.integers(5))}", host_cpus=32)
        for _ in range(200)
    ]  # fmt: skip
    if fault:
        rows += faulty("h160", 24, np.linspace(26.5, 29.8, 10), service="db", host_cpus=32)
    return rows


def test_a_service_bound_to_one_numa_socket_is_tested_on_its_half() -> None:
    for split in (False, True):
        rows = numa_host(split)
        a = analyze(CrashTable.from_rows(rows))
        assert a.flagged_hosts() == ()
        i = a.host_names.index("h160")
        assert a.scan is not None and int(a.scan.cpus[i]) == 16
        # without the rule (one half of 32 cells is what rule 3c must recognise) the busiest
        # of its 16 CPUs is a pile-up against 32: the trap
        assert float(a.scan.p_cpu[i]) > 1e-3
        db = np.array([r["cpu"] for r in rows if r["host"] == "h160" and r["service"] == "db"])
        place = place_crashes(
            host=np.zeros(db.size, dtype=np.int64),
            cpu=db,
            service=np.zeros(db.size, dtype=np.int64),
            n_hosts=1,
            host_cpus=np.array([32]),
        )
        assert int(place.cells[0]) == 16 and int(place.cells_source[0]) == 4
    # a faulty CPU in the bound half is still found, against 16 cells
    a = analyze(CrashTable.from_rows(numa_host(fault=True)))
    assert a.flagged_hosts() == ("h160",)
    assert next(h for h in a.hosts if h.host == "h160").cpu == 24


def test_a_faulty_cpu_with_few_other_crashes_is_not_a_numa_half() -> None:
    """Nine crashes on the bad CPU 5 and nine elsewhere, all in the lower half: fewer than 10
    off the busiest CPU, so the host keeps its 32 cells; with 10 it would be bound."""
    for spread, cells in ((9, 32), (10, 16)):
        cpu = np.r_[np.full(9, 5), 6 + np.arange(spread)]
        p = place_crashes(
            host=np.zeros(cpu.size, dtype=np.int64),
            cpu=cpu,
            service=np.zeros(cpu.size, dtype=np.int64),
            n_hosts=1,
            host_cpus=np.array([32]),
        )
        assert int(p.cells[0]) == cells


def test_more_cores_than_pairs_of_cpus_are_tested_as_cpus() -> None:
    """A 2-CPU host without SMT reports cores 0 and 1: tested as floor(2 / 2) = 1 core its two
    crashes on two cores were impossible under the null (p = 0); it is tested over its CPUs.
    Two SMT siblings on one core stay at core level."""
    kw: dict[str, Any] = {
        "host": np.zeros(2, dtype=np.int64),
        "service": np.zeros(2, dtype=np.int64),
        "n_hosts": 1,
        "host_cpus": np.array([2]),
    }
    p = place_crashes(cpu=np.array([0, 1]), cpu_core=np.array([0, 1]), **kw)
    assert not p.core_level[0] and int(p.cells[0]) == 2 and p.cell.tolist() == [0, 1]
    sib = place_crashes(cpu=np.array([0, 1]), cpu_core=np.array([0, 0]), **kw)
    assert sib.core_level[0] and int(sib.cells[0]) == 1 and sib.cell.tolist() == [0, 0]
    rows = [
        crash("h007", 3, 0, anomalous=True, host_cpus=2, cpu_core=0, cpus_allowed="0-1"),
        crash("h007", 9, 1, host_cpus=2, cpu_core=1, cpus_allowed="0-1"),
    ]
    a = analyze(CrashTable.from_rows(background() + rows))
    assert a.scan is not None and float(a.scan.p_value[a.host_names.index("h007")]) > 0.01
