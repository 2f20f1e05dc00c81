"""``corecensus agent gate --budget S``: a bounded screen of this host's CPUs before it takes work
(DESIGN.md, outage lesson 2: a boot-time diagnostic that ran past its timeout kept nodes out of
the cluster).

The screen runs as a child killed at the budget, so the gate always answers within it:

| result | when | exit |
|---|---|---|
| ``passed`` | the screen finished clean | 0 |
| ``failed`` | a reproducible failure: the CPUs to exclude (all of them for a host quarantine) | 3 |
| ``unscreened`` | out of time, the screen could not run, or it asks for a rescreen | 0 |

``unscreened`` never blocks the node: the gate is a filter for broken CPUs, not a dependency.
"""

from __future__ import annotations

import enum
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from corecensus.agent.watch import Runner, _run

__all__ = ["EXIT_FAILED", "GateOutcome", "GateResult", "run_gate"]

EXIT_FAILED = 3
# The child's own screen budget leaves this share of the gate's budget for its start-up and
# shut-down (Python imports, worker processes), so the screen ends by itself, not by the kill.
_SCREEN_SHARE = 0.6


class GateOutcome(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    UNSCREENED = "unscreened"


@dataclass(frozen=True, slots=True)
class GateResult:
    outcome: GateOutcome
    exclude_cpus: tuple[int, ...]
    seconds: float
    detail: str

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.outcome is GateOutcome.FAILED else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "result": str(self.outcome),
            "exclude_cpus": list(self.exclude_cpus),
            "seconds": round(self.seconds, 3),
            "detail": self.detail,
        }


def run_gate(
    budget_s: float,
    *,
    run: Runner = _run,
    clock: Callable[[], float] = time.monotonic,
    extra_args: tuple[str, ...] = (),
) -> GateResult:
    start = clock()
    screen_s = max(0.5, budget_s * _SCREEN_SHARE)
    argv = [
        sys.executable, "-m", "corecensus", "screen", "--mode", "oneshot", "--json",
        "--budget", f"{screen_s:g}", "--total-budget", f"{screen_s:g}", *extra_args,
    ]  # fmt: skip
    rc, out = run(argv, budget_s)
    seconds = clock() - start
    if rc == -1:
        return GateResult(GateOutcome.UNSCREENED, (), seconds, f"timed_out after {budget_s:g} s")
    try:
        record = json.loads(out)
        decision = record["decision"]
        verdict = str(decision["verdict"])
        cpus = [int(c["cpu"]) for c in record.get("cpus", [])]
    except (ValueError, KeyError, TypeError):
        return GateResult(
            GateOutcome.UNSCREENED, (), seconds, f"the screen could not run (exit {rc})"
        )
    if verdict == "clean":
        return GateResult(GateOutcome.PASSED, (), seconds, "clean")
    if verdict == "quarantine_host":
        return GateResult(
            GateOutcome.FAILED, tuple(sorted(cpus)), seconds, "; ".join(decision.get("reasons", []))
        )
    if verdict == "quarantine_cpus":
        exclude = tuple(sorted(int(c) for c in decision.get("quarantine_cpus", [])))
        return GateResult(
            GateOutcome.FAILED, exclude, seconds, "; ".join(decision.get("reasons", []))
        )
    return GateResult(
        GateOutcome.UNSCREENED, (), seconds, f"{verdict}: " + "; ".join(decision.get("reasons", []))
    )
