"""Per-CPU silent-data-corruption screening.

One worker process per CPU, pinned and verified, runs a battery of known-answer checks
(:mod:`corecensus.screening.checks`) under a hard time budget; the screen compares CPUs with each
other, classifies failures and decides what to quarantine. Entry point: :func:`run_screen`.
"""

from __future__ import annotations

from corecensus.screening.checks import (
    BUILTIN_CHECKS,
    QUICK_CHECKS,
    Check,
    CheckContext,
    CheckNotApplicable,
    CheckRegistry,
    Observation,
    default_registry,
)
from corecensus.screening.golden import GoldenValues
from corecensus.screening.modes import ScreenConfig, next_periodic_delay
from corecensus.screening.outcome import Mode, Outcome, ScreenVerdict, WorkerStatus
from corecensus.screening.recommend import ScreenRecommendation, recommend_screens
from corecensus.screening.result import CheckResult, CpuReport, ScreenDecision, ScreenResult
from corecensus.screening.screen import ScreenRun, run_screen
from corecensus.screening.topology import CpuInfo, Topology, parse_cpu_list, read_topology
from corecensus.screening.wire import BackgroundPlan, DutyReport

__all__ = [
    "BUILTIN_CHECKS",
    "QUICK_CHECKS",
    "BackgroundPlan",
    "Check",
    "CheckContext",
    "CheckNotApplicable",
    "CheckRegistry",
    "CheckResult",
    "CpuInfo",
    "CpuReport",
    "DutyReport",
    "GoldenValues",
    "Mode",
    "Observation",
    "Outcome",
    "ScreenConfig",
    "ScreenDecision",
    "ScreenRecommendation",
    "ScreenResult",
    "ScreenRun",
    "ScreenVerdict",
    "Topology",
    "WorkerStatus",
    "default_registry",
    "next_periodic_delay",
    "parse_cpu_list",
    "read_topology",
    "recommend_screens",
    "run_screen",
]
