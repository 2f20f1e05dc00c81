"""The focused host tests (issue 9): dyadic time windows, the two busiest CPUs, and a stopped
fault judged from a microcode change. Each rule with a case where it must fire and one where
it must not; the new p-values against exact enumeration and a simulated null."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from test_epi_placement import DAY, T0, background, crash, faulty

from corecensus.epidemiology import AnalysisParams, CrashTable, analyze
from corecensus.epidemiology.hostfocus import (
    PAIR,
    WINDOW,
    WINDOW_PAIR,
    WINDOW_PAIR_SHARE,
    distinct_windows,
    dyadic_windows,
)
from corecensus.epidemiology.hosttest import (
    pair_cell_pvalue,
    pair_pvalues,
    poisson_binomial_prefixes,
    statistic,
)


def busy_host(n: int = 200, seed: int = 7) -> list[dict[str, Any]]:
    """h150 crashing n times over 30 days on uniform CPUs (2 % anomalous): a busy host."""
    rng = np.random.default_rng(seed)
    days = rng.uniform(0, 30, n)
    cpus = rng.integers(0, 32, n)
    return [
        crash(
            "h150",
            float(d),
            int(c),
            pop=f"bg{i % 10}",
            anomalous=bool(rng.random() < 0.02),
            host_cpus=32,
        )
        for i, (d, c) in enumerate(zip(days, cpus, strict=True))
    ]


def run(rows: list[dict[str, Any]], **kw: Any) -> Any:
    return analyze(CrashTable.from_rows(rows), params=AnalysisParams(**kw))


def test_dyadic_windows_are_the_fixed_family() -> None:
    starts, ends = dyadic_windows(0, 800)
    # level 1: half the span every quarter; level 2: a quarter every eighth
    assert starts.tolist() == [0, 200, 400, 0, 100, 200, 300, 400, 500, 600]
    assert ends.tolist() == [400, 600, 801, 200, 300, 400, 500, 600, 700, 801]
    assert dyadic_windows(0, 800, 1)[0].size == 3


@pytest.mark.parametrize(("n", "cells"), [(5, 4), (6, 5), (7, 4)])
def test_pair_bound_is_never_below_the_exact_law(n: int, cells: int) -> None:
    """Every assignment of n crashes to the cells: P(S2 >= x) <= the union bound over pairs."""
    counts = np.zeros(n + 1)
    for assign in itertools.product(range(cells), repeat=n):
        per = np.bincount(assign, minlength=cells)
        top2 = int(np.sort(per)[-2:].sum())
        counts[top2] += 1
    exact_tail = np.cumsum(counts[::-1])[::-1] / cells**n
    bound = pair_cell_pvalue(n, np.arange(n + 1), cells)
    assert np.all(bound >= exact_tail - 1e-12)
    # and it is not vacuous where it matters: all n on two cells
    assert bound[n] < 0.2


def _pair_of(cells: np.ndarray, flags: np.ndarray, width: int) -> tuple[int, int]:
    """The pair test's inputs for one host: the two busiest cells (lowest index among ties,
    as hostlooks chooses them from the counts alone) and the anomalies on them."""
    per = np.bincount(cells, minlength=width)
    two = np.lexsort((np.arange(width), -per))[:2]
    return int(per[two].sum()), int(flags[np.isin(cells, two)].sum())


@pytest.mark.parametrize(("n", "cells", "a"), [(5, 4, 0.1), (4, 5, 0.2)])
def test_pair_pvalue_is_never_below_the_exact_null_probability(
    n: int, cells: int, a: float
) -> None:
    """Every outcome of a small host (CPU assignment and anomaly flags): the pair test's
    p-value is at least the exact null probability of a statistic as extreme."""
    outcomes = []
    for assign in itertools.product(range(cells), repeat=n):
        for flags in itertools.product((0, 1), repeat=n):
            f = np.array(flags)
            x, k = _pair_of(np.array(assign), f, cells)
            prob = cells**-n * a ** f.sum() * (1 - a) ** (n - f.sum())
            outcomes.append((prob, x, k, int(f.sum()) - k))
    arr = np.array(outcomes)
    law = poisson_binomial_prefixes(np.full(n, a), np.array([0]), cap=20)
    none = np.array([[1.0]])
    size = arr.shape[0]
    x, k, o = (arr[:, i].astype(int) for i in (1, 2, 3))
    score = statistic(n, x, k, o, n * a, 0.0, cells, cells=2).score
    p = pair_pvalues(np.full(size, n), x, k, o, law, none, np.full(size, cells))
    exact = np.array([arr[score <= t * (1 + 1e-9), 0].sum() for t in score])
    assert np.all(p >= exact - 1e-12)
    # and not vacuous: the most extreme outcomes are small
    assert p.min() < 0.01


def test_pair_pvalues_are_valid_on_a_null_fleet() -> None:
    rng = np.random.default_rng(11)
    hosts, n, cells = 4000, 9, 8
    assign = rng.integers(0, cells, (hosts, n))
    flags = rng.random((hosts, n)) < 0.05
    xk = np.array([_pair_of(assign[i], flags[i], cells) for i in range(hosts)])
    o = flags.sum(axis=1) - xk[:, 1]
    a = np.full(n * hosts, 0.05)
    law = poisson_binomial_prefixes(a, np.arange(0, n * hosts, n, dtype=np.int64), cap=20)
    none = np.ones((hosts, 1))
    p = pair_pvalues(np.full(hosts, n), xk[:, 0], xk[:, 1], o, law, none, np.full(hosts, cells))
    for alpha in (0.01, 0.05, 0.2):
        assert np.mean(p <= alpha) <= alpha * 1.2 + 0.003
    # two piles with their anomalies are found; without the anomalies they are not
    [strong] = pair_pvalues([n], [8], [4], [0], law[:1], none[:1], [cells])
    [plain] = pair_pvalues([n], [8], [0], [0], law[:1], none[:1], [cells])
    assert strong < 1e-5
    assert plain > 1e-3


def test_late_fault_on_a_busy_host_is_found_in_a_window() -> None:
    late = faulty("h150", 9, np.linspace(25, 29.5, 8), host_cpus=32)
    a = run(background() + busy_host() + late)
    assert a.flagged_hosts() == ("h150",)
    i = list(a.host_names).index("h150")
    assert a.scan.p_value[i] > AnalysisParams().host_alpha  # the whole data hides it
    assert a.scan.focus.test[i] == WINDOW
    [h] = [f for f in a.hosts if f.host == "h150"]
    assert h.cpu == 9
    assert any(r.startswith("In the window") and "on CPU 9" in r for r in h.reasons)
    assert any("CPUs 9 " in r for r in h.recommendations)
    # the fault is still going at the end: never a rescreen
    assert not h.recommendations[0].startswith("Rescreen")
    # the stream restarted in the windows alarms during the fault (the whole stream never)
    assert h.first_alarm_us is not None and T0 + 25 * DAY <= h.first_alarm_us <= T0 + 30 * DAY
    assert a.scan.focus.first_alarm_us[i] == h.first_alarm_us
    # without the focused tests it is not found
    assert run(background() + busy_host() + late, window_alpha=0.0).flagged_hosts() == ()


def test_late_crashes_spread_over_cpus_are_not_flagged_in_any_window() -> None:
    late = faulty("h150", 9, np.linspace(25, 29.5, 8), host_cpus=32)
    spread = [dict(r, cpu=(3 * i) % 32) for i, r in enumerate(late)]
    a = run(background() + busy_host() + spread)
    assert a.flagged_hosts() == ()
    i = list(a.host_names).index("h150")
    assert a.scan.focus.p_value[i] > AnalysisParams().window_alpha
    assert a.scan.focus.first_alarm_us[i] == -1 and a.scan.first_alarm_us[i] == -1


def test_two_cpus_that_only_stand_out_together_are_flagged_and_both_named() -> None:
    pair = [crash("h150", d, 4, host_cpus=32) for d in np.linspace(2, 28, 6)]
    pair += [crash("h150", d, 21, host_cpus=32) for d in np.linspace(3, 27, 6)]
    a = run(background() + pair)
    assert a.flagged_hosts() == ("h150",)
    i = list(a.host_names).index("h150")
    assert a.scan.p_value[i] > AnalysisParams().host_alpha  # neither CPU alone is enough
    assert a.scan.focus.test[i] == PAIR
    [h] = a.hosts
    assert any("The two busiest CPUs, 21 and 4" in r for r in h.reasons)
    assert any("CPUs 4, 21" in r for r in h.recommendations)
    assert run(background() + pair, window_alpha=0.0).flagged_hosts() == ()


def test_a_pair_test_with_every_crash_on_one_cpu_names_no_cpu_minus_one() -> None:
    """With no crash on a second CPU the pair's runner-up is -1, which the reason printed as a
    CPU ("The two busiest CPUs, 9 and -1")."""
    a = run(background() + faulty("h250", 9, np.linspace(2, 28, 8), host_cpus=32))
    [h] = [h for h in a.hosts if h.host == "h250"]  # a host of no background crash
    pair = [r for r in h.reasons if "union bound over pairs" in r]
    assert pair, h.reasons  # the pair test passed its share here: the reason is there
    assert all("and -1" not in r for r in h.reasons), pair
    assert pair[0].startswith("The busiest CPU, 9, holds 8 of 8 crashes with a known CPU")
    assert pair[0].endswith("no other CPU holds one: CPU 9 is bad.")


def test_pair_of_one_bad_cpu_and_a_healthy_one_names_only_the_bad() -> None:
    # one bad CPU: the pair test is significant too, but it adds nothing about CPU 21
    one = faulty("h150", 4, np.linspace(2, 28, 8), host_cpus=32)
    one += [crash("h150", 5.0, 21, host_cpus=32), crash("h150", 6.0, 21, host_cpus=32)]
    [h] = run(background() + one).hosts
    assert any("CPUs 4 " in r for r in h.recommendations)
    assert not any("21" in r for r in h.recommendations)


def test_busy_host_counts_the_anomalies_on_its_bad_cpu() -> None:
    """About 110 crashes: the whole-data test keeps the anomalies on the busiest CPU apart from
    the others (the (m, z, k, o) grid up to 160 crashes; the two-factor test it replaced above
    60 counted them only among the host's, p 0.04)."""
    bad = [
        crash("h150", d, 9, pop=f"bg{i}", anomalous=i < 5, host_cpus=32)
        for i, d in enumerate(np.linspace(1, 29, 8))
    ]
    a = run(background() + busy_host(90) + bad)
    assert a.flagged_hosts() == ("h150",)
    i = list(a.host_names).index("h150")
    assert 60 < a.scan.known_cpu[i] <= 160
    assert a.scan.p_value[i] <= AnalysisParams().host_alpha
    assert a.scan.top_cpu[i] == 9
    # the same anomalies on other CPUs: nothing
    spread = [dict(r, cpu=(7 * j + 2) % 32) for j, r in enumerate(bad[:5])]
    b = run(background() + busy_host(90) + bad[5:] + spread)
    assert b.flagged_hosts() == ()
    assert b.scan.p_value[i] > 0.01


def test_late_two_cpu_fault_on_a_busy_host_is_found_by_the_windowed_pair() -> None:
    late = faulty("h150", 4, np.linspace(25, 29.5, 6), host_cpus=32)
    late += faulty("h150", 21, np.linspace(25.3, 29.2, 6), host_cpus=32)
    a = run(background() + busy_host() + late)
    assert a.flagged_hosts() == ("h150",)
    i = list(a.host_names).index("h150")
    assert a.scan.p_value[i] > AnalysisParams().host_alpha  # the whole data hides it
    assert a.scan.focus.test[i] == WINDOW_PAIR
    [h] = a.hosts
    assert any(r.startswith("In the window") and "the two busiest CPUs" in r for r in h.reasons)
    assert any("CPUs 4, 21" in r for r in h.recommendations)
    # the same late crashes spread over the CPUs: no window, no pair
    spread = [dict(r, cpu=(3 * j) % 32) for j, r in enumerate(late)]
    b = run(background() + busy_host() + spread)
    assert b.flagged_hosts() == ()
    assert b.scan.focus.p_value[i] > AnalysisParams().window_alpha


def test_second_bad_cpu_with_three_crashes_is_named() -> None:
    """The step-down names cells after the first at NAME_ALPHA (0.01): a second bad CPU with 3
    crashes, 2 of them anomalous (p 0.0016 among the cells left) is named; a CPU with 2
    ordinary crashes is not (test_pair_of_one_bad_cpu_and_a_healthy_one_names_only_the_bad)."""
    two = faulty("h150", 4, np.linspace(2, 28, 8), host_cpus=32)
    two += [crash("h150", d, 21, anomalous=d < 20, host_cpus=32) for d in (5.0, 12.0, 22.0)]
    [h] = run(background() + two).hosts
    assert any("CPU 4 with 8" in r and "CPU 21 with 4" in r for r in h.reasons)
    assert any("CPUs 4, 21" in r for r in h.recommendations)


def _quiet_after(change: bool) -> list[dict[str, Any]]:
    """Six faulty crashes from day 2 to day 11.2, then quiet to day 30: the chance of so long a
    quiet stretch under a constant rate is 0.0038, above 0.001 (no change seen); of none after
    a microcode change seen on day 12, 0.0058, below 0.05."""
    rows = [r for r in background() if r["host"] != "h150"]
    later_code = "0x11" if change else "0x10"
    stopped = faulty("h150", 9, np.linspace(2, 11.2, 6), microcode="0x10")
    later = [crash("h150", d, int(d) % 32, microcode=later_code) for d in (12, 18, 22, 25)]
    later.append(crash("h000", 30.0, 1, microcode="0x10"))  # the data end on day 30
    return rows + stopped + later


def test_quiet_across_a_microcode_change_is_a_stop() -> None:
    [h] = run(_quiet_after(change=True)).hosts
    # anchored at the change, seen in the host's crash on day 12: (10 / 28) ** 5 = 0.0058
    assert any(
        "stopped (no suspect crash since the change first seen" in r and "probability 0.0058" in r
        for r in h.reasons
    )
    assert any(
        r.startswith("Microcode changed from 0x10 to 0x11 after they stopped, first seen")
        and r.endswith("in its crashes.")
        for r in h.reasons
    )
    assert h.recommendations[0].startswith("Rescreen h150")


def test_the_same_quiet_stretch_without_a_change_is_not_a_stop() -> None:
    [h] = run(_quiet_after(change=False)).hosts
    assert any("still going at the end of the data" in r for r in h.reasons)
    assert any(r.startswith("Take the CPU out on h150") for r in h.recommendations)


def test_windows_that_cannot_add_anything_give_their_share_to_the_others() -> None:
    """Per host: windows with fewer than 3 crashes with a known CPU, or holding every crash
    of the host, are not tested; windows with the same crashes count once."""
    n_win = 4
    # one host slot, four windows: crashes (segment, time)
    seg = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 3], dtype=np.int64)
    t = np.array([5, 6, 7, 5, 6, 7, 8, 5, 6, 5, 6, 7], dtype=np.int64)
    known = np.array([3, 4, 2, 3])
    tested, distinct = distinct_windows(seg, t, known, np.array([5]), n_win)
    # window 2 has 2 crashes; windows 0 and 3 hold the same three crashes (times 5-7)
    assert tested.tolist() == [True, True, False, True]
    assert distinct.tolist() == [2]
    # a window holding every crash of the host is the whole-data test itself
    tested, distinct = distinct_windows(seg, t, known, np.array([4]), n_win)
    assert tested.tolist() == [True, False, False, True]
    assert distinct.tolist() == [1]
    # crashes without a known CPU count toward the crash set, not toward the three needed
    tested, _ = distinct_windows(seg, t, np.array([2, 4, 2, 3]), np.array([5]), n_win)
    assert tested.tolist() == [False, True, False, True]


