"""A flagged host's fault timeline: when its suspect crashes started and stopped, measured in
the host's own observed time, and the microcode or kernel changes around those times (issue 9).

A host is seen through two records: its crashes, and its exposure (``exposure.csv`` rows or the
agent's heartbeats: intervals in which it ran, with the microcode and kernel it ran when the
exposure carries them). The crashes alone cannot tell a fault that stopped from a host that was
switched off, nor see a microcode update on a host that never crashes again; the exposure can.

**Observed time.** The union of the host's exposure intervals (gaps up to
:data:`OBSERVED_GAP_US` closed: heartbeats jitter). A host without exposure, or one whose
exposure misses one of its suspect crashes (the record is incomplete), is measured in wall time
to the end of the data, as before.

**Stopped.** Given ``k`` suspect crashes since the first, under a constant rate per unit of
observed time (a broken CPU crashes whatever code runs, whenever the host runs) the ``k - 1``
later ones are independent and uniform in the observed time from the first to the end of the
data. The probability that all of them fall before time ``t`` is

    p(t) = (U(first, t) / U(first, end)) ** (k - 1),

``U`` the observed time between two instants: exact (the count is sufficient for the unknown
rate, and the test conditional on it is exact whatever the rate). A host switched off after
its last crash adds nothing to ``U(last, end)``, so it is not quiet. Two ways to stop:

* the quiet stretch, ``p(last)`` at most :data:`STOP_ALPHA` (0.001), with no cause needed;
* no suspect crash after a microcode or kernel change ``c`` that the host's record shows after
  its last suspect crash (the first such), ``p(c)`` at most :data:`STOP_ALPHA_CHANGED` (0.05).
  Against the alternative "the update stopped it at ``c``" the event "none after ``c``" is
  certain, so rejecting on it is the most powerful test of its size ``p(c)`` (Neyman-Pearson);
  anchoring at ``c`` rather than at the last crash is what tells a fixed fault (quiet from
  just before the update) from a live one quiet by chance across it (mostly quiet long
  before): on the simulator's 20 seeds ``p(last)`` at 0.05 told 3 of 77 live faults to
  rescreen, ``p(c)`` none (smallest 0.079) while calling 11 of 33 stopped faults against 12.
  Valid whatever the record shows: the events "none after ``c``" are nested in ``c`` and
  ``p(c)`` grows with it, so a live fault is told to rescreen with probability at most the
  level.

Changes come from both records, merged in time: the host's crashes (their ``microcode`` and
``kernel`` facts) and its exposure rows (at each row's start).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from corecensus.epidemiology.findings import iso_time
from corecensus.epidemiology.table import Categorical, CrashTable, ExposureTable

__all__ = [
    "OBSERVED_GAP_US",
    "STOP_ALPHA",
    "STOP_ALPHA_CHANGED",
    "FactChange",
    "HostRecord",
    "StopTest",
    "change_words",
    "host_records",
    "quiet_p",
    "stop_test",
]

I64 = NDArray[np.int64]

# A live fault must not be told to rescreen: at 0.01 the simulator's 20 seeds showed 2 live
# faults (of about 140 flagged) quiet by chance for 8-10 days at the end (p 0.005, 0.006).
STOP_ALPHA = 0.001
# No suspect crash after a microcode or kernel change after the last one (vendors fix CPU
# errata by microcode and kernels work around them): a live fault across a change is told to
# rescreen with probability at most this (and its rescreen fails).
STOP_ALPHA_CHANGED = 0.05
# At least this many suspect crashes before a stop is tested.
STOP_MIN = 3
# Gaps between a host's exposure intervals up to this long are closed (heartbeats are sent
# every 300 s, jittered and delayed by load; a longer gap is the host or its agent down).
OBSERVED_GAP_US = 900 * 1_000_000
_FACTS = ("microcode", "kernel")


@dataclass(frozen=True, slots=True)
class FactChange:
    """``name`` (microcode or kernel) went from ``before`` to ``after``, first seen at
    ``time_us`` in the host's crashes or its exposure (``source``)."""

    name: str
    before: str
    after: str
    time_us: int
    source: str


