"""The runner survives its workers: hangs time out, crashes are recorded, the screen returns."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from screening_helpers import FAKE_SMT, HANG_BUDGET_S, hostile_env

from corecensus.screening import (
    CheckRegistry,
    Outcome,
    ScreenConfig,
    ScreenVerdict,
    WorkerStatus,
    default_registry,
    read_topology,
    run_screen,
)
from corecensus.screening.worker import main as worker_main

pytestmark = pytest.mark.usefixtures("two_cpus")


def registry(*extra: tuple[str, str]) -> CheckRegistry:
    base = default_registry()
    specs = {"libm_pow": base.spec("libm_pow")}
    for name, attr in extra:
        specs[name] = f"hostile_checks:{attr}"
    specs["crc32"] = base.spec("crc32")
    return CheckRegistry(specs)


def test_a_hung_check_times_out_and_the_screen_returns_on_time() -> None:
    config = ScreenConfig.for_mode("oneshot", budget_s=2.0, rounds=1, grace_s=0.5)
    t0 = time.monotonic()
    run = run_screen(
        config, registry=registry(("sleeps_forever", "SleepsForever")), worker_env=hostile_env()
    )
    elapsed = time.monotonic() - t0
    result = run.result
    # The hard limit is the configured one (budget + grace per wave, plus start-up slack).
    assert elapsed < config.overall(2)
    for cpu in (0, 1):
        assert result.cpu(cpu).status is WorkerStatus.TIMED_OUT
        assert result.result(cpu, "libm_pow").outcome is Outcome.PASSED
        hung = result.result(cpu, "sleeps_forever")
        assert hung.outcome is Outcome.TIMED_OUT
        assert "sleeps_forever (round 0) never finished" in hung.observed
        # Checks after the hung one never got a turn.
        assert result.result(cpu, "crc32").outcome is Outcome.SKIPPED
    assert result.decision.verdict is ScreenVerdict.RESCREEN
    assert result.decision.rescreen_cpus == (0, 1)


def test_a_crashing_check_is_recorded_and_the_worker_restarted_for_the_rest() -> None:
    config = ScreenConfig.for_mode("oneshot", budget_s=HANG_BUDGET_S, rounds=1)
    reg = registry(("aborts", "AbortsOnCpu"), ("prints", "PrintsToStdout"))
    result = run_screen(config, registry=reg, worker_env=hostile_env(HOSTILE_ABORT_CPU="1")).result
    crashed = result.result(1, "aborts")
    assert crashed.outcome is Outcome.CRASHED
    assert crashed.observed == "worker died (SIGABRT)"
    assert result.cpu(1).restarts == 1
    # The restarted worker skipped what was done and ran what was left.
    assert result.result(1, "libm_pow").runs == 1
    assert result.result(1, "prints").outcome is Outcome.PASSED  # stdout noise is harmless
    assert result.result(1, "crc32").outcome is Outcome.PASSED
    assert result.cpu(1).status is WorkerStatus.COMPLETED
    assert all(r.outcome is Outcome.PASSED for r in result.results if r.cpu == 0)
    assert result.decision.verdict is ScreenVerdict.RESCREEN
    assert result.decision.rescreen_cpus == (1,)


def test_a_worker_killed_by_sigkill_is_crashed_not_hung() -> None:
    config = ScreenConfig.for_mode("oneshot", budget_s=HANG_BUDGET_S, rounds=1, cpus=(0,))
    result = run_screen(
        config, registry=registry(("kills_itself", "KillsItself")), worker_env=hostile_env()
    ).result
    assert result.result(0, "kills_itself").outcome is Outcome.CRASHED
    assert result.result(0, "kills_itself").observed == "worker died (SIGKILL)"
    assert result.result(0, "crc32").outcome is Outcome.PASSED


def test_a_worker_dying_before_it_is_ready_is_restarted_once_then_reported() -> None:
    config = ScreenConfig.for_mode("oneshot", budget_s=HANG_BUDGET_S, rounds=1, cpus=(0,))
    reg = registry(("aborts_when_loaded", "AbortsWhenLoaded"))
    result = run_screen(config, registry=reg, worker_env=hostile_env()).result
    cpu = result.cpu(0)
    assert cpu.status is WorkerStatus.CRASHED
    assert cpu.restarts == 1
    assert cpu.detail.startswith("worker died (SIGABRT)")
    for row in result.results:
        assert row.outcome is Outcome.SKIPPED
        assert row.detail == cpu.detail
    assert result.decision.verdict is ScreenVerdict.RESCREEN
    assert result.decision.rescreen_cpus == (0,)
    assert any("no check finished" in r for r in result.decision.reasons)


def test_cpus_that_cannot_be_pinned_are_reported_not_screened() -> None:
    """The fake two-socket box has CPUs 0-6 online; this machine has only 0 and 1."""
    topo = read_topology(FAKE_SMT / "sys", FAKE_SMT / "proc")
    config = ScreenConfig.for_mode(
        "oneshot", budget_s=HANG_BUDGET_S, rounds=1, cpus=(0, 5), checks=("libm_pow",)
    )
    result = run_screen(config, topology=topo).result
    assert result.cpu(0).status is WorkerStatus.COMPLETED
    assert result.cpu(0).verified_cpu == 0
    assert result.cpu(5).status is WorkerStatus.PIN_FAILED
    assert "cannot pin to CPU 5" in result.cpu(5).detail
    assert result.result(5, "libm_pow").outcome is Outcome.SKIPPED
    assert result.result(0, "libm_pow").outcome is Outcome.PASSED
    assert result.decision.verdict is ScreenVerdict.RESCREEN
    assert result.decision.rescreen_cpus == (5,)


def test_overall_budget_leaves_late_cpus_not_started() -> None:
    # One CPU at a time; the first hangs until its budget is spent, leaving the second no time.
    config = ScreenConfig.for_mode(
        "periodic", budget_s=1.5, jitter_s=0, overall_budget_s=2.5, grace_s=0.5
    )
    reg = registry(("sleeps_forever", "SleepsForever"))
    result = run_screen(config, registry=reg, worker_env=hostile_env()).result
    statuses = sorted(str(c.status) for c in result.cpus)
    assert statuses == ["not_started", "timed_out"]
    late = next(c for c in result.cpus if c.status is WorkerStatus.NOT_STARTED)
    assert late.cpu in result.decision.rescreen_cpus


def test_worker_rejects_a_malformed_job_cleanly() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "corecensus.screening.worker"],
        input=b'{"cpu": "zero"}',
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    event = json.loads(proc.stdout.decode().splitlines()[0])
    assert event["event"] == "error"
    assert "bad job" in event["detail"]
    assert b"Traceback" not in proc.stderr


def test_worker_main_is_importable_without_running() -> None:
    assert callable(worker_main)
