"""``corecensus demo``: a small fleet of real crashes, ingested and analyzed end to end.

Steps: compile ``ledger`` with the machine's compiler, crash it once per planned crash so the
kernel writes a real core each time, label each core with a sidecar (host, CPU, version, ...),
write exposure and deploys, ingest into a DuckDB store, analyze, report.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corecensus.app.analyze import AnalysisReport, analyze_store
from corecensus.app.ingest import store_records
from corecensus.demo.crashes import build_ledger, crash_once, sample_core, sample_executable
from corecensus.demo.fleet import DemoFleet, plan_fleet
from corecensus.demo.kernel_cores import kernel_core_problem
from corecensus.model import CrashRecord
from corecensus.pipeline import parse_cores
from corecensus.store import open_store

__all__ = ["DemoRun", "analyze_demo", "run_demo"]

Progress = Callable[[str, int, int], None]


@dataclass
class DemoRun:
    workdir: Path
    fleet: DemoFleet
    db: Path
    exposure: Path
    deploys: Path
    binaries: Path
    used_samples: str | None = None
    records: list[CrashRecord] = field(default_factory=list)
    ingested: int = 0
    duplicates: int = 0

    @property
    def anomaly_classes(self) -> Counter[str]:
        return Counter(",".join(r.anomaly_names) or "none" for r in self.records)

    def summary_json(self) -> dict[str, Any]:
        """What the demo built: where, how many crashes and hosts, how they parsed."""
        return {
            "workdir": str(self.workdir),
            "db": str(self.db),
            "crashes": len(self.fleet.crashes),
            "hosts": len(self.fleet.hosts),
            "ingested": self.ingested,
            "duplicates": self.duplicates,
            "status": dict(Counter(str(r.status) for r in self.records)),
            "anomaly_classes": dict(self.anomaly_classes),
        }


def run_demo(
    workdir: Path,
    *,
    jobs: int = 2,
    seed: int = 7,
    progress: Progress | None = None,
    proc_root: Path = Path("/proc"),
) -> DemoRun:
    """Build the demo fleet's crashes under ``workdir`` (emptied first) and ingest them.

    ``proc_root`` is where ``sys/kernel/core_pattern`` is read (injectable for tests).
    """
    # Absolute: the crashing program runs with its own directory as the working directory.
    workdir = workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    fleet = plan_fleet(seed)
    cores_dir = workdir / "cores"
    problem = kernel_core_problem(proc_root)
    if problem is None:
        exe = build_ledger(workdir / "build")
    else:
        exe = sample_executable(workdir / "build" / "samples")
    run = DemoRun(
        workdir=workdir,
        fleet=fleet,
        db=workdir / "corecensus.duckdb",
        exposure=workdir / "exposure.csv",
        deploys=workdir / "deploys.csv",
        binaries=exe.parent,
        used_samples=problem,
    )
    total = len(fleet.crashes)
    cores: list[Path] = []
    for i, crash in enumerate(fleet.crashes):
        name = f"core.ledger.{crash.host.name}.{i:03d}"
        dest = cores_dir / name
        if problem is None:
            produced = crash_once(exe, crash.mode, workdir / "run" / f"{i:03d}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            produced.rename(dest)
        else:
            sample_core(crash.mode, i, dest)
        (cores_dir / f"{name}.json").write_text(json.dumps(crash.sidecar(), indent=1))
        cores.append(dest)
        if progress:
            progress("crash", i + 1, total)
    fleet.write_exposure(run.exposure)
    fleet.write_deploys(run.deploys)
    store = open_store(run.db)
    try:
        for done, rec in enumerate(parse_cores(cores, jobs=jobs, binaries=[run.binaries]), 1):
            run.records.append(rec)
            if progress:
                progress("ingest", done, total)
        summary = store_records(store, run.records)
        run.ingested, run.duplicates = summary.ingested, summary.duplicates
    finally:
        store.close()
    return run


def analyze_demo(run: DemoRun) -> AnalysisReport:
    """The demo fleet's analysis, with its exposure and deploys."""
    store = open_store(run.db, read_only=True)
    try:
        return analyze_store(store, exposure_csv=run.exposure, deploys_csv=run.deploys)
    finally:
        store.close()