def _late_pair(cpus: tuple[int, ...]) -> list[dict[str, Any]]:
    """A host of its own: one ordinary crash on day 3, then five in the last ten days on ``cpus`` (the
    two-cpus simulator's seed-19 host: three on one CPU, two anomalous ones on another)."""
    rows = [crash("late", 3.0, 10, pop="bg3", host_cpus=32)]
    days = (20.5, 23.3, 25.9, 26.1, 28.2)
    anomalous = (False, True, False, False, True)
    rows += [
        crash("late", d, c, pop=f"bg{i + 4}", anomalous=an, host_cpus=32)
        for i, (d, c, an) in enumerate(zip(days, cpus, anomalous, strict=True))
    ]
    return rows


def test_few_late_crashes_on_two_cpus_are_found_in_their_few_windows() -> None:
    """Five late crashes on CPUs 4 and 21 fill 3 of the 10 windows with at least 3 crashes: the
    windowed pair test there is p ~ 3e-6, over a tenth of its share (1.25e-6) and under a
    third (4.2e-6)."""
    rows = background() + _late_pair((4, 21, 4, 4, 21))
    a = run(rows)
    assert a.flagged_hosts() == ("late",)
    i = list(a.host_names).index("late")
    f = a.scan.focus
    alpha = AnalysisParams().window_alpha
    assert a.scan.p_value[i] > AnalysisParams().host_alpha
    assert f.test[i] == WINDOW_PAIR
    assert alpha * WINDOW_PAIR_SHARE / f.windows < f.raw_p[i] <= alpha * f.share[i]
    assert f.tested[i] < f.windows
    [h] = a.hosts
    assert any("CPUs 4, 21" in r for r in h.recommendations)
    assert any("distinct windows with at least 3 crashes" in r for r in h.reasons)


