"""Use case: the store (+ exposure + deploys) → populations → epidemiology → the analysis.

Used by ``corecensus analyze``, the demo, the collector's ``/api/v1/analysis`` and the report.
Exposure comes from ``exposure.csv`` when given; else from exposure rows or agent heartbeats in
the store (each heartbeat stands for :data:`HEARTBEAT_PERIOD_S` of one process running); else
analysis runs without rates and says so. :meth:`AnalysisReport.to_json` is the whole
``analyze --json`` contract.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from corecensus.app.racewindow import RaceRates, race_checks
from corecensus.epidemiology import analyze
from corecensus.epidemiology.coverage import exposure_notes
from corecensus.epidemiology.findings import FleetAnalysis, PopulationInfo
from corecensus.epidemiology.racewindow import RaceRateCheck
from corecensus.epidemiology.table import Categorical, CrashTable, Deploys, ExposureTable
from corecensus.model import CrashRecord
from corecensus.signature import PopulationLevel, race_evidence, race_key
from corecensus.store import (
    DEPLOYS,
    EXPOSURE,
    HEARTBEATS,
    SCREEN_RESULTS,
    CodedColumn,
    CrashColumns,
    DeployRow,
    ExposureRow,
    Heartbeat,
    ScreenResultRow,
    Store,
)
from corecensus.store.parquet import read_parquet_rows

__all__ = [
    "HEARTBEAT_PERIOD_S",
    "AnalysisInputs",
    "AnalysisReport",
    "RaceRates",
    "analyze_crash_facts",
    "analyze_store",
    "crash_table",
    "exposure_from_heartbeats",
    "read_crash_facts",
]

UNKNOWN_HOST = "(unknown host)"
# The agent's heartbeat interval; a heartbeat is evidence of this much exposure (seconds).
HEARTBEAT_PERIOD_S = 300
_MAX_SAMPLE_FRAMES = 8
# A race population's evidence reads at most this many of its records (its interrupted offsets
# and signals; a larger population says the same).
_MAX_RACE_RECORDS = 1000


@dataclass(frozen=True, slots=True)
class AnalysisInputs:
    """Where the crashes, exposure and deploys came from, the population level, and the latest
    SDC screen of each host."""

    db: str
    exposure_source: str
    deploys_source: str
    level: str
    screens: tuple[ScreenResultRow, ...] = ()
    notes: tuple[str, ...] = ()  # what in the inputs makes rates or onsets doubtful
    # When a writer (the collector, a long ingest) held ``db``: the snapshot it leaves that was
    # read instead, and when that snapshot was written (µs), so a JSON consumer knows the
    # analysis may lag the store.
    snapshot: tuple[str, int] | None = None

    def to_json(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "db": self.db,
            "exposure": self.exposure_source,
            "deploys": self.deploys_source,
            "level": self.level,
            "notes": list(self.notes),
        }
        if self.snapshot is not None:
            doc["snapshot"] = {"path": self.snapshot[0], "written_us": self.snapshot[1]}
        return doc

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


def _categorical(column: CodedColumn) -> Categorical:
    """A store column as the analysis's categorical (the same arrays, checked)."""
    return Categorical(column.codes, column.vocab)


def crash_table(
    store: Store, level: PopulationLevel = PopulationLevel.SYMBOLIC
) -> tuple[CrashTable, dict[str, PopulationInfo]]:
    """The store's crashes as columns, and a description of each population key. The table
    names its crashes through ``store`` (:meth:`~corecensus.store.Store.core_ids`), so analyze
    it while the store is open and unchanged."""
    table, info, _races = _crash_table(store, level)
    return table, info


