"""Screen modes and their defaults.

| mode       | for                        | budget/CPU | CPUs at once | battery                  |
|------------|----------------------------|-----------:|--------------|--------------------------|
| oneshot    | provisioning, maintenance  | 60 s       | all          | repeated until budget    |
| periodic   | the agent, on a schedule   | 10 s       | one          | once, after a jitter     |
| background | production, beside work    | 120 s      | all          | 20 ms slices, <= 1% duty |

Background mode is the production-friendly one: the worker runs at ``SCHED_IDLE``, works in
slices of about 20 ms of CPU time (never more than 250 ms), and paces itself so its CPU time over
the window is at most 1% of one CPU -- and it measures and reports that duty cycle rather than
assuming it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from corecensus.errors import ConfigError
from corecensus.screening.outcome import Mode
from corecensus.screening.wire import BackgroundPlan

__all__ = ["MAX_DUTY_CYCLE", "MAX_SLICE_S", "ScreenConfig", "next_periodic_delay"]

MAX_DUTY_CYCLE = 0.01
MAX_SLICE_S = 0.25
# Largest per-CPU budget and whole-screen limit (seconds). Timeouts end in epoll_wait, whose
# limit is INT_MAX milliseconds (24.8 days): `--budget 1e7` raised OverflowError, `inf` too
# (issue 10). A day per CPU and a week in all are far beyond any real screen.
MAX_BUDGET_S = 86_400.0
MAX_OVERALL_S = 7 * 86_400.0


@dataclass(frozen=True, slots=True)
class ScreenConfig:
    """Everything that shapes one screen (seconds throughout).

    ``rounds`` None repeats the battery until the budget is spent. ``overall_budget_s`` None is
    derived: the per-CPU budget times the number of waves of workers, plus start-up slack.
    ``checks`` None is the whole registry.
    """

    mode: Mode = Mode.ONESHOT
    budget_s: float = 60.0
    overall_budget_s: float | None = None
    cpus: tuple[int, ...] | None = None
    checks: tuple[str, ...] | None = None
    rounds: int | None = None
    scale: float = 1.0
    retries: int = 2
    concurrency: int | None = None
    jitter_s: float = 0.0
    seed: int | None = None
    grace_s: float = 1.0
    background: BackgroundPlan | None = None

    @classmethod
    def for_mode(cls, mode: Mode | str, **overrides: object) -> ScreenConfig:
        """The defaults of ``mode`` with ``overrides`` (None values are ignored) applied."""
        try:
            mode = Mode(mode)
        except ValueError:
            raise ConfigError(
                f"unknown screen mode {mode!r} (one of {', '.join(m.value for m in Mode)})"
            ) from None
        if mode is Mode.ONESHOT:
            base = cls(mode=mode, budget_s=60.0, rounds=None, scale=1.0)
        elif mode is Mode.PERIODIC:
            base = cls(mode=mode, budget_s=10.0, rounds=1, scale=1.0, concurrency=1, jitter_s=30.0)
        else:
            base = cls(
                mode=mode,
                budget_s=120.0,
                rounds=None,
                scale=0.05,
                background=BackgroundPlan(),
            )
        known = set(cls.__dataclass_fields__)
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown screen setting(s): {', '.join(sorted(unknown))}")
        config = replace(base, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
        config.validate()
        return config

    def validate(self) -> None:
        if not 0 < self.budget_s <= MAX_BUDGET_S:
            raise ConfigError(
                f"budget must be positive seconds up to {MAX_BUDGET_S:g}, not {self.budget_s}"
            )
        if self.overall_budget_s is not None and not 0 < self.overall_budget_s <= MAX_OVERALL_S:
            raise ConfigError(
                f"overall budget must be positive seconds up to {MAX_OVERALL_S:g}, "
                f"not {self.overall_budget_s}"
            )
        if self.jitter_s < 0:
            raise ConfigError(f"jitter cannot be negative ({self.jitter_s})")
        if not self.jitter_s <= MAX_BUDGET_S:  # also refuses NaN
            raise ConfigError(
                f"jitter must be at most {MAX_BUDGET_S:g} seconds, not {self.jitter_s}"
            )
        if self.rounds is not None and self.rounds < 1:
            raise ConfigError(f"rounds must be at least 1, not {self.rounds}")
        if not self.scale > 0:
            raise ConfigError(f"scale must be positive, not {self.scale}")
        if self.retries < 0:
            raise ConfigError(f"retries cannot be negative ({self.retries})")
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, not {self.concurrency}")
        if self.checks is not None and not self.checks:
            raise ConfigError("no check named (see --list-checks)")
        bg = self.background
        if bg is not None:
            if not 0 < bg.duty_cycle <= MAX_DUTY_CYCLE:
                raise ConfigError(
                    f"background duty cycle must be in (0, {MAX_DUTY_CYCLE}], not {bg.duty_cycle}"
                )
            if not 0 < bg.slice_cpu_s <= bg.max_slice_s <= MAX_SLICE_S:
                raise ConfigError(
                    f"background slices must satisfy 0 < slice ({bg.slice_cpu_s}) <= max "
                    f"({bg.max_slice_s}) <= {MAX_SLICE_S} s"
                )

    def waves(self, ncpus: int) -> int:
        per = self.concurrency or ncpus
        return -(-ncpus // per)

    def overall(self, ncpus: int) -> float:
        """The hard limit of the whole screen in seconds, jitter excluded."""
        if self.overall_budget_s is not None:
            return self.overall_budget_s
        waves = self.waves(ncpus)
        return min(waves * (self.budget_s + self.grace_s) + 5.0, MAX_OVERALL_S)

    def selected(self, online: Sequence[int]) -> tuple[int, ...]:
        return tuple(self.cpus) if self.cpus is not None else tuple(online)


def next_periodic_delay(interval_s: float, jitter_fraction: float, rng: random.Random) -> float:
    """Seconds until the next periodic screen: ``interval_s`` +- ``jitter_fraction`` of it.

    Jitter spreads a fleet's screens out, so hosts booted together do not screen (and report)
    together -- the agent's load on anything central stays flat.
    """
    if interval_s <= 0 or not 0 <= jitter_fraction < 1:
        raise ConfigError("interval must be positive and jitter fraction in [0, 1)")
    return interval_s * (1.0 + rng.uniform(-jitter_fraction, jitter_fraction))
