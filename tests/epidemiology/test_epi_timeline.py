"""A flagged host's fault timeline from its own record (issue 9): the quiet stretch measured in
the host's observed time (its exposure), microcode and kernel changes seen in its exposure even
when it never crashes again. Each rule with the case where it must fire and the cases where it
must not (a live fault quiet only because its host was off; a microcode change with the fault
still live); the quiet-stretch p-value against a simulated null with the host switched off."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from test_epi_placement import DAY, N_HOSTS, T0, background, crash, faulty

from corecensus.epidemiology import CrashTable, ExposureTable, HostFinding, analyze
from corecensus.epidemiology.timeline import (
    OBSERVED_GAP_US,
    STOP_ALPHA,
    STOP_ALPHA_CHANGED,
    HostRecord,
    host_records,
    quiet_p,
)


def exposure(h150: list[tuple[float, float, str]], **columns: bool) -> ExposureTable:
    """Every host runs api for the 30 days on microcode 0x10; h150's rows are ``(from day, to
    day, microcode)``. ``microcode=False`` leaves the column out (an older exposure.csv)."""
    rows: list[dict[str, Any]] = []
    for h in range(N_HOSTS):
        spans = h150 if h == 150 else [(0.0, 30.0, "0x10")]
        for a, b, code in spans:
            row = {
                "host": f"h{h:03d}",
                "start": T0 + int(a * DAY),
                "end": T0 + int(b * DAY),
                "service": "api",
                "version": "1",
                "cpu_model": "m",
            }
            if columns.get("microcode", True):
                row["microcode"] = code
            rows.append(row)
    return ExposureTable.from_rows(rows)


def quiet_h150(days: Any) -> list[dict[str, Any]]:
    """The background without h150's own crashes, h150's bad CPU 9 crashing on ``days``, and
    a crash on day 30 that ends the data."""
    rows = [r for r in background() if r["host"] != "h150"]
    rows += faulty("h150", 9, days, microcode="0x10", host_cpus=32)
    rows.append(crash("h000", 30.0, 1, microcode="0x10", host_cpus=32))
    return rows


def h150(rows: list[dict[str, Any]], exp: ExposureTable | None) -> HostFinding:
    [h] = analyze(CrashTable.from_rows(rows), exp).hosts
    assert h.host == "h150"
    return h


# Six crashes from day 2 to day 11.2, quiet to day 30: p = (9.2 / 28) ** 5 = 0.0038 for the
# quiet stretch, above STOP_ALPHA.
STOPPED_DAYS = np.linspace(2, 11.2, 6)


def test_microcode_update_seen_only_in_the_exposure_makes_a_stop() -> None:
    # no suspect crash after the update on day 11.5: p = (9.5 / 28) ** 5 = 0.0045
    assert STOP_ALPHA < (9.2 / 28) ** 5 < (9.5 / 28) ** 5 < STOP_ALPHA_CHANGED
    rows = quiet_h150(STOPPED_DAYS)
    h = h150(rows, exposure([(0, 11.5, "0x10"), (11.5, 30, "0x11")]))
    assert h.recommendations[0].startswith("Rescreen h150")
    assert "microcode changed from 0x10 to 0x11 after they stopped" in h.recommendations[0]
    assert not any("Take" in r for r in h.recommendations)
    assert any(
        "stopped (no suspect crash since the change first seen 2024-06-12T" in r
        and "probability 0.0045" in r
        for r in h.reasons
    )
    assert any(
        r.startswith("Microcode changed from 0x10 to 0x11 after they stopped, first seen")
        and r.endswith("in its exposure.")
        for r in h.reasons
    )
    assert "Quiet stretch measured in the host's observed time (its exposure intervals)." in (
        h.reasons
    )
    # must not fire: the same exposure from an older exposure.csv without its microcode column
    # (read as before) shows no change, and 0.0038 is not below STOP_ALPHA
    h = h150(rows, exposure([(0, 11.5, "0x10"), (11.5, 30, "0x11")], microcode=False))
    assert any("still going at the end of the data" in r for r in h.reasons)
    assert any(r.startswith("Take the CPU out on h150") for r in h.recommendations)
    # ... nor does a host whose microcode stayed the same
    h = h150(rows, exposure([(0, 30, "0x10")]))
    assert any(r.startswith("Take the CPU out on h150") for r in h.recommendations)


def test_update_long_after_the_last_crash_is_not_what_stopped_it() -> None:
    """Anchored at the change: a fault quiet from day 11.2 with an update on day 20 has had
    (18 / 28) ** 5 = 0.11 of its chance to crash after the update; the quiet stretch before
    it is not evidence about the update (a live fault quiet by chance looks so)."""
    rows = quiet_h150(STOPPED_DAYS)
    h = h150(rows, exposure([(0, 20, "0x10"), (20, 30, "0x11")]))
    assert any("still going at the end of the data" in r for r in h.reasons)
    assert any(
        r.startswith("Microcode changed from 0x10 to 0x11 after the last of them")
        for r in h.reasons
    )
    assert any(r.startswith("Take the CPU out on h150") for r in h.recommendations)


def test_live_fault_on_a_host_switched_off_is_not_a_stop() -> None:
    # ten crashes from day 2 to day 14, then nothing: in wall time to day 30 that is
    # p = (12 / 28) ** 9 = 4.9e-4, a stop; but the host was off from day 14.5
    rows = quiet_h150(np.linspace(2, 14, 10))
    assert STOP_ALPHA > (12 / 28) ** 9
    h = h150(rows, None)  # without exposure: wall time, as before, and a stop
    assert h.recommendations[0].startswith("Rescreen h150")
    wall = "Quiet stretch measured in wall time to the end of the data (no exposure for this host)."
    assert wall in h.reasons
    h = h150(rows, exposure([(0, 14.5, "0x10")]))
    assert any("still going at the end of the data" in r for r in h.reasons)
    assert any(r.startswith("Take the CPU out on h150") for r in h.recommendations)
    # off from day 14.5 to 28, back for two days with new microcode: a change after the last
    # crash, but (12 / 14.5) ** 9 = 0.18 of observed time is no quiet stretch
    h = h150(rows, exposure([(0, 14.5, "0x10"), (28, 30, "0x11")]))
    assert any("still going at the end of the data" in r for r in h.reasons)
    assert any("after the last of them" in r for r in h.reasons)
    assert any(r.startswith("Take the CPU out on h150") for r in h.recommendations)


def test_microcode_change_with_the_fault_still_live_is_not_a_stop() -> None:
    rows = quiet_h150(np.linspace(2, 29, 8))
    h = h150(rows, exposure([(0, 10, "0x10"), (10, 30, "0x11")]))
    assert any("still going at the end of the data" in r for r in h.reasons)
    assert any(
        r.startswith("Microcode changed from 0x10 to 0x11 while they went on, first seen")
        for r in h.reasons
    )
    assert any(r.startswith("Take the CPU out on h150") for r in h.recommendations)


def test_exposure_that_misses_suspect_crashes_falls_back_to_wall_time() -> None:
    rows = quiet_h150(STOPPED_DAYS)
    # h150's exposure ends on day 5 but it crashed until day 11.2: the record is incomplete
    h = h150(rows, exposure([(0, 5, "0x10")]))
    assert any("its exposure misses some of its suspect crashes" in r for r in h.reasons)
    assert any("still going at the end of the data" in r for r in h.reasons)


def test_heartbeat_gaps_are_closed_and_real_gaps_kept() -> None:
    rng = np.random.default_rng(1)
    period = 300_000_000
    starts = np.cumsum(rng.integers(period, period + 30_000_000, 200))  # jittered beats
    starts = np.concatenate([starts, starts[-1] + 2 * OBSERVED_GAP_US + starts[:50]])
    table = ExposureTable.from_rows(
        [{"host": "a", "start": int(s), "end": int(s + period)} for s in starts.tolist()]
    )
    [rec] = host_records(table, table.host.codes, [0]).values()
    assert rec.starts.size == 2  # the jitter closed, the long gap kept
    assert rec.observed(int(starts[0]), int(starts[-1] + period)) == pytest.approx(
        (starts[199] + period - starts[0]) + (starts[-1] + period - starts[200])
    )


def _record(spans: list[tuple[float, float]]) -> HostRecord:
    return HostRecord(
        starts=np.array([int(a * DAY) for a, _ in spans], dtype=np.int64),
        ends=np.array([int(b * DAY) for _, b in spans], dtype=np.int64),
        facts={},
    )


@pytest.mark.parametrize("k", [3, 9])
def test_quiet_stretch_p_is_valid_in_observed_time(k: int) -> None:
    """Under the null (a constant rate whenever the host runs; off on days 10-15 and from day
    25 to the end of the data on day 35) the share of hosts with p <= alpha is alpha; the same
    crashes measured in wall time call far more of them stopped."""
    rec = _record([(0, 10), (15, 25)])
    lengths = rec.ends - rec.starts
    edges = np.concatenate([[0], np.cumsum(lengths)])
    rng = np.random.default_rng(k)
    n = 4_000
    u = np.sort(rng.random((n, k)) * edges[-1], axis=1)  # uniform in observed time
    piece = np.searchsorted(edges, u, side="right") - 1
    t = (rec.starts[piece] + (u - edges[piece])).astype(np.int64)
    end = 35 * DAY
    p = np.array([quiet_p(row, end, rec)[0] for row in t])
    wall = np.array([quiet_p(row, end, None)[0] for row in t])
    for alpha in (0.01, 0.05, 0.2):
        share = float(np.mean(p <= alpha))
        assert abs(share - alpha) < 4 * np.sqrt(alpha * (1 - alpha) / n) + 1e-3
    # the wall clock counts the ten days off at the end as quiet
    assert float(np.mean(wall <= 0.05)) > 0.1