@dataclass(frozen=True, slots=True)
class HostRecord:
    """One host's exposure: its observed intervals (sorted, disjoint) and, per fact, the runs
    of equal values its rows show (start time of each run, the value)."""

    starts: I64
    ends: I64
    facts: dict[str, tuple[I64, tuple[str, ...]]]

    def observed(self, a: int, b: int) -> float:
        """Observed time in ``[a, b]`` (µs)."""
        lo = np.maximum(self.starts, a)
        hi = np.minimum(self.ends, b)
        return float(np.clip(hi - lo, 0, None).sum())

    def covers(self, t: I64) -> bool:
        """Whether every instant of ``t`` lies in an observed interval."""
        i = np.searchsorted(self.starts, t, side="right") - 1
        ok = (i >= 0) & (t <= self.ends[np.maximum(i, 0)])
        return bool(ok.all())


def host_records(
    exposure: ExposureTable, exposure_host: NDArray[np.integer], hosts: list[int]
) -> dict[int, HostRecord]:
    """The records of ``hosts`` (codes in ``exposure_host``'s coding, one per exposure row);
    a host without rows has none. One pass over the rows, then work per host (few: flagged)."""
    out: dict[int, HostRecord] = {}
    if not hosts or not len(exposure):
        return out
    rows = np.flatnonzero(np.isin(exposure_host, np.asarray(hosts)))
    if not rows.size:
        return out
    rows = rows[np.lexsort((exposure.start_us[rows], exposure_host[rows]))]
    row_host = exposure_host[rows]
    bounds = np.flatnonzero(np.diff(row_host)) + 1
    for part in np.split(rows, bounds):
        h = int(exposure_host[part[0]])
        starts, ends = _union(exposure.start_us[part], exposure.end_us[part])
        facts: dict[str, tuple[I64, tuple[str, ...]]] = {}
        for name in _FACTS:
            column: Categorical | None = getattr(exposure, name)
            if column is not None:
                facts[name] = _runs(exposure.start_us[part], column.codes[part], column.vocab)
        out[h] = HostRecord(starts=starts, ends=ends, facts=facts)
    return out


def _union(start: I64, end: I64) -> tuple[I64, I64]:
    """Sorted intervals (by start) merged where they overlap or lie within the gap."""
    run_end = np.maximum.accumulate(end)
    new = np.ones(start.size, dtype=bool)
    new[1:] = start[1:] > run_end[:-1] + OBSERVED_GAP_US
    first = np.flatnonzero(new)
    last = np.append(first[1:], start.size) - 1
    return start[first].astype(np.int64), run_end[last].astype(np.int64)


def _runs(
    time_us: I64, codes: NDArray[np.integer], vocab: tuple[str, ...]
) -> tuple[I64, tuple[str, ...]]:
    """Where a known value starts to differ from the previous known one (time-sorted input)."""
    known = codes >= 0
    t, c = time_us[known], codes[known]
    if not c.size:
        return np.zeros(0, np.int64), ()
    new = np.ones(c.size, dtype=bool)
    new[1:] = c[1:] != c[:-1]
    return t[new].astype(np.int64), tuple(vocab[int(x)] for x in c[new].tolist())


@dataclass(frozen=True, slots=True)
class StopTest:
    """The stop test of one host: the quiet stretch's p-value (None: too few crashes), the
    p-value of no suspect crash after the first change after the last one (None: no such
    change), whether they stopped, how time was measured, and the changes around the first
    and last suspect crash."""

    p_value: float | None
    p_change: float | None
    stopped: bool
    clock: str
    changes: tuple[FactChange, ...]


def quiet_p(
    times: I64, end_us: int, record: HostRecord | None, *, since: int | None = None
) -> tuple[float | None, str]:
    """The probability under a constant rate that the ``k - 1`` suspect crashes after the first
    of ``times`` (sorted) all fall before the last (``since`` given: before ``since``), and how
    time was measured; None with fewer than :data:`STOP_MIN`."""
    if record is None:
        clock = "wall time to the end of the data (no exposure for this host)"
    elif not record.covers(times):
        record = None
        clock = (
            "wall time to the end of the data (its exposure misses some of its suspect crashes, "
            "so it is incomplete)"
        )
    else:
        clock = "the host's observed time (its exposure intervals)"
    first = int(times[0])
    quiet_from = int(times[-1]) if since is None else since
    if times.size < STOP_MIN or end_us <= first:
        return None, clock
    if record is None:
        span, whole = float(min(quiet_from, end_us) - first), float(end_us - first)
    else:
        span, whole = record.observed(first, quiet_from), record.observed(first, end_us)
    return (float(min(span / whole, 1.0) ** (times.size - 1)) if whole > 0 else 1.0), clock


