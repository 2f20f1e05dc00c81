"""Use case: records an agent already parsed (crash records, heartbeats, screen results) into the
store, and what the store knows about one host.

The collector's only way to the store. Nothing here reads a core, so nothing here (or below it)
imports drgn: the records arrive parsed, checked by :mod:`corecensus.ingest.wire`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from corecensus.ingest.wire import HeartbeatRecord
from corecensus.model import ANOMALY_NAMES, CrashRecord
from corecensus.screening.result import ScreenResult
from corecensus.signing import TypedSigner, sign_records
from corecensus.store import (
    SCREEN_RESULTS,
    AddResult,
    CodedColumn,
    CrashRow,
    EncodedCrashRows,
    Heartbeat,
    ScreenResultRow,
    Store,
)

__all__ = [
    "HostView",
    "UploadCounts",
    "UploadGroup",
    "UploadRows",
    "host_view",
    "store_rows",
    "store_uploads",
    "upload_rows",
]


@dataclass(frozen=True, slots=True)
class UploadGroup:
    """The records of many upload requests, stored together (one group commit). A crash is a
    :class:`CrashRecord` (checked by the wire's checker) or the typed pass's Struct
    (:mod:`corecensus.ingest.wire_typed`), which a :class:`TypedSigner` signs."""

    crashes: Sequence[CrashRecord | Any] = ()
    heartbeats: Sequence[HeartbeatRecord] = ()
    screens: Sequence[ScreenResult] = ()

    def __len__(self) -> int:
        return len(self.crashes) + len(self.heartbeats) + len(self.screens)


@dataclass(frozen=True, slots=True)
class UploadCounts:
    """What storing a group did, per kind: new rows, and rows that were already there."""

    crashes: AddResult = field(default_factory=AddResult)
    heartbeats: AddResult = field(default_factory=AddResult)
    screens: AddResult = field(default_factory=AddResult)


def _screen_row(result: ScreenResult) -> ScreenResultRow:
    return ScreenResultRow.of(
        host=result.host,
        time_us=result.started_at,
        mode=str(result.mode),
        decision=str(result.decision.verdict),
        result=result.to_json(),
    )


def _heartbeat_row(beat: HeartbeatRecord) -> Heartbeat:
    lost = None if beat.lost is None else json.dumps(dict(sorted(beat.lost.items())))
    return Heartbeat(
        beat.host,
        beat.time_us,
        beat.service,
        beat.version,
        uptime_s=beat.uptime_s,
        agent_uptime_s=beat.agent_uptime_s,
        lost=lost,
        microcode=beat.microcode,
        kernel=beat.kernel,
    )


@dataclass(frozen=True, slots=True)
class UploadRows:
    """An :class:`UploadGroup` as the store's rows: crashes signed, heartbeats and screens in
    their tables' rows. Plain dataclasses, so a process that signs can hand them to the one
    that writes (the collector's front ends to its writer)."""

    # (the collector's loader reads crashes from its journal as EncodedCrashRows)
    crashes: Sequence[CrashRow] | EncodedCrashRows = ()
    heartbeats: Sequence[Heartbeat] = ()
    screens: Sequence[ScreenResultRow] = ()

    def __len__(self) -> int:
        return len(self.crashes) + len(self.heartbeats) + len(self.screens)


def upload_rows(group: UploadGroup, signer: TypedSigner | None = None) -> UploadRows:
    """The rows of ``group``'s records: the CPU work of storing them, none of the store's.
    ``signer`` signs the typed pass's crashes (its cache lives as long as it does)."""
    crashes: list[CrashRow] = []
    if group.crashes:
        records = [c for c in group.crashes if isinstance(c, CrashRecord)]
        typed = [c for c in group.crashes if not isinstance(c, CrashRecord)]
        crashes = list(sign_records(records))
        if typed:
            crashes += (signer or TypedSigner()).rows(typed)
    return UploadRows(
        crashes=crashes,
        heartbeats=[_heartbeat_row(b) for b in group.heartbeats],
        screens=[_screen_row(s) for s in group.screens],
    )


def store_rows(
    store: Store, rows: UploadRows, *, journal: tuple[str, int, int] | None = None
) -> UploadCounts:
    """Store ``rows``, idempotently (a row stored before is counted as a duplicate, not stored
    again), in one transaction, with how far ``journal`` (``(name, segment, offset)``, the
    collector's) is applied if given. Committed before this returns, so what it counts is
    durable; a failure raises :class:`~corecensus.errors.StoreError` and stores nothing."""
    crashes, heartbeats, screens = store.add_uploads(
        rows.crashes, rows.heartbeats, rows.screens, journal=journal
    )
    return UploadCounts(crashes, heartbeats, screens)


def store_uploads(
    store: Store, group: UploadGroup, signer: TypedSigner | None = None
) -> UploadCounts:
    """Store every record of ``group``: :func:`store_rows` of its :func:`upload_rows`."""
    return store_rows(store, upload_rows(group, signer))


@dataclass(frozen=True, slots=True)
class HostView:
    """One host: its most recent crashes (newest first, at most ``limit``), how many it has in
    all, and its SDC screens (newest first)."""

    host: str
    crash_count: int
    crashes: tuple[Mapping[str, Any], ...] = ()
    screens: tuple[Mapping[str, Any], ...] = ()

    @property
    def known(self) -> bool:
        return self.crash_count > 0 or bool(self.screens)

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "crash_count": self.crash_count,
            "crashes": [dict(c) for c in self.crashes],
            "screens": [dict(s) for s in self.screens],
        }


def host_view(store: Store, host: str, *, limit: int = 200) -> HostView:
    """What the store holds about ``host``."""
    cols = store.crash_columns(details=True)
    assert cols.exe is not None and cols.signal is not None
    exe, signal = cols.exe, cols.signal
    picked: list[int] = []
    if host in cols.host.vocab:
        picked = np.flatnonzero(cols.host.codes == cols.host.vocab.index(host)).tolist()
    chosen = sorted(picked, key=lambda i: int(cols.time_us[i]), reverse=True)[:limit]
    core_ids = store.core_ids(cols.row[chosen].tolist())

    def text_of(column: CodedColumn, i: int) -> str | None:
        code = int(column.codes[i])
        return column.vocab[code] if code >= 0 else None

    crashes = []
    for i, core_id in zip(chosen, core_ids, strict=True):
        crashes.append(
            {
                "core_id": core_id,
                "time_us": int(cols.time_us[i]) if bool(cols.time_known[i]) else None,
                "cpu": int(cols.cpu[i]) if int(cols.cpu[i]) >= 0 else None,
                "signal": int(signal[i]) if int(signal[i]) >= 0 else None,
                "service": text_of(cols.service, i),
                "version": text_of(cols.version, i),
                "exe": text_of(exe, i),
                "population": text_of(cols.population, i),
                "anomalies": [
                    name
                    for bit, name in enumerate(ANOMALY_NAMES)
                    if int(cols.anomaly_mask[i]) >> bit & 1
                ],
            }
        )
    screens = sorted(
        (row for row in store.rows(SCREEN_RESULTS) if row.host == host),
        key=lambda r: r.time_us,
        reverse=True,
    )
    return HostView(
        host=host,
        crash_count=len(picked),
        crashes=tuple(crashes),
        screens=tuple(
            {
                "time_us": r.time_us,
                "mode": r.mode,
                "decision": r.decision,
                "screen_id": r.result.get("screen_id"),
                "quarantine_cpus": list(
                    (r.result.get("decision") or {}).get("quarantine_cpus", [])
                ),
            }
            for r in screens
        ),
    )
