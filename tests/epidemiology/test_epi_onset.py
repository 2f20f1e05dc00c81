"""Cumulative exposure, the Poisson change point, version absence and deploy alignment."""

from __future__ import annotations

import math

import numpy as np
import pytest

from corecensus.epidemiology import segments
from corecensus.epidemiology.onset import (
    CumulativeExposure,
    absent_before,
    nearest_deploy,
    poisson_changepoint,
    population_timeline,
)

H = 3_600_000_000  # one hour in µs


def test_cumulative_exposure_against_brute_force() -> None:
    rng = np.random.default_rng(2)
    start = rng.integers(0, 100 * H, 40)
    end = start + rng.integers(0, 20 * H, 40)
    hours = rng.uniform(1, 50, 40)
    stratum = rng.integers(0, 3, 40)
    curve = CumulativeExposure(start, end, hours, stratum)
    t = rng.integers(-5 * H, 130 * H, 50)

    def brute(tq: int, s: int) -> float:
        total = 0.0
        for a, b, h, g in zip(start, end, hours, stratum, strict=True):
            if s >= 0 and g != s:
                continue
            if b == a:
                total += h if tq >= a else 0.0
            else:
                total += h * min(max((tq - a) / (b - a), 0.0), 1.0)
        return total

    for s in (-1, 0, 1, 2):
        got = curve.at(t, s)
        assert np.allclose(got, [brute(int(x), s) for x in t], rtol=1e-9, atol=1e-6)
    assert curve.total() == pytest.approx(hours.sum())
    assert curve.at(t, 17).tolist() == curve.at(t, -1).tolist()  # unknown stratum: fleet


def test_changepoint_finds_a_planted_onset() -> None:
    # exposure 1 h per hour over 1000 h: 2 crashes in the first 600 h, then 20
    before = np.array([100.0, 350.0])
    after = np.linspace(610, 990, 20)
    t_h = np.concatenate([before, after])
    cp = poisson_changepoint(
        (t_h * H).astype(np.int64), t_h, np.array([0]), np.array([0.0]), np.array([1000.0])
    )
    assert cp.before[0] == 2 and cp.after[0] == 20
    assert cp.time_us[0] == int(610 * H)
    llr = 2 * math.log(2 / 610) + 20 * math.log(20 / 390) - 22 * math.log(22 / 1000)
    assert cp.llr[0] == pytest.approx(llr)
    # every other change time is worse
    for k, e1 in [(0, 100.0), (1, 350.0), (3, float(after[1]))]:
        other = (k * math.log(k / e1) if k else 0.0) + (22 - k) * math.log((22 - k) / (1000 - e1))
        assert other - 22 * math.log(22 / 1000) < llr
    assert cp.p_value[0] < 1e-4 and cp.ratio[0] == pytest.approx((20 / 390) / (2 / 610))


def test_no_changepoint_in_a_homogeneous_stream_and_groups_are_independent() -> None:
    rng = np.random.default_rng(9)
    flat = np.sort(rng.uniform(0, 1000, 40))
    jump = np.sort(np.concatenate([rng.uniform(0, 500, 2), rng.uniform(500, 1000, 30)]))
    t_h = np.concatenate([flat, jump])
    cp = poisson_changepoint(
        (t_h * H).astype(np.int64),
        t_h,
        np.array([0, flat.size]),
        np.array([0.0, 0.0]),
        np.array([1000.0, 1000.0]),
        min_after=3,
    )
    assert cp.p_value[0] > 0.01
    assert cp.p_value[1] < 1e-4


def test_last_crash_alone_is_not_an_onset() -> None:
    t_h = np.array([100.0, 300.0, 500.0, 999.999999])
    args = ((t_h * H).astype(np.int64), t_h, np.array([0]), np.array([0.0]), np.array([1000.0]))
    assert poisson_changepoint(*args, min_after=1).p_value[0] < 1e-3  # the artefact
    assert poisson_changepoint(*args, min_after=3).p_value[0] > 0.05


def test_absence_in_the_previous_version() -> None:
    # 30 crashes in 1000 h on v2; v1 ran 2000 h without one: expected 60
    assert absent_before(0, 30, 1000.0, 2000.0)[()] == pytest.approx(math.exp(-60))
    assert absent_before(2, 30, 1000.0, 10.0)[()] > 0.9


def test_nearest_deploy_within_window() -> None:
    times = np.array([0, 100, 250, 400])
    assert nearest_deploy(times, 260, before_us=100, after_us=5) == 2
    assert nearest_deploy(times, 395, before_us=10, after_us=10) == 3
    assert nearest_deploy(times, 600, before_us=100, after_us=100) is None


@pytest.mark.parametrize("with_exposure", [False, True])
def test_population_timeline_is_the_same_computed_in_chunks(
    with_exposure: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Populations are run a chunk of crashes at a time (memory); every figure must be the one
    the whole table at once gives, to the bit, however the chunks fall."""
    rng = np.random.default_rng(4)
    n, n_pops = 3000, 40
    time_us = (rng.uniform(0, 1000, n) * H).astype(np.int64)
    pop = rng.choice(n_pops, n, p=np.arange(1, n_pops + 1) / (n_pops * (n_pops + 1) / 2))
    service = rng.integers(-1, 3, n).astype(np.int32)
    curve = None
    if with_exposure:
        start = (rng.uniform(0, 900, 60) * H).astype(np.int64)
        curve = CumulativeExposure(
            start, start + 100 * H, rng.uniform(1, 50, 60), np.arange(60) % 3
        )

    def run() -> list[list[float]]:
        tl = population_timeline(
            time_us=time_us,
            population=pop.astype(np.int32),
            service=service,
            n_pops=n_pops + 2,  # two populations without crashes
            time_order=np.argsort(time_us, kind="stable"),
            curve=curve,
        )
        cp = tl.changepoint
        fields = (cp.time_us, cp.before, cp.after, cp.exposure_before, cp.exposure_after)
        return [a.tolist() for a in (*fields, cp.ratio, cp.llr, cp.p_value, tl.stratum)]

    whole = run()
    assert min(whole[7]) < 1.0  # not vacuous: some population has a change point
    for rows in (1, 97, 1000):
        monkeypatch.setattr(segments, "CHUNK_ROWS", rows)
        assert run() == whole