def _crash_table(
    store: Store, level: PopulationLevel
) -> tuple[CrashTable, dict[str, PopulationInfo], dict[str, list[CrashRecord]]]:
    """:func:`crash_table`, and the records read for each signal-race population."""
    cols = store.crash_columns(str(level))
    rows = _narrow_rows(cols.row)

    def crash_ids(cited: NDArray[np.int64]) -> list[str]:
        # Only the crashes findings cite are named: ten million ids as Python strings would
        # cost more than the rest of the table.
        return store.core_ids(rows[cited].tolist())

    # A crash without a host or population key still counts, under an explicit "unknown" name.
    host = _categorical(cols.host).fill_unknown(UNKNOWN_HOST)
    table = CrashTable.from_arrays(
        time_us=cols.time_us,
        host=host,
        population=_categorical(cols.population).fill_unknown("(no signature)"),
        cpu=cols.cpu,
        anomaly_mask=cols.anomaly_mask,
        crash_id=crash_ids,
        cpu_model=_categorical(cols.cpu_model),
        microcode=_categorical(cols.microcode),
        kernel=_categorical(cols.kernel),
        service=_categorical(cols.service),
        version=_categorical(cols.version),
        **_cpu_facts(cols, host),
    )
    info: dict[str, PopulationInfo] = {}
    races: dict[str, list[CrashRecord]] = {}
    for key, symbolic in _first_signatures(store, cols.population, rows).items():
        frames = tuple(f.strip() for f in symbolic.split("|") if f.strip())[:_MAX_SAMPLE_FRAMES]
        evidence: tuple[str, ...] = ()
        if race_key(symbolic) is not None and key in cols.population.vocab:
            code = cols.population.vocab.index(key)
            members = np.flatnonzero(cols.population.codes == code)[:_MAX_RACE_RECORDS]
            found = (store.get_crash(c) for c in store.core_ids(rows[members].tolist()))
            records = races[key] = [r for r in found if r is not None]
            evidence = race_evidence(records)
        info[key] = PopulationInfo(signature=symbolic, top_frames=frames, evidence=evidence)
    return table, info, races


def _first_signatures(
    store: Store, population: CodedColumn, rows: NDArray[np.integer[Any]]
) -> dict[str, str]:
    """Each population key's symbolic signature, its first crash's in the columns' (time)
    order; crashes without a key (code -1) under the empty key, as the store holds them."""
    # first[c + 1]: the first position of code c, as np.unique(codes, return_index=True) gives
    # it (a stable argsort of every crash: 0.1-0.6 s at a million; this is one pass)
    size = population.codes.size
    first = np.full(len(population.vocab) + 1, size, dtype=np.int64)
    np.minimum.at(first, population.codes.astype(np.intp) + 1, np.arange(size, dtype=np.int64))
    codes = np.flatnonzero(first < size)  # code + 1, ascending
    keys = [population.vocab[c - 1] if c > 0 else "" for c in codes.tolist()]
    return dict(zip(keys, store.signatures(rows[first[codes]].tolist()), strict=True))


def _narrow_rows(row: NDArray[np.int64]) -> NDArray[np.integer[Any]]:
    """The store's row ids as ``int32`` when they fit: they are kept for the whole analysis to
    name the few crashes findings cite, and ten million ``int64`` ids are 76 MB."""
    if row.size and int(row.min()) >= 0 and int(row.max()) <= np.iinfo(np.int32).max:
        return row.astype(np.int32)
    return row


def _cpu_facts(cols: CrashColumns, host: Categorical) -> dict[str, Any]:
    """The stored per-CPU facts as crash-table columns (absent when no crash has any): each
    host's largest online-CPU count, the physical cores and the allowed-CPU lists."""
    out: dict[str, Any] = {}
    if cols.host_cpus is not None and bool((cols.host_cpus > 0).any()):
        per_host = np.zeros(len(host.vocab), dtype=np.int32)
        np.maximum.at(per_host, host.codes, np.maximum(cols.host_cpus, 0))
        out["host_cpus"] = per_host
    if cols.cpu_core is not None and bool((cols.cpu_core >= 0).any()):
        out["cpu_core"] = cols.cpu_core
    if cols.cpus_allowed is not None and bool((cols.cpus_allowed.codes >= 0).any()):
        out["cpus_allowed"] = _categorical(cols.cpus_allowed)
    return out


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
    process per period, so counting heartbeats counts process-time), with the microcode and
    kernel the agent's own heartbeat reports (unknown for older agents and service heartbeats).
    """
    beats = list(beats)
    if not beats:
        return None
    period_us = period_s * 1_000_000
    start = np.fromiter((b.time_us for b in beats), dtype=np.int64, count=len(beats))
    return ExposureTable.from_arrays(
        host=Categorical.encode([b.host for b in beats]),
        start_us=start,
        end_us=start + period_us,
        service=Categorical.encode([b.service for b in beats]),
        version=Categorical.encode([b.version for b in beats]),
        microcode=Categorical.encode([b.microcode for b in beats]),
        kernel=Categorical.encode([b.kernel for b in beats]),
    )


def _deploys_from_rows(rows: Iterable[DeployRow]) -> Deploys | None:
    rows = list(rows)
    if not rows:
        return None
    return Deploys.from_rows(
        [{"time": r.time_us, "service": r.service, "version": r.version} for r in rows]
    )


@dataclass(frozen=True, slots=True)
class AnalysisReport:
    """An analysis with what it was computed from."""

    analysis: FleetAnalysis
    inputs: AnalysisInputs
    # Per signal-race population id, its race-window check (only when rates were given).
    race_checks: Mapping[str, RaceRateCheck] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """The ``analyze --json`` contract: populations (each with the latest screens of its
        suspect hosts, and a race population its ``race_window`` check when rates were given),
        hosts, inputs, and every host's latest screen."""
        doc = self.analysis.to_json()
        doc["inputs"] = self.inputs.to_json()
        populations = doc["populations"]
        assert isinstance(populations, list)
        for pop in populations:
            pop["screens"] = self.inputs.screens_json(s["host"] for s in pop["suspects"])
            check = self.race_checks.get(pop["id"])
            if check is not None:
                pop["race_window"] = check.to_json()
        doc["screens"] = self.inputs.screens_json()
        return doc


