"""The line protocol between the screen and its worker processes.

The parent writes one :class:`WorkerJob` as JSON to the worker's stdin; the worker answers with
JSON lines on stdout: ``ready`` (pinned, with the CPU it verified), ``start`` before each run (so
a hang or a crash can be pinned on the check that was running), ``run`` after each run (a
:class:`RunRecord`), ``duty`` in background mode (a :class:`DutyReport`) and ``done``.
Everything is plain JSON so a worker can be any process that speaks it.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from corecensus.errors import ScreeningError

__all__ = [
    "GOLDEN_SEED",
    "BackgroundPlan",
    "DutyReport",
    "RunRecord",
    "RunStatus",
    "WorkerJob",
    "run_seed",
]

# Round 0 of every screen uses seeds derived from this constant, so its fingerprints can be
# compared with golden values recorded on other hosts and on other days.
GOLDEN_SEED = 0x53444321  # "SDC!"


def run_seed(screen_seed: int, round_: int, check: str, attempt: int) -> int:
    """The seed of one run: equal on every CPU of a screen, so results can be compared.

    Round 0's first attempt uses :data:`GOLDEN_SEED`; retries and later rounds use the screen's
    own seed, so every retry sees new data.
    """
    base = GOLDEN_SEED if round_ == 0 and attempt == 0 else screen_seed
    h = hashlib.blake2b(f"{base}|{round_}|{check}|{attempt}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little")


class RunStatus(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class BackgroundPlan:
    """Background mode: slices of ``slice_cpu_s`` CPU seconds (never more than ``max_slice_s``),
    paced so CPU time / wall time stays at or below ``duty_cycle``, at idle priority."""

    slice_cpu_s: float = 0.02
    max_slice_s: float = 0.25
    duty_cycle: float = 0.009
    idle_priority: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "slice_cpu_s": self.slice_cpu_s,
            "max_slice_s": self.max_slice_s,
            "duty_cycle": self.duty_cycle,
            "idle_priority": self.idle_priority,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> BackgroundPlan:
        return cls(
            slice_cpu_s=float(obj["slice_cpu_s"]),
            max_slice_s=float(obj["max_slice_s"]),
            duty_cycle=float(obj["duty_cycle"]),
            idle_priority=bool(obj["idle_priority"]),
        )


@dataclass(frozen=True, slots=True)
class WorkerJob:
    """What one worker runs.

    ``deadline`` is an absolute ``time.monotonic()`` value: CLOCK_MONOTONIC is one clock for
    every process on a Linux host, so parent and worker agree on it. The worker starts no run it
    expects to end after it. ``rounds`` None means "repeat the battery until the deadline".
    ``done`` and ``exclude`` let a restarted worker skip what its crashed predecessor finished
    and the check that crashed it.
    """

    cpu: int
    partner: int | None
    checks: tuple[tuple[str, str], ...]
    scale: float
    rounds: int | None
    deadline: float
    seed: int
    retries: int = 2
    background: BackgroundPlan | None = None
    done: tuple[tuple[int, str], ...] = ()
    exclude: tuple[str, ...] = ()
    start_round: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu": self.cpu,
            "partner": self.partner,
            "checks": [list(c) for c in self.checks],
            "scale": self.scale,
            "rounds": self.rounds,
            "deadline": self.deadline,
            "seed": self.seed,
            "retries": self.retries,
            "background": self.background.to_json() if self.background else None,
            "done": [list(d) for d in self.done],
            "exclude": list(self.exclude),
            "start_round": self.start_round,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> WorkerJob:
        try:
            bg = obj.get("background")
            return cls(
                cpu=int(obj["cpu"]),
                partner=None if obj.get("partner") is None else int(obj["partner"]),
                checks=tuple((str(n), str(s)) for n, s in obj["checks"]),
                scale=float(obj["scale"]),
                rounds=None if obj.get("rounds") is None else int(obj["rounds"]),
                deadline=float(obj["deadline"]),
                seed=int(obj["seed"]),
                retries=int(obj.get("retries", 2)),
                background=BackgroundPlan.from_json(bg) if bg else None,
                done=tuple((int(r), str(c)) for r, c in obj.get("done", ())),
                exclude=tuple(str(c) for c in obj.get("exclude", ())),
                start_round=int(obj.get("start_round", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ScreeningError(f"malformed worker job: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of one check on one CPU (``seconds`` wall, ``cpu_seconds`` process CPU time)."""

    cpu: int
    check: str
    round: int
    attempt: int
    seed: int
    status: RunStatus
    expected: str
    observed: str
    fingerprint: str
    detail: str
    seconds: float
    cpu_seconds: float
    ran_on: tuple[int, ...]

    @property
    def ok(self) -> bool:
        return self.status is RunStatus.PASSED

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu": self.cpu,
            "check": self.check,
            "round": self.round,
            "attempt": self.attempt,
            "seed": self.seed,
            "status": str(self.status),
            "expected": self.expected,
            "observed": self.observed,
            "fingerprint": self.fingerprint,
            "detail": self.detail,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "ran_on": list(self.ran_on),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> RunRecord:
        try:
            return cls(
                cpu=int(obj["cpu"]),
                check=str(obj["check"]),
                round=int(obj["round"]),
                attempt=int(obj["attempt"]),
                seed=int(obj["seed"]),
                status=RunStatus(obj["status"]),
                expected=str(obj["expected"]),
                observed=str(obj["observed"]),
                fingerprint=str(obj["fingerprint"]),
                detail=str(obj.get("detail", "")),
                seconds=float(obj["seconds"]),
                cpu_seconds=float(obj["cpu_seconds"]),
                ran_on=tuple(int(c) for c in obj["ran_on"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ScreeningError(f"malformed run record from a worker: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class DutyReport:
    """Background mode, measured by the worker: CPU seconds it used over a wall-clock window.

    ``duty_cycle`` = ``cpu_s`` / ``window_s``: the process's CPU time (every thread, user and
    system) from the start of the window to its end, over the window's wall time. Interpreter
    start-up before the window is reported apart as ``startup_cpu_s``. ``idle_priority`` is the
    scheduling policy read back from the kernel (``SCHED_IDLE``), not the one asked for.
    """

    window_s: float
    cpu_s: float
    duty_cycle: float
    slices: int
    max_slice_cpu_s: float
    max_slice_wall_s: float
    startup_cpu_s: float
    idle_priority: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "window_s": self.window_s,
            "cpu_s": self.cpu_s,
            "duty_cycle": self.duty_cycle,
            "slices": self.slices,
            "max_slice_cpu_s": self.max_slice_cpu_s,
            "max_slice_wall_s": self.max_slice_wall_s,
            "startup_cpu_s": self.startup_cpu_s,
            "idle_priority": self.idle_priority,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> DutyReport:
        try:
            return cls(
                window_s=float(obj["window_s"]),
                cpu_s=float(obj["cpu_s"]),
                duty_cycle=float(obj["duty_cycle"]),
                slices=int(obj["slices"]),
                max_slice_cpu_s=float(obj["max_slice_cpu_s"]),
                max_slice_wall_s=float(obj["max_slice_wall_s"]),
                startup_cpu_s=float(obj["startup_cpu_s"]),
                idle_priority=bool(obj.get("idle_priority", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ScreeningError(f"malformed duty report: {exc!r}") from exc
