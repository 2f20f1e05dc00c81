"""The census: crash records in the store → populations → epidemiology → findings.

Used by ``corecensus analyze``, the demo and (later) the collector's report. Exposure comes from
``exposure.csv`` when given; else from agent heartbeats in the store (each heartbeat stands for
:data:`HEARTBEAT_PERIOD_S` of one process running); else analysis runs without rates and says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from corecensus.epidemiology import analyze
from corecensus.epidemiology.findings import Analysis, PopulationInfo
from corecensus.epidemiology.table import Categorical, CrashTable, Deploys, ExposureTable
from corecensus.ingest.tables import read_deploys, read_exposure
from corecensus.signature import PopulationLevel
from corecensus.store import DeployRow, ExposureRow, Heartbeat, ScreenResultRow, Store

__all__ = ["HEARTBEAT_PERIOD_S", "CensusInputs", "crash_table", "run_census"]

UNKNOWN_HOST = "(unknown host)"
# The agent's heartbeat interval; a heartbeat is evidence of this much exposure (seconds).
HEARTBEAT_PERIOD_S = 300
_MAX_SAMPLE_FRAMES = 8


@dataclass(frozen=True, slots=True)
class CensusInputs:
    """Where the exposure and deploys came from, and the latest SDC screen of each host."""

    exposure_source: str
    deploys_source: str
    screens: tuple[ScreenResultRow, ...] = ()

    def screens_json(self, hosts: Iterable[str] | None = None) -> list[dict[str, object]]:
        """The screens (of ``hosts`` if given) as shown beside crash populations."""
        wanted = None if hosts is None else set(hosts)
        out: list[dict[str, object]] = []
        for row in self.screens:
            if wanted is not None and row.host not in wanted:
                continue
            decision = row.result.get("decision") or {}
            out.append(
                {
                    "host": row.host,
                    "time_us": row.time_us,
                    "mode": row.mode,
                    "decision": row.decision,
                    "quarantine_cpus": list(decision.get("quarantine_cpus", [])),
                    "quarantine_host": bool(decision.get("quarantine_host", False)),
                }
            )
        return out


def latest_screens(rows: Iterable[ScreenResultRow]) -> tuple[ScreenResultRow, ...]:
    """The most recent screen of each host."""
    latest: dict[str, ScreenResultRow] = {}
    for row in rows:
        if row.host not in latest or row.time_us > latest[row.host].time_us:
            latest[row.host] = row
    return tuple(sorted(latest.values(), key=lambda r: r.host))


def crash_table(
    store: Store, level: PopulationLevel = PopulationLevel.SYMBOLIC
) -> tuple[CrashTable, dict[str, PopulationInfo]]:
    """The store's crashes as columns, and a description of each population key."""
    cols = store.crash_columns(level)
    # A crash without a host or population key still counts, under an explicit "unknown" name.
    table = CrashTable.from_arrays(
        time_us=cols.time_us,
        host=Categorical.encode([h if h is not None else UNKNOWN_HOST for h in cols.host]),
        population=Categorical.encode(
            [p if p is not None else "(no signature)" for p in cols.population]
        ),
        cpu=cols.cpu.astype(np.int32),
        anomaly_mask=cols.anomaly_mask,
        crash_id=cols.core_id,
        cpu_model=Categorical.encode(list(cols.cpu_model)),
        microcode=Categorical.encode(list(cols.microcode)),
        kernel=Categorical.encode(list(cols.kernel)),
        service=Categorical.encode(list(cols.service)),
        version=Categorical.encode(list(cols.version)),
    )
    info: dict[str, PopulationInfo] = {}
    first_of: dict[str, str] = {}
    for core_id, key in zip(cols.core_id, cols.population, strict=True):
        if key is not None and key not in first_of:
            first_of[key] = str(core_id)
    for key, core_id in first_of.items():
        sig = store.get_signatures(core_id)
        if sig is None:
            continue
        frames = tuple(f.strip() for f in sig.symbolic.split("|") if f.strip())[:_MAX_SAMPLE_FRAMES]
        info[key] = PopulationInfo(signature=sig.symbolic, top_frames=frames)
    return table, info


def _exposure_from_rows(rows: Iterable[ExposureRow]) -> ExposureTable | None:
    rows = list(rows)
    if not rows:
        return None
    return ExposureTable.from_arrays(
        host=Categorical.encode([r.host for r in rows]),
        start_us=[r.start_us for r in rows],
        end_us=[r.end_us for r in rows],
        service=Categorical.encode([r.service for r in rows]),
        version=Categorical.encode([r.version for r in rows]),
        cpu_model=Categorical.encode([r.cpu_model for r in rows]),
    )


def exposure_from_heartbeats(
    beats: Iterable[Heartbeat], period_s: int = HEARTBEAT_PERIOD_S
) -> ExposureTable | None:
    """Each heartbeat covers ``[time, time + period)`` of one process (the agent sends one per
    process per period, so counting heartbeats counts process-time)."""
    period_us = period_s * 1_000_000
    return _exposure_from_rows(
        ExposureRow(b.host, b.time_us, b.time_us + period_us, b.service, b.version) for b in beats
    )


def _deploys_from_rows(rows: Iterable[DeployRow]) -> Deploys | None:
    rows = list(rows)
    if not rows:
        return None
    return Deploys.from_rows(
        [{"time": r.time_us, "service": r.service, "version": r.version} for r in rows]
    )


def run_census(
    store: Store,
    *,
    exposure_csv: str | os.PathLike[str] | None = None,
    deploys_csv: str | os.PathLike[str] | None = None,
    level: PopulationLevel = PopulationLevel.SYMBOLIC,
) -> tuple[Analysis, CensusInputs]:
    """Analyze every crash in ``store``; see the module docstring for where exposure comes from."""
    table, info = crash_table(store, level)
    if exposure_csv is not None:
        exposure: ExposureTable | None = read_exposure(exposure_csv)
        exp_src = str(Path(exposure_csv))
    else:
        exposure = _exposure_from_rows(store.iter_exposure()) or exposure_from_heartbeats(
            store.iter_heartbeats()
        )
        exp_src = "store" if exposure is not None else "none (rates unavailable)"
    if deploys_csv is not None:
        deploys: Deploys | None = read_deploys(deploys_csv)
        dep_src = str(Path(deploys_csv))
    else:
        deploys = _deploys_from_rows(store.iter_deploys())
        dep_src = "store" if deploys is not None else "none"
    screens = latest_screens(store.iter_screen_results())
    return analyze(table, exposure, deploys, info), CensusInputs(exp_src, dep_src, screens)
