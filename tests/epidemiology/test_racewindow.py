"""The race-window check: events × signal Hz × window against the observed rate."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from corecensus.epidemiology import Categorical, CrashTable, ExposureTable
from corecensus.epidemiology.racewindow import (
    RaceWindow,
    population_exposure_hours,
    race_rate_check,
)

ONE = RaceWindow(1, True, "/usr/lib/libunwind.so.8", (0x53D4,))


def test_implied_rate_is_events_times_hz_times_window() -> None:
    c = race_rate_check(
        "f (lib)",
        RaceWindow(4, False, "distinct interrupted offsets seen"),
        signal_hz=100.0,
        event_rate=50_000.0,
        crashes=3,
        exposure_hours=None,
        ns_per_instruction=0.5,
    )
    # 50e3/s * 100/s * (4 * 0.5e-9 s) = 0.01 crashes per second = 36 per hour
    assert c.implied_per_hour == pytest.approx(36.0)
    assert c.observed_per_hour is None and c.ratio is None and c.agreement == "unknown"
    assert "observed rate unavailable (no exposure)" in c.sentence()
    assert c.to_json()["window_seconds"] == pytest.approx(2e-9)


def test_observed_rate_has_the_exact_poisson_interval() -> None:
    c = race_rate_check("f", ONE, signal_hz=250, event_rate=60_000, crashes=3, exposure_hours=288.0)
    assert c.observed_per_hour == pytest.approx(3 / 288)
    # Garwood's interval from the chi-square quantiles (an independent formula)
    low = stats.chi2.ppf(0.025, 6) / 2 / 288
    high = stats.chi2.ppf(0.975, 8) / 2 / 288
    assert c.observed_low == pytest.approx(low)
    assert c.observed_high == pytest.approx(high)
    assert c.implied_per_hour == pytest.approx(60_000 * 250 * 1e-9 * 3600)
    assert c.ratio == pytest.approx((3 / 288) / c.implied_per_hour)
    assert c.agreement == "above"
    assert "fewer crashes than this window implies" in c.sentence()


@pytest.mark.parametrize(
    ("event_rate", "agreement"),
    [(0.1, "below"), (2.0, "within"), (100.0, "above")],
)
def test_agreement_says_where_the_implied_rate_falls(event_rate: float, agreement: str) -> None:
    # 10 crashes in 1000 h: 95% interval about 0.0048-0.0184 per hour
    c = race_rate_check(
        "f",
        ONE,
        signal_hz=1.0,
        event_rate=event_rate,
        crashes=10,
        exposure_hours=1000.0,
        ns_per_instruction=1000.0,  # 1 µs: implied = event_rate * 3.6e-3 per hour
    )
    assert c.agreement == agreement
    if agreement == "within":
        assert "the window explains the rate" in c.sentence()


def test_zero_crashes_have_a_lower_bound_of_zero() -> None:
    c = race_rate_check("f", ONE, signal_hz=1, event_rate=1, crashes=0, exposure_hours=10.0)
    assert c.observed_low == 0.0
    assert c.observed_high == pytest.approx(-math.log(0.025) / 10)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_rates_must_be_positive_numbers(bad: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        race_rate_check("f", ONE, signal_hz=bad, event_rate=1, crashes=1, exposure_hours=1)
    with pytest.raises(ValueError, match="positive"):
        race_rate_check("f", ONE, signal_hz=1, event_rate=bad, crashes=1, exposure_hours=1)


def _tables(services: list[str]) -> tuple[CrashTable, ExposureTable]:
    crashes = CrashTable.from_rows(
        [
            {"host": "h1", "time_us": 1, "population": "race", "service": services[0]},
            {"host": "h2", "time_us": 2, "population": "race", "service": services[1]},
            {"host": "h2", "time_us": 3, "population": "other", "service": "web"},
        ]
    )
    hour = 3_600_000_000
    exposure = ExposureTable.from_arrays(
        host=Categorical.encode(["h1", "h2", "h3"]),
        start_us=[0, 0, 0],
        end_us=[10 * hour, 20 * hour, 40 * hour],
        service=Categorical.encode(["db", "db", "web"]),
    )
    return crashes, exposure


def test_exposure_hours_are_those_of_the_services_the_population_crashed_in() -> None:
    crashes, exposure = _tables(["db", "db"])
    assert population_exposure_hours(crashes, exposure, "race") == pytest.approx(30.0)
    assert population_exposure_hours(crashes, exposure, "other") == pytest.approx(40.0)
    assert population_exposure_hours(crashes, exposure, "absent") is None


def test_a_crash_without_service_counts_all_exposure() -> None:
    crashes, exposure = _tables(["db", ""])
    assert population_exposure_hours(crashes, exposure, "race") == pytest.approx(70.0)
