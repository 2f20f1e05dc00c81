"""A fleet of real cores -- the libunwind signal race mixed with ordinary crashes -- through the
commands a user runs (`corecensus ingest`, `corecensus analyze --json`): the race is one
population keyed by the interrupted function, whatever stale callers each core carries.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

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
def analysis(
    libunwind_race_cores: list[RaceCore],
    kernel_cores: Mapping[str, CrashResult],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
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
    db = str(root / "fleet.duckdb")
    _corecensus("ingest", "--db", db, "--jobs", "1", str(fleet))
    result: dict[str, Any] = json.loads(_corecensus("analyze", "--db", db, "--json"))
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
