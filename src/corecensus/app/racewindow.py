"""Use case step: the race-window check of each signal-race population (``analyze
--signal-hz HZ --event-rate N``).

The window of a race population is the instruction span of its interrupted offsets: measured
in the binary the cores ran when it is here (the caller injects the measurer, so this module
reads no files and the collector, which imports the analysis, never loads a core reader), else
the number of distinct interrupted offsets seen, a lower bound. The arithmetic is
:mod:`corecensus.epidemiology.racewindow`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from corecensus.epidemiology.racewindow import (
    DEFAULT_NS_PER_INSTRUCTION,
    RaceRateCheck,
    RaceWindow,
    population_exposure_hours,
    race_rate_check,
)
from corecensus.epidemiology.table import CrashTable, ExposureTable
from corecensus.model import CrashRecord
from corecensus.signature import signal_race

__all__ = ["RaceRates", "SpanMeasurer", "race_checks", "race_window"]

# (module path, build-id or None, module offsets, arch) -> instructions from the lowest offset
# to the highest, both included, or None when the binary cannot be read.
SpanMeasurer = Callable[[str, str | None, Sequence[int], str], int | None]


@dataclass(frozen=True, slots=True)
class RaceRates:
    """What the user says about the race: signals per second and events (e.g. exceptions
    thrown) per second, per process, and the time one instruction of the window takes."""

    signal_hz: float
    event_rate: float
    ns_per_instruction: float = DEFAULT_NS_PER_INSTRUCTION
    measure: SpanMeasurer | None = None


def race_window(records: Sequence[CrashRecord], measure: SpanMeasurer | None) -> RaceWindow | None:
    """The window of a race population from its crashes (None if none of them is a race)."""
    where: set[str] = set()
    offsets: set[int] = set()
    binaries: set[tuple[str, str | None, str]] = set()
    unplaced = False
    for record in records:
        race = signal_race(record)
        if race is None:
            continue
        where.add(race.where)
        module = next((m for m in record.modules if m.base <= race.pc < m.end), None)
        if module is None or race.module_offset is None or record.arch is None:
            unplaced = True
            continue
        offsets.add(race.module_offset)
        binaries.add((module.path, module.build_id, record.arch))
    if not where:
        return None
    # One binary (same path and build-id) for all: offsets in different builds are not one span.
    if measure is not None and not unplaced and len(binaries) == 1:
        ((path, build_id, arch),) = binaries
        measured = measure(path, build_id, sorted(offsets), arch)
        if measured is not None:
            return RaceWindow(measured, True, path, tuple(sorted(offsets)))
    return RaceWindow(
        len(where), False, "distinct interrupted offsets seen", tuple(sorted(offsets))
    )


def race_checks(
    races: Mapping[str, Sequence[CrashRecord]],
    crashes: CrashTable,
    exposure: ExposureTable | None,
    rates: RaceRates,
) -> dict[str, RaceRateCheck]:
    """The check of each race population (keyed by population id) whose records show a race."""
    out: dict[str, RaceRateCheck] = {}
    vocab = crashes.population.vocab
    for key, records in races.items():
        window = race_window(records, rates.measure)
        if window is None or key not in vocab:
            continue
        count = int((crashes.population.codes == vocab.index(key)).sum())
        hours = population_exposure_hours(crashes, exposure, key) if exposure is not None else None
        name = next(r.key for r in map(signal_race, records) if r is not None)
        out[key] = race_rate_check(
            name,
            window,
            signal_hz=rates.signal_hz,
            event_rate=rates.event_rate,
            crashes=count,
            exposure_hours=hours,
            ns_per_instruction=rates.ns_per_instruction,
        )
    return out