def analyze_store(
    store: Store,
    *,
    exposure_csv: str | os.PathLike[str] | None = None,
    deploys_csv: str | os.PathLike[str] | None = None,
    level: PopulationLevel = PopulationLevel.SYMBOLIC,
    race_rates: RaceRates | None = None,
) -> AnalysisReport:
    """Analyze every crash in ``store``; see the module docstring for where exposure comes from.
    With ``race_rates``, each signal-race population gets its race-window check."""
    table, info, races = _crash_table(store, level)
    # (the file readers are imported where used: they load the ingest package, 10-20 ms of
    # a store's analysis without files)
    if exposure_csv is not None:
        from corecensus.ingest.tables import read_exposure

        exposure: ExposureTable | None = read_exposure(exposure_csv)
        exp_src = str(Path(exposure_csv))
    else:
        exposure = _exposure_from_rows(store.rows(EXPOSURE)) or exposure_from_heartbeats(
            store.rows(HEARTBEATS)
        )
        exp_src = "store" if exposure is not None else "none (rates unavailable)"
    if deploys_csv is not None:
        from corecensus.ingest.tables import read_deploys

        deploys: Deploys | None = read_deploys(deploys_csv)
        dep_src = str(Path(deploys_csv))
    else:
        deploys = _deploys_from_rows(store.rows(DEPLOYS))
        dep_src = "store" if deploys is not None else "none"
    screens = latest_screens(store.rows(SCREEN_RESULTS))
    notes = exposure_notes(table, exposure) if exposure is not None else ()
    inputs = AnalysisInputs(
        store.location, exp_src, dep_src, str(level), screens, notes, _snapshot_read(store)
    )
    checks = race_checks(races, table, exposure, race_rates) if race_rates is not None else {}
    return AnalysisReport(analyze(table, exposure, deploys, info), inputs, checks)


def _snapshot_read(store: Store) -> tuple[str, int] | None:
    """The snapshot ``store`` reads in place of a held file, with its modification time."""
    if store.snapshot is None:
        return None
    return store.snapshot, os.stat(store.snapshot).st_mtime_ns // 1000


def read_crash_facts(path: str | os.PathLike[str]) -> CrashTable:
    """A crash-facts file (DESIGN.md "Crash facts"): Parquet when its name ends in
    ``.parquet`` (read through DuckDB in ``store``), else CSV."""
    from corecensus.ingest.crashfacts import crash_facts_from_columns, read_crash_facts_csv

    name = os.fspath(path)
    if name.lower().endswith(".parquet"):
        header, rows = read_parquet_rows(name)
        return crash_facts_from_columns(name, header, rows)
    return read_crash_facts_csv(name)


def analyze_crash_facts(
    crashes: str | os.PathLike[str],
    *,
    exposure_csv: str | os.PathLike[str] | None = None,
    deploys_csv: str | os.PathLike[str] | None = None,
) -> AnalysisReport:
    """Analyze the crashes of a crash-facts file instead of a store (``analyze --crashes``):
    what users bring from the crash systems they already have. Populations are the file's
    ``signature`` column (or its normalized top frames)."""
    from corecensus.ingest.tables import read_deploys, read_exposure

    table = read_crash_facts(crashes)
    exposure = read_exposure(exposure_csv) if exposure_csv is not None else None
    deploys = read_deploys(deploys_csv) if deploys_csv is not None else None
    inputs = AnalysisInputs(
        str(Path(crashes)),
        str(Path(exposure_csv)) if exposure_csv is not None else "none (rates unavailable)",
        str(Path(deploys_csv)) if deploys_csv is not None else "none",
        "crash facts",
        notes=exposure_notes(table, exposure) if exposure is not None else (),
    )
    return AnalysisReport(analyze(table, exposure, deploys), inputs)
