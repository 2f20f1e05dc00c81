"""Records: the screen result round-trips through JSON, bad records are clear errors, the golden
file is validated, hardware-suspect crash populations recommend screens, and the public surface
is what ``__all__`` says."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from corecensus import screening
from corecensus.errors import ScreeningError
from corecensus.screening import (
    CheckResult,
    CpuReport,
    DutyReport,
    GoldenValues,
    Mode,
    Outcome,
    ScreenDecision,
    ScreenResult,
    ScreenVerdict,
    WorkerStatus,
    recommend_screens,
)
from corecensus.screening.wire import BackgroundPlan, RunRecord, RunStatus, WorkerJob, run_seed


def sample() -> ScreenResult:
    return ScreenResult(
        screen_id="ab" * 16,
        host="db-17",
        started_at=1_700_000_000_000_000,
        seconds=12.5,
        mode=Mode.BACKGROUND,
        budget_s=120.0,
        seed=42,
        scale=0.05,
        kernel="6.1.0",
        version="0.1.0",
        cpus=(
            CpuReport(
                cpu=3,
                model_key="GenuineIntel:6:106:6",
                model_name="Xeon",
                microcode="0xd0003a5",
                package_id=0,
                core_id=3,
                thread_siblings=(35,),
                status=WorkerStatus.COMPLETED,
                verified_cpu=3,
                partner=4,
                rounds=7,
                runs=91,
                seconds=120.0,
                cpu_seconds=1.02,
                duty=DutyReport(119.0, 1.0, 1.0 / 119.0, 50, 0.03, 0.05, 0.3, True),
            ),
        ),
        results=(
            CheckResult(
                3,
                "libm_pow",
                "libm",
                Outcome.FAILED_REPRODUCIBLE,
                "int(pow(1.1, 53)) = 156",
                "int(pow(1.1, 53)) = 0",
                0.4,
                runs=7,
                failures=7,
                suspect_cpu=3,
            ),
        ),
        decision=ScreenDecision(
            ScreenVerdict.QUARANTINE_CPUS, quarantine_cpus=(3,), reasons=("CPU 3: ...",)
        ),
    )


def test_screen_result_round_trips() -> None:
    r = sample()
    assert ScreenResult.from_json(r.to_json()) == r
    rows = r.rows()
    assert rows[0]["host"] == "db-17" and rows[0]["verdict"] == "quarantine_cpus"
    assert rows[0]["microcode"] == "0xd0003a5" and rows[0]["outcome"] == "failed_reproducible"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(kind="crash"), "not a screen record"),
        (lambda d: d.pop("host"), "malformed screen record"),
        (lambda d: d["results"][0].update(outcome="exploded"), "malformed screen record"),
    ],
)
def test_bad_screen_records_are_screening_errors(mutate: object, message: str) -> None:
    doc = sample().to_json()
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(ScreeningError, match=message):
        ScreenResult.from_json(doc)


def test_wire_records_round_trip_and_reject_garbage() -> None:
    job = WorkerJob(
        1, 0, (("a", "m:A"),), 0.5, None, 12.5, 9, background=BackgroundPlan(), done=((0, "a"),)
    )
    assert WorkerJob.from_json(job.to_json()) == job
    rec = RunRecord(1, "a", 2, 1, 5, RunStatus.FAILED, "e", "o", "fp", "d", 0.1, 0.1, (1, 1))
    assert RunRecord.from_json(rec.to_json()) == rec
    with pytest.raises(ScreeningError, match="malformed worker job"):
        WorkerJob.from_json({"cpu": 1})
    with pytest.raises(ScreeningError, match="malformed run record"):
        RunRecord.from_json({**rec.to_json(), "status": "maybe"})


def test_seeds_are_shared_by_cpus_and_new_for_retries_and_rounds() -> None:
    assert run_seed(1, 0, "k", 0) == run_seed(2, 0, "k", 0)  # round 0: golden seed
    assert run_seed(1, 0, "k", 1) != run_seed(1, 0, "k", 0)
    assert run_seed(1, 1, "k", 0) != run_seed(2, 1, "k", 0)
    assert run_seed(1, 1, "k", 0) != run_seed(1, 1, "j", 0)


def test_golden_file_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "golden.json"
    assert GoldenValues.load(path).models == {}
    g = GoldenValues().with_entries({("M", "k", 1.0): "fp1"})
    g = g.with_entries({("M", "k", 1.0): "other", ("M", "j", 0.5): "fp2"})
    assert g.lookup("M", "k", 1.0) == "fp1"  # existing values win
    # The directory is the operator's to make (issue 10: a mistyped path silently made one).
    with pytest.raises(ScreeningError, match="cannot write golden values"):
        g.save(path)
    assert not path.parent.exists()
    path.parent.mkdir()
    g.save(path)
    assert GoldenValues.load(path) == GoldenValues(g.to_json()["models"])  # type: ignore[arg-type]
    assert GoldenValues.load(path).lookup("M", "j", 0.5) == "fp2"
    path.write_text('{"format": 2, "models": {}}')
    with pytest.raises(ScreeningError, match="not a golden-values file of format 1"):
        GoldenValues.load(path)
    path.write_text('{"format": 1, "models": {"M": {"k": {"scale=1": 5}}}}')
    with pytest.raises(ScreeningError, match="model 'M' must map"):
        GoldenValues.load(path)


def test_hardware_suspect_populations_recommend_screens() -> None:
    analysis = {
        "populations": [
            {
                "id": "p1",
                "verdict": "hardware-suspect",
                "suspects": [
                    {"host": "db-17", "cpu": 3, "crashes": 41, "expected": 0.2, "p_value": 1e-12},
                    {"host": "db-17", "cpu": 35, "crashes": 9, "expected": 0.2, "p_value": 1e-4},
                    {"host": "web-2", "cpu": None, "crashes": 5, "expected": 0.5},
                ],
            },
            {"id": "p2", "verdict": "software", "suspects": [{"host": "db-99", "cpu": 1}]},
        ],
        "hosts": [],
    }
    recs = recommend_screens(analysis["populations"])  # type: ignore[arg-type]
    assert [r.host for r in recs] == ["db-17", "web-2"]
    db = recs[0]
    assert db.cpus == (3, 35) and db.populations == ("p1",)
    assert "41 crashes on CPU 3 (expected 0.2, p=1e-12)" in db.reason
    assert db.command() == "corecensus screen --mode oneshot --cpus 3,35 --json"
    assert recs[1].cpus == () and recs[1].command() == "corecensus screen --mode oneshot --json"
    with pytest.raises(ScreeningError, match="not an integer"):
        recommend_screens(
            [
                {
                    "id": "x",
                    "verdict": "hardware-suspect",
                    "suspects": [{"host": "h", "cpu": "three"}],
                }
            ]
        )


def test_public_surface_matches_all() -> None:
    public = {
        name
        for name, value in vars(screening).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert public == set(screening.__all__)