def test_few_late_crashes_spread_over_cpus_are_not_flagged() -> None:
    a = run(background() + _late_pair((4, 21, 7, 12, 30)))
    assert a.flagged_hosts() == ()


def test_focused_family_keeps_its_budget_on_a_null_fleet_of_small_hosts() -> None:
    """3,000 hosts with 4-8 crashes each at random times on 8 CPUs, 5 % anomalous: the share
    of hosts the focused family flags is at most window_alpha (here 0.02, to be measurable),
    with the windows' shares split over each host's distinct windows."""
    rng = np.random.default_rng(5)
    rows = []
    for h in range(3000):
        for j in range(int(rng.integers(4, 9))):
            rows.append(
                crash(
                    f"n{h:04d}",
                    float(rng.uniform(0, 30)),
                    int(rng.integers(8)),
                    pop=f"bg{j % 10}",
                    anomalous=bool(rng.random() < 0.05),
                    host_cpus=8,
                )
            )
    a = run(rows, host_alpha=1e-12, window_alpha=0.02)
    focus = a.scan.focus
    flagged = np.mean(focus.p_value <= 0.02)
    assert flagged <= 0.02
    # and the windows were tested at all (their shares over fewer than ten windows)
    assert (focus.test == WINDOW).sum() > 0 and focus.tested[focus.test == WINDOW].max() < 10


