"""A fleet of real cores -- the libunwind signal race mixed with ordinary crashes -- through the
commands a user runs (`corecensus ingest`, `corecensus analyze --json`): the race is one
population keyed by the interrupted function, whatever stale callers each core carries.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from corecensus.app.racewindow import race_window
from corecensus.coredump import inspect_core
from corecensus.signature import RACE_PREFIX, SignatureGenerator, default_pipeline, signal_race
from corecensus.signature.rules import SignalRaceRule
from crashers import CrashResult
from libunwind_race import RaceCore

pytestmark = pytest.mark.kernel_cores

# Ordinary crashes, two of which look half like the race: a return to NULL with no signal frame,
# and a dead signal frame with no bad return.
ORDINARY = (
    "null_deref",
    "abort",
    "call_null_fp",
    "return_to_null",
    "ret_sp_off_by_8",
    "dead_signal_frame",
    "signal_race",
)


def _corecensus(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "corecensus", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "COLUMNS": "1000"},  # one line per row and sentence
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _place(core: Path, fleet: Path, name: str, host: str, time_s: int) -> None:
    target = fleet / name
    target.mkdir()
    shutil.copy(core, target / "core")
    sidecar = {"COREDUMP_HOSTNAME": host, "COREDUMP_TIMESTAMP": str(time_s * 1_000_000)}
    (target / "core.json").write_text(json.dumps(sidecar))


@pytest.fixture(scope="module")
def fleet_db(
    libunwind_race_cores: list[RaceCore],
    kernel_cores: Mapping[str, CrashResult],
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    root = tmp_path_factory.mktemp("race_fleet")
    fleet = root / "fleet"
    fleet.mkdir()
    t0 = 1_780_000_000
    for i, rc in enumerate(libunwind_race_cores):
        _place(rc.core, fleet, f"race{i}", f"host{i}", t0 + 3600 * i)
    for i, name in enumerate(ORDINARY):
        core = kernel_cores[name].core
        assert core is not None
        _place(core, fleet, name, f"host{i % 4}", t0 + 600 * i)
    db = root / "fleet.duckdb"
    _corecensus("ingest", "--db", str(db), "--jobs", "1", str(fleet))
    # Four hosts ran the service 24 h each: 96 process-hours.
    (root / "exposure.csv").write_text(
        "host,start,end,service,version,cpu_model\n"
        + "".join(f"host{i},2026-05-28T00:00:00Z,2026-05-29T00:00:00Z,,,\n" for i in range(4))
    )
    return db


@pytest.fixture(scope="module")
def analysis(fleet_db: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(_corecensus("analyze", "--db", str(fleet_db), "--json"))
    return result


def test_exactly_one_race_population(analysis: dict[str, Any]) -> None:
    races = [p for p in analysis["populations"] if p["signature"].startswith(RACE_PREFIX)]
    assert len(races) == 1, [p["signature"] for p in analysis["populations"]]
    race = races[0]
    assert "_Ux86_64_setcontext" in race["signature"]
    assert "libunwind" in race["signature"]
    assert race["crashes"] == 3
    assert race["hosts"] == 3
    text = " ".join(race["evidence"])
    assert "3 of 3 crashes" in text
    assert "_Ux86_64_setcontext+0x52 ×3" in text
    assert "one instruction wide" in text
    assert "without SA_SIGINFO" in text
    assert "race between a signal handler and _Ux86_64_setcontext" in text
    # Every ordinary crash is somewhere else, and none of them is called a race.
    others = sum(p["crashes"] for p in analysis["populations"] if p is not race)
    assert others == len(ORDINARY)


def test_the_stale_callers_alone_would_split_the_race(
    libunwind_race_cores: list[RaceCore],
) -> None:
    """Why the race rule exists: signed by their frames, the three cores (one per throwing code
    path) are three populations; keyed by the interrupted function, one."""
    records = [inspect_core(rc.core) for rc in libunwind_race_cores]
    without = SignatureGenerator(
        [r for r in default_pipeline() if not isinstance(r, SignalRaceRule)]
    )
    assert len({without.generate(r).symbolic for r in records}) == 3
    assert len({SignatureGenerator().generate(r).symbolic for r in records}) == 1


def test_ordinary_crashes_are_not_races(kernel_cores: Mapping[str, CrashResult]) -> None:
    for name in ORDINARY:
        core = kernel_cores[name].core
        assert core is not None
        assert signal_race(inspect_core(core)) is None, name


# The rates a user would give for the race: a 250 Hz profiling timer, 60,000 throws per second.
RATES = ("--signal-hz", "250", "--event-rate", "60000")


def test_race_window_check_only_for_the_race_and_only_when_asked(
    fleet_db: Path, analysis: dict[str, Any]
) -> None:
    exposure = str(fleet_db.parent / "exposure.csv")
    args = ("analyze", "--db", str(fleet_db), "--exposure", exposure)
    checked: dict[str, Any] = json.loads(_corecensus(*args, *RATES, "--json"))
    plain: dict[str, Any] = json.loads(_corecensus(*args, "--json"))
    # Without the flags no population has a check, with or without exposure.
    for doc in (analysis, plain):
        assert not [p["id"] for p in doc["populations"] if "race_window" in p]
    with_check = [p for p in checked["populations"] if "race_window" in p]
    assert len(with_check) == 1
    race = with_check[0]
    assert race["signature"].startswith(RACE_PREFIX)
    w = race["race_window"]
    assert "_Ux86_64_setcontext" in w["function"]
    # measured in the libunwind the cores ran (it is on this machine, same build-id)
    assert w["window_measured"] is True
    assert "libunwind" in w["window_source"]
    assert w["window_instructions"] == 1
    assert len(w["interrupted_offsets"]) == 1
    assert w["implied_per_hour"] == pytest.approx(60_000 * 250 * 1e-9 * 3600)
    assert w["exposure_hours"] == pytest.approx(96.0)
    assert w["observed_per_hour"] == pytest.approx(3 / 96)
    assert w["ratio"] == pytest.approx((3 / 96) / w["implied_per_hour"])
    assert w["agreement"] == "above"
    # the other populations are untouched by the flags
    strip = [{k: v for k, v in p.items() if k != "race_window"} for p in checked["populations"]]
    assert strip == plain["populations"]


def test_race_window_check_in_the_table(fleet_db: Path) -> None:
    exposure = str(fleet_db.parent / "exposure.csv")
    args = ("analyze", "--db", str(fleet_db), "--exposure", exposure)
    title = "signal races: the crash rate the window implies"
    table = _corecensus(*args, *RATES)
    assert title in table
    assert "Race window check (method: events × signal Hz × window)" in table
    assert "implies 54 crashes per process-hour" in table
    assert title not in _corecensus(*args)
    # ns per instruction is the user's to change; without exposure the observed rate is absent
    doc = json.loads(
        _corecensus(
            "analyze", "--db", str(fleet_db), *RATES, "--ns-per-instruction", "0.25", "--json"
        )
    )
    (w,) = [p["race_window"] for p in doc["populations"] if "race_window" in p]
    assert w["implied_per_hour"] == pytest.approx(13.5)
    assert w["observed_per_hour"] is None and w["agreement"] == "unknown"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--signal-hz", "250"), "--signal-hz and --event-rate go together"),
        (("--event-rate", "5"), "--signal-hz and --event-rate go together"),
        (("--signal-hz", "0", "--event-rate", "5"), "--signal-hz must be a positive number"),
        (("--signal-hz", "1", "--event-rate", "-5"), "--event-rate must be a positive number"),
        (("--signal-hz", "1", "--event-rate", "nan"), "--event-rate must be a positive number"),
        (("--ns-per-instruction", "2"), "--ns-per-instruction needs --signal-hz"),
    ],
)
def test_bad_race_flags_are_one_line_errors(
    fleet_db: Path, flags: tuple[str, ...], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "corecensus", "analyze", "--db", str(fleet_db), *flags],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def test_window_falls_back_to_the_offsets_seen(
    libunwind_race_cores: list[RaceCore], kernel_cores: Mapping[str, CrashResult]
) -> None:
    records = [inspect_core(rc.core) for rc in libunwind_race_cores]
    asked: list[tuple[str, str | None, tuple[int, ...], str]] = []

    def unreadable(path: str, build_id: str | None, offsets: Sequence[int], arch: str) -> None:
        asked.append((path, build_id, tuple(offsets), arch))

    for measure in (None, unreadable):
        w = race_window(records, measure)
        assert w is not None
        assert (w.instructions, w.measured) == (1, False)
        assert w.source == "distinct interrupted offsets seen"
    # asked once, for the one libunwind all three cores ran, at the one offset they share
    ((path, build_id, offsets, arch),) = asked
    assert "libunwind" in path and build_id and arch == "x86_64"
    assert len(offsets) == 1
    ordinary = [inspect_core(c) for n in ORDINARY if (c := kernel_cores[n].core) is not None]
    assert race_window(ordinary, unreadable) is None
    assert len(asked) == 1
