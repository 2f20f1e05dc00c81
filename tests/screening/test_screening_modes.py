"""Background mode stays under 1% of each CPU (measured); periodic mode jitters its start."""

from __future__ import annotations

import random

import pytest
from screening_helpers import HANG_BUDGET_S

from corecensus.errors import ConfigError
from corecensus.screening import (
    BackgroundPlan,
    Mode,
    Outcome,
    ScreenConfig,
    ScreenResult,
    ScreenVerdict,
    WorkerStatus,
    next_periodic_delay,
    run_screen,
)
from corecensus.screening.modes import MAX_DUTY_CYCLE, MAX_SLICE_S


def _check_duty(result: ScreenResult, budget_s: float) -> None:
    for cpu in result.cpus:
        assert cpu.status is WorkerStatus.COMPLETED, cpu.detail
        duty = cpu.duty
        assert duty is not None
        # The window is what is left of the budget after start-up.
        assert 0 < duty.window_s <= budget_s
        # The requirement: CPU time of the worker over the window <= 1% of one CPU.
        assert duty.cpu_s / duty.window_s == pytest.approx(duty.duty_cycle)
        assert duty.duty_cycle <= MAX_DUTY_CYCLE
        # Slices are short: at most 250 ms of CPU each.
        assert duty.max_slice_cpu_s <= MAX_SLICE_S


@pytest.mark.usefixtures("two_cpus")
def test_background_pacing_keeps_the_duty_cycle_at_most_one_percent() -> None:
    """The pacing, measured where it cannot be vacuous: at normal priority the workers get CPU
    time even on a loaded machine (at SCHED_IDLE they may get none there: the next test), so
    they do run slices, and their measured CPU share stays at or below 1 %."""
    config = ScreenConfig.for_mode(
        "background", budget_s=5.0, background=BackgroundPlan(idle_priority=False)
    )
    result = run_screen(config).result
    assert result.mode is Mode.BACKGROUND
    _check_duty(result, config.budget_s)
    for cpu in result.cpus:
        assert cpu.duty is not None and not cpu.duty.idle_priority
        assert cpu.duty.slices >= 1 and cpu.runs >= 1  # it did work: the bound is not vacuous
    ran = [r for r in result.results if r.runs]
    assert ran and all(r.outcome is Outcome.PASSED for r in ran)
    assert result.decision.verdict is ScreenVerdict.CLEAN


@pytest.mark.usefixtures("two_cpus")
def test_background_runs_at_idle_priority_and_a_starved_cpu_is_rescreen_not_failure() -> None:
    """At SCHED_IDLE a worker gets a CPU only when nothing else wants it, so on a busy machine
    it may run no slice in its window (issue 12: this must hold on a loaded machine). Whatever
    it got, the policy is read back from the kernel, the duty cycle holds, and a CPU that got
    no time is a rescreen, never a failure."""
    config = ScreenConfig.for_mode("background", budget_s=5.0)
    result = run_screen(config).result
    _check_duty(result, config.budget_s)
    for cpu in result.cpus:
        assert cpu.duty is not None and cpu.duty.idle_priority  # read back: SCHED_IDLE
    ran = [r for r in result.results if r.runs]
    assert all(r.outcome is Outcome.PASSED for r in ran)
    if all(c.duty is not None and c.duty.slices >= 1 for c in result.cpus):
        assert result.decision.verdict is ScreenVerdict.CLEAN
    else:
        assert result.decision.verdict is ScreenVerdict.RESCREEN
        assert all("no check finished" in r for r in result.decision.reasons)


@pytest.mark.usefixtures("two_cpus")
def test_periodic_mode_waits_a_jitter_then_runs_one_round() -> None:
    slept: list[float] = []
    config = ScreenConfig.for_mode(
        "periodic", budget_s=HANG_BUDGET_S, jitter_s=30.0, checks=("libm_pow", "crc32")
    )
    run = run_screen(config, sleep=slept.append, rng=random.Random(4))
    assert len(slept) == 1 and 0.0 <= slept[0] <= 30.0
    assert all(c.rounds == 1 for c in run.result.cpus)
    assert all(r.runs == 1 for r in run.result.results)
    assert run.result.decision.verdict is ScreenVerdict.CLEAN


def test_mode_defaults() -> None:
    one = ScreenConfig.for_mode("oneshot")
    assert (one.budget_s, one.rounds, one.concurrency) == (60.0, None, None)
    per = ScreenConfig.for_mode(Mode.PERIODIC)
    assert (per.rounds, per.concurrency, per.jitter_s) == (1, 1, 30.0)
    bg = ScreenConfig.for_mode("background")
    assert bg.background is not None
    assert bg.background.duty_cycle <= MAX_DUTY_CYCLE
    assert bg.background.max_slice_s <= MAX_SLICE_S
    assert ScreenConfig.for_mode("oneshot", budget_s=None).budget_s == 60.0  # None: default
    assert one.overall(4) == (60.0 + 1.0) + 5.0  # one wave: every CPU at once
    assert per.overall(4) == 4 * (10.0 + 1.0) + 5.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"budget_s": 0}, "budget must be positive"),
        ({"rounds": 0}, "rounds must be at least 1"),
        ({"jitter_s": -1}, "jitter cannot be negative"),
        ({"background": BackgroundPlan(duty_cycle=0.05)}, r"duty cycle must be in \(0, 0.01\]"),
        ({"background": BackgroundPlan(slice_cpu_s=0.3, max_slice_s=0.5)}, "slices must satisfy"),
        ({"colour": "red"}, "unknown screen setting"),
    ],
)
def test_bad_settings_are_config_errors(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ScreenConfig.for_mode("background", **overrides)


def test_unknown_mode() -> None:
    with pytest.raises(ConfigError, match="unknown screen mode 'sometimes'"):
        ScreenConfig.for_mode("sometimes")


def test_periodic_delay_spreads_around_the_interval() -> None:
    rng = random.Random(1)
    delays = [next_periodic_delay(3600.0, 0.1, rng) for _ in range(200)]
    assert all(3240.0 <= d <= 3960.0 for d in delays)
    assert max(delays) - min(delays) > 360.0  # actually spread, not constant
    with pytest.raises(ConfigError):
        next_periodic_delay(0, 0.1, rng)
