"""``corecensus analyze --crashes FILE --exposure CSV``: a faulty CPU whose crashes stopped at a
microcode update that only the host's exposure shows (issue 9), and the cases where the same
crashes must not be called stopped: the exposure without its microcode column (an older
file), and a host that was only switched off."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from corecensus.agent.exposure import AGENT_SERVICE
from corecensus.app.analyze import exposure_from_heartbeats
from corecensus.cli.main import main
from corecensus.epidemiology import CrashTable, analyze
from corecensus.store import Heartbeat

DAY = 86_400_000_000
T0 = 1_717_200_000_000_000
HEADER = "host,time,cpu,host_cpus,service,signature,anomalies,microcode\n"


def _iso(day: float) -> str:
    return datetime.fromtimestamp((T0 + int(day * DAY)) / 1e6, tz=UTC).isoformat()


def _crashes(tmp_path: Path, bad_days: list[float]) -> Path:
    """40 hosts of 16 CPUs with spread background crashes; h07's CPU 11 crashes on
    ``bad_days`` in many signatures, every other one with %rsp off by 8."""
    rng = np.random.default_rng(4)
    lines = [
        f"h{int(rng.integers(40)):02d},{T0 + int(rng.integers(30 * DAY))},"
        f"{int(rng.integers(16))},16,api,bg{i % 9},,0x10"
        for i in range(400)
    ]
    lines = [line for line in lines if not line.startswith("h07,")]
    for i, d in enumerate(bad_days):
        anomaly = "sp_off_by_8" if i % 2 == 0 else ""
        lines.append(f"h07,{T0 + int(d * DAY)},11,16,api,bg{i},{anomaly},0x10")
    lines.append(f"h00,{T0 + 30 * DAY},3,16,api,bg0,,0x10")  # the data end on day 30
    path = tmp_path / "crashes.csv"
    path.write_text(HEADER + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def _exposure(tmp_path: Path, h07: list[tuple[float, float, str]], *, microcode: bool) -> Path:
    head = "host,start,end,service,version,cpu_model" + (",microcode" if microcode else "")
    lines = [head]
    for h in range(40):
        for a, b, code in h07 if h == 7 else [(0.0, 30.0, "0x10")]:
            extra = f",{code}" if microcode else ""
            lines.append(f"h{h:02d},{_iso(a)},{_iso(b)},api,1,m{extra}")
    path = tmp_path / f"exposure-{int(microcode)}.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _h07(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(["analyze", *argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    [host] = [h for h in doc["hosts"] if h["kind"] == "hardware-suspect"]
    assert host["host"] == "h07"
    return dict(host)


def _rescreen(host: dict[str, object]) -> bool:
    recs = host["recommendations"]
    assert isinstance(recs, list)
    return bool(recs[0].startswith("Rescreen h07"))


def test_stop_at_a_microcode_update_seen_in_the_exposure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crashes = _crashes(tmp_path, list(np.linspace(2, 11.2, 6)))
    updated = [(0.0, 11.5, "0x10"), (11.5, 30.0, "0x11")]
    host = _h07(
        capsys,
        "--crashes",
        str(crashes),
        "--exposure",
        str(_exposure(tmp_path, updated, microcode=True)),
    )
    assert _rescreen(host)
    reasons = host["reasons"]
    assert isinstance(reasons, list)
    assert any(
        r.startswith("Microcode changed from 0x10 to 0x11 after they stopped") for r in reasons
    )
    # must not fire: the same exposure from an older exposure.csv without microcode
    older = _exposure(tmp_path, updated, microcode=False)
    assert not _rescreen(_h07(capsys, "--crashes", str(crashes), "--exposure", str(older)))


def test_host_switched_off_is_not_a_stop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crashes = _crashes(tmp_path, list(np.linspace(2, 14, 10)))
    # in wall time to day 30 the quiet stretch is a stop (p = (12 / 28) ** 9 = 4.9e-4) ...
    assert _rescreen(_h07(capsys, "--crashes", str(crashes)))
    # ... but the host was off from day 14.5: its exposure says so
    off = _exposure(tmp_path, [(0.0, 14.5, "0x10")], microcode=True)
    host = _h07(capsys, "--crashes", str(crashes), "--exposure", str(off))
    assert not _rescreen(host)
    assert any("Take the CPU out on h07" in r for r in host["recommendations"])  # type: ignore[attr-defined]


def test_heartbeats_carry_the_update_into_the_exposure() -> None:
    """``analyze`` from a store: the agent's own heartbeats (every 300 s) carry the host's
    microcode; an update on day 11.5 after h07's last suspect crash on day 11.2 is a stop, while
    the same heartbeats from an older agent (no microcode) say nothing and service heartbeats
    add observed time only."""
    rows = []
    rng = np.random.default_rng(4)
    for i in range(400):
        host = f"h{int(rng.integers(40)):02d}"
        if host != "h07":
            rows.append(_row(host, float(rng.uniform(0, 30)), int(rng.integers(16)), f"bg{i % 9}"))
    for i, d in enumerate(np.linspace(2, 11.2, 6)):
        rows.append(_row("h07", float(d), 11, f"bg{i}", anomalous=i % 2 == 0))
    rows.append(_row("h00", 30.0, 3, "bg0"))
    table = CrashTable.from_rows(rows)
    beats = [
        Heartbeat(
            "h07",
            T0 + t,
            AGENT_SERVICE,
            "0.1.0",
            microcode="0x10" if t < 11.5 * DAY else "0x11",
            kernel="6.1.0",
        )
        for t in range(0, 30 * DAY, 300_000_000)
    ]
    beats.append(Heartbeat("h07", T0, "api", "1"))
    exposure = exposure_from_heartbeats(beats)
    assert exposure is not None and exposure.microcode is not None
    [host] = analyze(table, exposure).hosts
    assert host.recommendations[0].startswith("Rescreen h07")
    assert any("first seen 2024-06-12T" in r and "in its exposure" in r for r in host.reasons)
    older = exposure_from_heartbeats(
        [dataclasses.replace(b, microcode=None, kernel=None) for b in beats]
    )
    assert older is not None and older.microcode is None and older.kernel is None
    [host] = analyze(table, older).hosts
    assert host.recommendations[0].startswith("Screen h07")


def _row(
    host: str, day: float, cpu: int, pop: str, *, anomalous: bool = False
) -> dict[str, object]:
    return {
        "host": host,
        "population": pop,
        "time_us": T0 + int(day * DAY),
        "cpu": cpu,
        "host_cpus": 16,
        "service": "api",
        "anomalies": ("sp_off_by_8",) if anomalous else (),
        "microcode": "0x10",
    }
