"""Helpers shared by the screening tests (a module of its own so its name cannot clash)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from corecensus.screening import ScreenConfig, ScreenResult, run_screen

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "data"
SHIM_SOURCE = DATA / "sdc_shim" / "sdc_shim.c"
FAKE_SMT = DATA / "topology" / "two_socket_smt"
BAD_CPU = 1
# The budget of the screens whose subject is not the budget: it only bounds a hung check.  They
# finish their rounds in a second or two and stop there, so a generous budget costs nothing;
# a tight one (it was 8 s) leaves rounds unrun, and the tests failing, on a slow or busy machine.
HANG_BUDGET_S = 60.0


def shim_env(shim: Path, cpu: int | str = BAD_CPU, **extra: str) -> dict[str, str]:
    env = {"LD_PRELOAD": str(shim), "SDC_SHIM_CPU": str(cpu)}
    env.update({f"SDC_SHIM_{k.upper()}": v for k, v in extra.items()})
    return env


def hostile_env(**extra: str) -> dict[str, str]:
    """Lets workers import tests/screening/hostile_checks.py."""
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {"PYTHONPATH": os.pathsep.join([str(HERE), src]), **extra}


def screen(
    checks: tuple[str, ...] | None,
    *,
    worker_env: Mapping[str, str] | None = None,
    budget: float = HANG_BUDGET_S,
    rounds: int | None = 1,
    cpus: tuple[int, ...] = (0, BAD_CPU),
    seed: int = 7,
    **kwargs: object,
) -> ScreenResult:
    config = ScreenConfig.for_mode(
        "oneshot", budget_s=budget, rounds=rounds, cpus=cpus, checks=checks, seed=seed
    )
    return run_screen(config, worker_env=worker_env, **kwargs).result  # type: ignore[arg-type]
