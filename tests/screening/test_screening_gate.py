"""The agent's boot gate (``corecensus agent gate``) over a real screen: the fault shim makes CPU 1
compute wrongly (the one fake: a defective core cannot be had on demand), the gate says failed
and names CPU 1 only; without the shim it passes; out of time it is unscreened, never a block.
Here because the shim and its fixtures live with the screening tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from screening_helpers import BAD_CPU, shim_env

from corecensus.agent.gate import EXIT_FAILED, GateOutcome, run_gate

CHECKS = ("--cpus", f"0,{BAD_CPU}", "--checks", "libm_pow,crc32", "--rounds", "1")


def runner(env: dict[str, str]):  # type: ignore[no-untyped-def]
    def run(argv: Sequence[str], timeout_s: float) -> tuple[int, bytes]:
        try:
            done = subprocess.run(
                list(argv), env=env, capture_output=True, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            return -1, b""
        return done.returncode, done.stdout

    return run


@pytest.mark.usefixtures("two_cpus")
def test_gate_fails_and_names_only_the_bad_cpu(shim: Path) -> None:
    env = {**os.environ, **shim_env(shim, pow_mode="story")}
    result = run_gate(120.0, run=runner(env), extra_args=CHECKS)
    assert result.outcome is GateOutcome.FAILED, result.detail
    assert result.exclude_cpus == (BAD_CPU,)
    assert result.exit_code == EXIT_FAILED


@pytest.mark.usefixtures("two_cpus")
def test_gate_passes_a_healthy_host() -> None:
    result = run_gate(120.0, run=runner(dict(os.environ)), extra_args=CHECKS)
    assert result.outcome is GateOutcome.PASSED, result.detail
    assert result.exclude_cpus == () and result.exit_code == 0


def test_gate_out_of_time_is_unscreened_and_does_not_block() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "corecensus",
            "agent",
            "--config",
            os.devnull,
            "gate",
            "--budget",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # Out of time either way: killed at the budget (timed_out) or the screen's own share of it
    # ended before the workers started (rescreen).
    assert '"result": "unscreened"' in done.stdout