def stop_test(
    times: I64,
    crashes: CrashTable,
    mine: I64,
    end_us: int,
    record: HostRecord | None,
) -> StopTest:
    """The stop test of a host whose suspect crashes happened at ``times`` (sorted; at least
    one), ``mine`` its crash rows, ``record`` its exposure (None: none).

    Stopped: the quiet stretch's p-value at most :data:`STOP_ALPHA`, or, when the host's
    record shows a microcode or kernel change after the last suspect crash, the probability
    that no suspect crash follows the first such change at most :data:`STOP_ALPHA_CHANGED`.
    The second is anchored at the change, not at the last crash: a fault the update fixed
    stopped just before it, while a live one that was quiet across it by chance was mostly
    quiet long before (the quiet-stretch p-value would count that stretch as evidence). It
    is valid whatever changes the record shows: the events "none after the change at c" are
    nested in c, and the p-value grows with c, so their union has probability at most the
    level."""
    first, last = int(times[0]), int(times[-1])
    p, clock = quiet_p(times, end_us, record)
    changes = _changes(crashes, mine, record, first, last)
    after = [c.time_us for c in changes if c.time_us > last]
    p_change = quiet_p(times, end_us, record, since=min(after))[0] if after else None
    stopped = (p is not None and p <= STOP_ALPHA) or (
        p_change is not None and p_change <= STOP_ALPHA_CHANGED
    )
    return StopTest(p, p_change, stopped, clock, tuple(changes))


def _series(
    crashes: CrashTable, mine: I64, record: HostRecord | None, name: str
) -> tuple[I64, list[str], list[str]]:
    """The host's known values of ``name`` over time from both records (time-sorted), with
    where each came from."""
    column: Categorical = getattr(crashes, name)
    mine = mine[np.argsort(crashes.time_us[mine], kind="stable")]
    t_c, v_c = _runs(crashes.time_us[mine], column.codes[mine], column.vocab)
    times = [t_c]
    values = list(v_c)
    sources = ["crashes"] * len(v_c)
    if record is not None and name in record.facts:
        t_e, v_e = record.facts[name]
        times.append(t_e)
        values += v_e
        sources += ["exposure"] * len(v_e)
    t = np.concatenate(times)
    order = np.argsort(t, kind="stable")
    return t[order], [values[i] for i in order.tolist()], [sources[i] for i in order.tolist()]


def _changes(
    crashes: CrashTable, mine: I64, record: HostRecord | None, first: int, last: int
) -> list[FactChange]:
    """Per fact, from both records: the change into the value the first suspect crash ran
    under, every change while they went on, and the first change after the last one."""
    out: list[FactChange] = []
    for name in _FACTS:
        t, values, sources = _series(crashes, mine, record, name)
        turns = [j for j in range(1, t.size) if values[j] != values[j - 1]]
        before = [j for j in turns if t[j] <= first]
        keep = before[-1:] + [j for j in turns if first < t[j] <= last]
        keep += [j for j in turns if t[j] > last][:1]
        out += [FactChange(name, values[j - 1], values[j], int(t[j]), sources[j]) for j in keep]
    return out


def change_words(change: FactChange, first_us: int, last_us: int, stopped: bool) -> str:
    """The evidence sentence of a change, placed against the suspect crashes."""
    where = "in its exposure" if change.source == "exposure" else "in its crashes"
    if change.time_us > last_us:
        when = "after they stopped" if stopped else "after the last of them"
    elif change.time_us > first_us:
        when = "while they went on"
    else:
        when = "before they started"
    return (
        f"{change.name} changed from {change.before} to {change.after} {when}, first seen "
        f"{iso_time(change.time_us)} {where}"
    )
