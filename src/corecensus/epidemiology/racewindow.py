"""The crash rate a signal race's window implies, beside the rate observed: a check of the race.

If a crash happens exactly when a signal lands inside a window of code that each event (a
thrown exception, for the libunwind race) runs once, then per process

    implied rate = events per second x signals per second x window (seconds)

because each signal lands at a point of the process's time and the window occupies
``events x window`` of every second. The window is ``instructions x ns_per_instruction``; its
width in instructions comes from the cores (see :class:`RaceWindow`), its time per instruction
is an assumption the user may change. The observed rate is the population's crashes per
exposure process-hour, with its exact 95% Poisson interval (Garwood 1936): an implied rate far
outside it says the window, the rates given, or the race hypothesis itself is off.

Pure: numbers in, a result out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from corecensus.epidemiology.table import CrashTable, ExposureTable

__all__ = [
    "DEFAULT_NS_PER_INSTRUCTION",
    "RaceRateCheck",
    "RaceWindow",
    "population_exposure_hours",
    "race_rate_check",
]

# One instruction of a hot loop takes about a nanosecond (3 cycles at 3 GHz): an order of
# magnitude, which is all the check needs; --ns-per-instruction replaces it.
DEFAULT_NS_PER_INSTRUCTION = 1.0
_CONFIDENCE = 0.95
_SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class RaceWindow:
    """How wide a race's window is in instructions, and how that was found: ``measured`` in
    the binary (``source`` names it) from the lowest to the highest interrupted offset, or the
    number of distinct interrupted offsets seen (a lower bound) when the binary is not here."""

    instructions: int
    measured: bool
    source: str
    offsets: tuple[int, ...] = ()  # the distinct interrupted offsets (module offsets)

    def describe(self) -> str:
        n = self.instructions
        width = f"{n} instruction{'s' if n != 1 else ''}"
        if self.measured:
            return f"{width} (measured in {self.source})"
        return f"{width} ({self.source})"


@dataclass(frozen=True, slots=True)
class RaceRateCheck:
    """A race population's implied and observed rates (crashes per process-hour)."""

    key: str
    window: RaceWindow
    ns_per_instruction: float
    signal_hz: float
    event_rate: float
    crashes: int
    exposure_hours: float | None
    implied_per_hour: float
    observed_per_hour: float | None
    observed_low: float | None
    observed_high: float | None

    @property
    def ratio(self) -> float | None:
        """Observed over implied (1 = the window explains the rate)."""
        if self.observed_per_hour is None or self.implied_per_hour <= 0:
            return None
        return self.observed_per_hour / self.implied_per_hour

    @property
    def agreement(self) -> str:
        """``within`` (implied inside the observed interval), ``above``, ``below`` or
        ``unknown`` (no exposure)."""
        if self.observed_low is None or self.observed_high is None:
            return "unknown"
        if self.implied_per_hour < self.observed_low:
            return "below"
        if self.implied_per_hour > self.observed_high:
            return "above"
        return "within"

    def sentence(self) -> str:
        window_s = self.window.instructions * self.ns_per_instruction * 1e-9
        head = (
            f"Race window check (method: events × signal Hz × window): {self.event_rate:g} "
            f"events/s × {self.signal_hz:g} signals/s × {self.window.describe()} × "
            f"{self.ns_per_instruction:g} ns = {window_s:.3g} s implies "
            f"{_rate(self.implied_per_hour)} crashes per process-hour"
        )
        if self.observed_per_hour is None or self.exposure_hours is None:
            return head + "; observed rate unavailable (no exposure)."
        ratio = self.ratio
        tail = (
            f"; observed {self.crashes} in {self.exposure_hours:.4g} process-hours = "
            f"{_rate(self.observed_per_hour)} (95% {_rate(self.observed_low)}–"
            f"{_rate(self.observed_high)})"
        )
        if ratio is not None:
            tail += f", {ratio:.3g}× the implied rate"
        verdict = {
            "within": "the window explains the rate",
            "below": "the implied rate is below the observed interval: more crashes than this "
            "window explains (a wider window, more signals or events than given, or another "
            "cause)",
            "above": "the implied rate is above the observed interval: fewer crashes than this "
            "window implies (a narrower window, fewer signals or events than given)",
        }[self.agreement]
        return head + tail + f": {verdict}."

    def to_json(self) -> dict[str, Any]:
        return {
            "function": self.key,
            "window_instructions": self.window.instructions,
            "window_measured": self.window.measured,
            "window_source": self.window.source,
            "interrupted_offsets": list(self.window.offsets),
            "ns_per_instruction": self.ns_per_instruction,
            "window_seconds": self.window.instructions * self.ns_per_instruction * 1e-9,
            "signal_hz": self.signal_hz,
            "event_rate": self.event_rate,
            "implied_per_hour": self.implied_per_hour,
            "crashes": self.crashes,
            "exposure_hours": self.exposure_hours,
            "observed_per_hour": self.observed_per_hour,
            "observed_interval": (
                None if self.observed_low is None else [self.observed_low, self.observed_high]
            ),
            "ratio": self.ratio,
            "agreement": self.agreement,
        }


