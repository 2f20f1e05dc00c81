"""Does the exposure describe the crashes? Checks whose failure makes rates and onsets
misleading without making them fail: exposure that lies wholly outside the period of the
crashes (a wrong year or time zone in ``exposure.csv``), and intervals of one host and service
that overlap (their common time is counted twice)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from corecensus.epidemiology.table import CrashTable, ExposureTable

__all__ = ["exposure_notes"]


def _day(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%d %H:%M")


def exposure_notes(crashes: CrashTable, exposure: ExposureTable) -> tuple[str, ...]:
    """Sentences for the analysis's inputs; empty when the exposure fits the crashes."""
    notes: list[str] = []
    times = crashes.time_us[crashes.time_us > 0]  # 0: time unknown
    if len(exposure) and len(times):
        e0, e1 = int(exposure.start_us.min()), int(exposure.end_us.max())
        c0, c1 = int(times.min()), int(times.max())
        if e1 < c0 or e0 > c1:
            notes.append(
                f"exposure covers {_day(e0)} to {_day(e1)} UTC, wholly outside the crashes "
                f"({_day(c0)} to {_day(c1)} UTC): rates and onsets have no exposure of the "
                "crash period to stand on (check the exposure file's dates and time zone)"
            )
    overlaps = _overlapping(exposure)
    if overlaps:
        n, host = overlaps
        notes.append(
            f"{n} exposure interval(s) overlap an earlier one of the same host and service "
            f"(first on host {host}): their common time is counted twice in the rates"
        )
    return tuple(notes)


def _overlapping(exposure: ExposureTable) -> tuple[int, str] | None:
    """How many intervals start before an earlier interval of the same (host, service) ends,
    and the first such host."""
    if len(exposure) < 2:
        return None
    order = np.lexsort((exposure.start_us, exposure.service.codes, exposure.host.codes))
    host = exposure.host.codes[order]
    service = exposure.service.codes[order]
    start = exposure.start_us[order]
    end = exposure.end_us[order]
    same = (host[1:] == host[:-1]) & (service[1:] == service[:-1])
    # Within a group the running maximum of ends so far; a start before it overlaps.
    group_start = np.concatenate(([True], ~same))
    running = end.copy()
    for i in range(1, len(running)):
        if not group_start[i]:
            running[i] = max(running[i], running[i - 1])
    hits = np.flatnonzero(same & (start[1:] < running[:-1])) + 1
    if not len(hits):
        return None
    return len(hits), exposure.host.vocab[int(host[hits[0]])]