def test_two_cpus_with_two_anomalous_crashes_each_are_named_when_the_host_test_flags_too() -> None:
    """Two crashes on each of CPUs 17 and 20 of 32, all four anomalous: the whole-data test
    flags the host (p ~ 4e-6) but names no CPU (the busiest alone holds 2 of 5); the pair test
    is far more extreme against its own level, so both are named. One bad CPU with a healthy
    runner-up keeps one name (test_pair_of_one_bad_cpu_and_a_healthy_one_names_only_the_bad)."""
    days_cpus = [(5.0, 3, False), (10.0, 17, True), (14.0, 20, True), (18.0, 17, True)]
    days_cpus.append((22.0, 20, True))
    rows = background() + [
        crash("two", d, c, pop=f"bg{i}", anomalous=an, host_cpus=32)
        for i, (d, c, an) in enumerate(days_cpus)
    ]
    a = run(rows)
    assert a.flagged_hosts() == ("two",)
    i = list(a.host_names).index("two")
    assert a.scan.p_value[i] <= AnalysisParams().host_alpha
    assert a.scan.focus.test[i] in (PAIR, WINDOW_PAIR)
    [h] = a.hosts
    assert any("CPUs 17, 20" in r for r in h.recommendations)


def test_one_strong_bad_cpu_and_a_runner_up_with_one_crash_names_only_the_bad() -> None:
    """Fourteen crashes on CPU 13, half anomalous, one on CPU 7: the pair test's sum holds the
    bad CPU's crashes, so it is more extreme than the one-cell test (whose exact law bottoms out
    near 1e-19); CPU 7 is still not named (a CPU with one crash never is)."""
    one = faulty("solo", 13, np.linspace(2, 28, 14), host_cpus=32)
    one.append(crash("solo", 6.0, 7, host_cpus=32))
    a = run(background() + one)
    i = list(a.host_names).index("solo")
    focus = a.scan.focus
    assert focus.test[i] in (PAIR, WINDOW_PAIR)
    alpha = AnalysisParams()
    assert focus.p_value[i] / alpha.window_alpha < a.scan.p_value[i] / alpha.host_alpha
    [h] = a.hosts
    assert any("CPUs 13 " in r for r in h.recommendations)
    assert not any("CPUs 7" in r or ", 7" in r for r in h.recommendations)


def test_a_lone_crash_before_the_epoch_is_analyzed() -> None:
    table = CrashTable.from_rows(
        [{"host": "h", "population": "p", "time_us": -5, "cpu": 3, "host_cpus": 16}]
    )
    assert analyze(table).to_json()["crashes"] == 1