def _rate(x: float | None) -> str:
    return "?" if x is None else f"{x:.3g}"


def _poisson_interval(n: int) -> tuple[float, float]:
    """Exact (Garwood) interval of a Poisson mean given ``n`` events."""
    alpha = 1.0 - _CONFIDENCE
    low = 0.0 if n == 0 else float(special.gammaincinv(n, alpha / 2))
    high = float(special.gammaincinv(n + 1, 1 - alpha / 2))
    return low, high


def race_rate_check(
    key: str,
    window: RaceWindow,
    *,
    signal_hz: float,
    event_rate: float,
    crashes: int,
    exposure_hours: float | None,
    ns_per_instruction: float = DEFAULT_NS_PER_INSTRUCTION,
) -> RaceRateCheck:
    """The check for one race population. ``signal_hz`` and ``event_rate`` are per process
    and per second of the same clock as the exposure; ``exposure_hours`` the process-hours the
    population's crashes came from (None without exposure)."""
    for name, value in (
        ("signal_hz", signal_hz),
        ("event_rate", event_rate),
        ("ns_per_instruction", ns_per_instruction),
    ):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, not {value!r}")
    window_s = window.instructions * ns_per_instruction * 1e-9
    implied = event_rate * signal_hz * window_s * _SECONDS_PER_HOUR
    observed = low = high = None
    if exposure_hours is not None and exposure_hours > 0:
        observed = crashes / exposure_hours
        lo, hi = _poisson_interval(crashes)
        low, high = lo / exposure_hours, hi / exposure_hours
    else:
        exposure_hours = None
    return RaceRateCheck(
        key=key,
        window=window,
        ns_per_instruction=ns_per_instruction,
        signal_hz=signal_hz,
        event_rate=event_rate,
        crashes=crashes,
        exposure_hours=exposure_hours,
        implied_per_hour=implied,
        observed_per_hour=observed,
        observed_low=low,
        observed_high=high,
    )


def population_exposure_hours(
    crashes: CrashTable, exposure: ExposureTable, population: str
) -> float | None:
    """The process-hours a population's crashes came from: the exposure of the services they
    crashed in, or all of it when one of them has no known service (None if there is none)."""
    vocab = crashes.population.vocab
    if population not in vocab:
        return None
    members = crashes.population.codes == vocab.index(population)
    codes = np.unique(crashes.service.codes[members])
    if codes.size == 0 or bool((codes < 0).any()):
        total = float(exposure.hours.sum())
    else:
        names = {crashes.service.vocab[int(c)] for c in codes}
        wanted = np.array([name in names for name in exposure.service.vocab], dtype=bool)
        svc = exposure.service.codes
        mask = (svc >= 0) & wanted[np.maximum(svc, 0)] if wanted.size else np.zeros(len(svc), bool)
        total = float(exposure.hours[mask].sum())
    return total if total > 0 else None
