"""The analysis, on run records built by hand: consensus, classification, software suspects,
cross-core attribution and the quarantine decision. (The records are what workers emit; building
them directly lets a test state a 4-CPU or an 8-CPU host that this 2-CPU machine cannot be.)"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from corecensus.screening import (
    CpuInfo,
    GoldenValues,
    Outcome,
    ScreenVerdict,
    Topology,
    WorkerStatus,
)
from corecensus.screening.runner import Interrupted, WorkerOutcome
from corecensus.screening.verdict import analyze
from corecensus.screening.wire import RunRecord, RunStatus


def topo(
    n: int, *, model: str = "A", siblings: dict[int, tuple[int, ...]] | None = None
) -> Topology:
    siblings = siblings or {}
    return Topology(
        tuple(
            CpuInfo(
                cpu=c,
                vendor=model,
                family=6,
                model=1,
                stepping=1,
                thread_siblings=siblings.get(c, ()),
            )
            for c in range(n)
        )
    )


def run(
    cpu: int,
    check: str,
    *,
    ok: bool = True,
    fp: str = "good",
    round_: int = 0,
    attempt: int = 0,
    observed: str = "all matched",
) -> RunRecord:
    return RunRecord(
        cpu=cpu,
        check=check,
        round=round_,
        attempt=attempt,
        seed=round_ * 10 + attempt,
        status=RunStatus.PASSED if ok else RunStatus.FAILED,
        expected="x = 1",
        observed=observed if ok else f"x = {observed}",
        fingerprint=fp,
        detail="",
        seconds=0.01,
        cpu_seconds=0.01,
        ran_on=(cpu, cpu),
    )


def outcomes(cpus: Iterable[int], runs: Sequence[RunRecord]) -> dict[int, WorkerOutcome]:
    return {
        c: WorkerOutcome(
            cpu=c,
            status=WorkerStatus.COMPLETED,
            runs=tuple(r for r in runs if r.cpu == c),
            families=(("k", "fam"), ("crosscore", "cross-core")),
        )
        for c in cpus
    }


def decide_screen(n: int, runs: Sequence[RunRecord], checks: Sequence[str] = ("k",), **kw: object):  # type: ignore[no-untyped-def]
    t = kw.pop("topology", None) or topo(n)
    partners = kw.pop("partners", None) or {c: (c + 1) % n for c in range(n)}
    outs = kw.pop("outcomes", None) or outcomes(range(n), runs)
    return analyze(
        cpus=tuple(range(n)),
        checks=checks,
        topology=t,  # type: ignore[arg-type]
        outcomes=outs,  # type: ignore[arg-type]
        partners=partners,  # type: ignore[arg-type]
        scale=1.0,
        golden=kw.pop("golden", None),  # type: ignore[arg-type]
    )


def test_all_agree_is_clean() -> None:
    a = decide_screen(3, [run(c, "k", round_=r) for c in range(3) for r in range(2)])
    assert a.decision.verdict is ScreenVerdict.CLEAN
    assert all(r.outcome is Outcome.PASSED and r.runs == 2 for r in a.results)
    assert a.golden_candidates == {("A:6:1:1", "k", 1.0): "good"}


def test_majority_flags_the_odd_cpu_even_when_its_known_answers_held() -> None:
    runs = [
        run(c, "k", round_=r, fp="bad" if c == 2 else "good") for c in range(4) for r in range(2)
    ]
    a = decide_screen(4, runs)
    row = next(r for r in a.results if r.cpu == 2)
    assert row.outcome is Outcome.FAILED_REPRODUCIBLE
    assert "majority (3 of 4 CPUs" in row.detail
    assert a.decision.quarantine_cpus == (2,)
    assert a.decision.verdict is ScreenVerdict.QUARANTINE_CPUS


def test_one_disagreement_in_two_rounds_is_transient_and_asks_for_a_rescreen() -> None:
    runs = [
        run(c, "k", round_=r, fp="bad" if (c, r) == (1, 1) else "good")
        for c in range(3)
        for r in range(2)
    ]
    a = decide_screen(3, runs)
    assert next(r for r in a.results if r.cpu == 1).outcome is Outcome.FAILED_TRANSIENT
    assert a.decision.verdict is ScreenVerdict.RESCREEN
    assert a.decision.rescreen_cpus == (1,)
    assert a.decision.quarantine_cpus == ()


def test_known_answer_failure_then_passing_retry_is_transient() -> None:
    runs = [
        run(0, "k"),
        run(1, "k", ok=False, fp="x", observed="2"),
        run(1, "k", attempt=1, fp="y"),
    ]
    a = decide_screen(2, runs)
    row = next(r for r in a.results if r.cpu == 1)
    assert row.outcome is Outcome.FAILED_TRANSIENT
    assert (row.expected, row.observed) == ("x = 1", "x = 2")
    assert row.failures == 1 and row.runs == 2


def test_two_cpus_split_without_a_tie_breaker_is_inconclusive_for_both() -> None:
    a = decide_screen(2, [run(0, "k", fp="p"), run(1, "k", fp="q")])
    assert [r.outcome for r in a.results] == [Outcome.INCONCLUSIVE, Outcome.INCONCLUSIVE]
    assert a.decision.verdict is ScreenVerdict.RESCREEN
    assert a.decision.rescreen_cpus == (0, 1)
    assert a.golden_candidates == {}


def test_golden_value_breaks_a_two_cpu_tie() -> None:
    golden = GoldenValues({"A:6:1:1": {"k": {"scale=1": "p"}}})
    a = decide_screen(2, [run(0, "k", fp="p"), run(1, "k", fp="q")], golden=golden)
    assert [r.outcome for r in a.results] == [Outcome.PASSED, Outcome.FAILED_TRANSIENT]
    assert "golden value of model A:6:1:1" in a.results[1].detail


def test_known_answers_break_a_two_cpu_tie() -> None:
    runs = [
        run(0, "k", fp="p"),
        run(1, "k", ok=False, fp="q"),
        run(1, "k", ok=False, attempt=1, fp="r"),
    ]
    a = decide_screen(2, runs)
    assert [r.outcome for r in a.results] == [Outcome.PASSED, Outcome.FAILED_REPRODUCIBLE]
    assert a.decision.quarantine_cpus == (1,)


def test_host_agreeing_with_itself_but_not_with_golden_is_software() -> None:
    golden = GoldenValues({"A:6:1:1": {"k": {"scale=1": "old"}}})
    a = decide_screen(3, [run(c, "k", fp="new") for c in range(3)], golden=golden)
    assert all(r.outcome is Outcome.SOFTWARE_SUSPECT for r in a.results)
    assert a.decision.verdict is ScreenVerdict.SOFTWARE_SUSPECT
    assert a.decision.software_suspect_checks == ("k",)


def test_all_failing_the_same_way_is_software_but_differently_is_hardware() -> None:
    same = [
        run(c, "k", ok=False, fp="z", observed="0", attempt=a) for c in range(3) for a in (0, 1)
    ]
    a = decide_screen(3, same)
    assert a.decision.verdict is ScreenVerdict.SOFTWARE_SUSPECT
    assert a.decision.quarantine_cpus == ()
    assert "failed the same way on all 3 CPUs" in a.results[0].detail
    different = [
        run(c, "k", ok=False, fp=str(c), observed=str(c), attempt=a)
        for c in range(3)
        for a in (0, 1)
    ]
    b = decide_screen(3, different)
    assert b.decision.verdict is ScreenVerdict.QUARANTINE_HOST
    assert b.decision.quarantine_host


def test_more_than_two_failing_cpus_quarantine_the_host_two_do_not() -> None:
    def failing(bad: set[int]) -> list[RunRecord]:
        return [
            run(c, "k", ok=c not in bad, fp="b" if c in bad else "g", observed=str(c), attempt=a)
            for c in range(8)
            for a in ((0, 1) if c in bad else (0,))
        ]

    three = decide_screen(8, failing({1, 4, 6}))
    assert three.decision.verdict is ScreenVerdict.QUARANTINE_HOST
    assert three.decision.quarantine_cpus == (1, 4, 6)
    assert three.decision.reasons[0].startswith("3 CPUs fail (1,4,6): more than 2")
    two = decide_screen(8, failing({1, 4}))
    assert two.decision.verdict is ScreenVerdict.QUARANTINE_CPUS
    assert not two.decision.quarantine_host


def test_smt_siblings_failing_together_point_at_the_core() -> None:
    t = topo(4, siblings={0: (2,), 2: (0,), 1: (3,), 3: (1,)})
    runs = [
        run(c, "k", ok=c not in (0, 2), fp="b" if c in (0, 2) else "g", observed=str(c), attempt=a)
        for c in range(4)
        for a in (0, 1)
    ]
    a = decide_screen(4, runs, topology=t)
    assert a.decision.quarantine_cpus == (0, 2)
    assert any("SMT sibling" in r for r in a.decision.reasons)


def test_crosscore_failures_are_blamed_on_the_cpu_that_fails_alone_too() -> None:
    # A ring of four: CPU 2 fails its own check k; pairs (1->2) and (2->3) fail cross-core.
    runs: list[RunRecord] = []
    for c in range(4):
        bad_k = c == 2
        runs += [
            run(c, "k", ok=not bad_k, fp="b" if bad_k else "g", attempt=a)
            for a in ((0, 1) if bad_k else (0,))
        ]
        bad_x = c in (1, 2)
        runs += [
            run(c, "crosscore", ok=not bad_x, fp=f"x{c}" if bad_x else "x", attempt=a)
            for a in ((0, 1) if bad_x else (0,))
        ]
    a = decide_screen(4, runs, checks=("k", "crosscore"))
    row1 = next(r for r in a.results if r.cpu == 1 and r.check == "crosscore")
    assert row1.partner == 2 and row1.suspect_cpu == 2
    assert "CPU 2 also fails k" in row1.detail
    assert a.decision.quarantine_cpus == (2,)
    assert a.decision.flagged_cpus == (2,)


def test_with_two_cpus_the_healthy_one_is_implicated_not_failed() -> None:
    """Issue 12: CPU 1 computes wrongly (its own check k fails twice); the cross-core check of
    the pair fails on both rows. The decision quarantines CPU 1 only -- and CPU 0's row must not
    say failed: it says implicated, naming its partner."""
    runs: list[RunRecord] = []
    for c in range(2):
        bad = c == 1
        runs += [run(c, "k", ok=not bad, fp="b" if bad else "g", attempt=a) for a in (0, 1)]
        runs += [
            run(c, "crosscore", ok=False, fp=f"x{c}", observed=f"{c}", attempt=a) for a in (0, 1)
        ]
    a = decide_screen(2, runs, checks=("k", "crosscore"))
    healthy = next(r for r in a.results if r.cpu == 0 and r.check == "crosscore")
    assert healthy.outcome is Outcome.IMPLICATED and not healthy.outcome.is_failure
    assert healthy.partner == 1 and healthy.suspect_cpu == 1
    assert healthy.detail.startswith("implicated by CPU 1: the cross-core check with CPU 1 failed")
    assert "CPU 0 is not suspect" in healthy.detail
    assert (healthy.runs, healthy.failures) == (2, 2)  # the evidence stays on the row
    assert not any(r.outcome.is_failure for r in a.results if r.cpu == 0)
    # Must not fire on the faulty CPU's own rows: they say failed.
    faulty = next(r for r in a.results if r.cpu == 1 and r.check == "crosscore")
    assert faulty.outcome is Outcome.FAILED_REPRODUCIBLE and faulty.suspect_cpu == 1
    assert a.decision.quarantine_cpus == (1,)
    assert a.decision.flagged_cpus == (1,)
    assert a.decision.verdict is ScreenVerdict.QUARANTINE_CPUS
    assert "CPU 0" not in " ".join(a.decision.reasons).replace("with CPU 0", "")


def test_unattributable_crosscore_failure_rescreens_both() -> None:
    runs = [
        run(c, "crosscore", ok=False, fp=f"x{c}", observed=f"{c}", attempt=a)
        for c in range(2)
        for a in (0, 1)
    ]
    a = decide_screen(2, runs, checks=("crosscore",))
    assert all(r.suspect_cpu is None for r in a.results)
    # Must not fire: nothing tells the two apart, so neither is implicated by the other.
    assert all(r.outcome is Outcome.FAILED_REPRODUCIBLE for r in a.results)
    assert a.decision.quarantine_cpus == ()
    assert a.decision.rescreen_cpus == (0, 1)
    assert a.decision.verdict is ScreenVerdict.RESCREEN


def test_runs_off_their_cpu_prove_nothing() -> None:
    stray = RunRecord(
        cpu=1,
        check="k",
        round=0,
        attempt=0,
        seed=0,
        status=RunStatus.FAILED,
        expected="x = 1",
        observed="x = 9",
        fingerprint="b",
        detail="",
        seconds=0.1,
        cpu_seconds=0.1,
        ran_on=(1, 0),
    )
    a = decide_screen(2, [run(0, "k"), stray])
    row = next(r for r in a.results if r.cpu == 1)
    assert row.outcome is Outcome.SKIPPED
    assert "ran off CPU 1" in row.detail


def test_crash_and_timeout_rows_and_untouched_checks() -> None:
    outs = outcomes(range(2), [run(0, "k"), run(1, "k")])
    outs[1] = WorkerOutcome(
        cpu=1,
        status=WorkerStatus.TIMED_OUT,
        runs=(run(1, "k"),),
        interrupted=(Interrupted("j", 0, 0, WorkerStatus.TIMED_OUT, "killed after 3.0 s"),),
    )
    a = decide_screen(2, [], checks=("k", "j", "m"), outcomes=outs)
    by = {(r.cpu, r.check): r for r in a.results}
    assert by[(1, "j")].outcome is Outcome.TIMED_OUT
    assert by[(1, "m")].outcome is Outcome.SKIPPED
    assert "budget was spent" in by[(1, "m")].detail
    assert by[(0, "j")].outcome is Outcome.SKIPPED
    assert a.decision.verdict is ScreenVerdict.RESCREEN
