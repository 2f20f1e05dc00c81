"""What the analysis says: verdicts, suspects, onsets, splits and flagged hosts.

Every finding carries ``evidence``: sentences that name the method and its numbers, so a verdict
can be checked by hand. ``FleetAnalysis.to_json()`` is the ``corecensus analyze --json`` contract:
``{"populations": [...], "hosts": [...]}`` plus a ``rates_available`` flag and notes.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from corecensus.epidemiology.hostscan import HostScan

__all__ = [
    "AttributeSignal",
    "FleetAnalysis",
    "HostFinding",
    "HostKind",
    "Onset",
    "PopulationFinding",
    "PopulationInfo",
    "PopulationVerdict",
    "Split",
    "Suspect",
    "iso_time",
]


def iso_time(time_us: int) -> str:
    """µs since the epoch as ISO-8601 UTC text (``2024-05-01T12:00:00Z``)."""
    stamp = datetime.fromtimestamp(time_us / 1e6, tz=UTC)
    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")


def _num(x: float | None) -> float | None:
    """JSON-safe float: ``None`` for NaN, a large sentinel never (inf becomes None too)."""
    if x is None or not math.isfinite(x):
        return None
    return float(x)


class PopulationVerdict(enum.StrEnum):
    """Per-population verdict."""

    HARDWARE = "hardware-suspect"
    SOFTWARE = "software"
    INCONCLUSIVE = "inconclusive"


class HostKind(enum.StrEnum):
    """Why a host is listed."""

    HARDWARE = "hardware-suspect"
    HIGH_RATE = "high-crash-rate"
    CRASH_LOOP = "crash-loop"


@dataclass(frozen=True, slots=True)
class PopulationInfo:
    """What the signature layer knows about a population key: its signature text and the top
    frames that define it (shown in reports; the statistics do not read them)."""

    signature: str
    top_frames: tuple[str, ...] = ()
    # Sentences the signature layer adds about the population (e.g. a signal race's evidence).
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Suspect:
    """A host (and CPU, when concentrated) a hardware-suspect population is blamed on.

    ``expected`` is the host's share of the population by exposure (``None`` without
    exposure); ``p_value`` the exact Poisson upper tail of ``crashes`` given ``expected`` (or,
    without exposure, the host scan's combined p-value). ``cpu_crashes``/``cpu_p_value``
    describe the concentration on ``cpu``.
    """

    host: str
    cpu: int | None
    crashes: int
    expected: float | None
    p_value: float | None
    cpu_crashes: int = 0
    cpu_p_value: float | None = None
    crash_ids: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "cpu": self.cpu,
            "crashes": self.crashes,
            "expected": _num(self.expected),
            "p_value": _num(self.p_value),
            "cpu_crashes": self.cpu_crashes,
            "cpu_p_value": _num(self.cpu_p_value),
            "crash_ids": list(self.crash_ids),
        }


@dataclass(frozen=True, slots=True)
class Onset:
    """When a population began: ``time_us`` (a deploy time when one aligns, else the
    change point), ``version`` (first version it appears in), and the numbers behind them."""

    time_us: int
    version: str | None
    changepoint_us: int | None = None
    deploy_us: int | None = None
    p_value: float | None = None
    rate_ratio: float | None = None
    previous_version: str | None = None
    absent_p_value: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "time": iso_time(self.time_us),
            "time_us": self.time_us,
            "version": self.version,
            "changepoint": None if self.changepoint_us is None else iso_time(self.changepoint_us),
            "deploy": None if self.deploy_us is None else iso_time(self.deploy_us),
            "p_value": _num(self.p_value),
            "rate_ratio": _num(self.rate_ratio),
            "previous_version": self.previous_version,
            "absent_p_value": _num(self.absent_p_value),
        }


@dataclass(frozen=True, slots=True)
class Split:
    """A clean split of a population (a mixture of two causes): ``by`` is ``anomaly``,
    ``host`` or ``version``; ``part`` describes the separated part, ``crashes`` its size and
    ``verdict`` the verdict for that part."""

    by: str
    part: str
    crashes: int
    rest: int
    verdict: PopulationVerdict
    p_value: float | None
    evidence: str

    def to_json(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "part": self.part,
            "crashes": self.crashes,
            "rest": self.rest,
            "verdict": str(self.verdict),
            "p_value": _num(self.p_value),
            "evidence": self.evidence,
        }


@dataclass(frozen=True, slots=True)
class AttributeSignal:
    """Disproportionality of one attribute value in a population (see disproportionality)."""

    attribute: str
    value: str
    crashes: int
    hosts: int
    prr: float
    prr_ci: tuple[float, float]
    ror: float
    ror_ci: tuple[float, float]
    p_value: float
    host_p_value: float
    q_value: float
    signal: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute,
            "value": self.value,
            "crashes": self.crashes,
            "hosts": self.hosts,
            "prr": _num(self.prr),
            "prr_ci": [_num(self.prr_ci[0]), _num(self.prr_ci[1])],
            "ror": _num(self.ror),
            "ror_ci": [_num(self.ror_ci[0]), _num(self.ror_ci[1])],
            "p_value": _num(self.p_value),
            "host_p_value": _num(self.host_p_value),
            "q_value": _num(self.q_value),
            "signal": self.signal,
        }


@dataclass(frozen=True, slots=True)
class PopulationFinding:
    """One population: counts, verdict, suspects, onset, splits and evidence."""

    id: str
    signature: str
    anomalies: tuple[str, ...]
    top_frames: tuple[str, ...]
    crashes: int
    hosts: int
    verdict: PopulationVerdict
    suspects: tuple[Suspect, ...]
    onset: Onset | None
    evidence: tuple[str, ...]
    anomaly_counts: Mapping[str, int] = field(default_factory=dict)
    top_hosts: tuple[tuple[str, int], ...] = ()
    first_version: str | None = None
    attributes: tuple[AttributeSignal, ...] = ()
    splits: tuple[Split, ...] = ()
    dispersion_index: float | None = None
    rates_available: bool = True
    recommendations: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "signature": self.signature,
            "anomalies": list(self.anomalies),
            "anomaly_counts": dict(self.anomaly_counts),
            "top_frames": list(self.top_frames),
            "crashes": self.crashes,
            "hosts": self.hosts,
            "top_hosts": [{"host": h, "crashes": n} for h, n in self.top_hosts],
            "verdict": str(self.verdict),
            "suspects": [s.to_json() for s in self.suspects],
            "onset": None if self.onset is None else self.onset.to_json(),
            "first_version": self.first_version,
            "attributes": [a.to_json() for a in self.attributes],
            "splits": [s.to_json() for s in self.splits],
            "dispersion_index": _num(self.dispersion_index),
            "rates_available": self.rates_available,
            "recommendations": list(self.recommendations),
            "evidence": list(self.evidence),
        }


@dataclass(frozen=True, slots=True)
class HostFinding:
    """A flagged host with its reasons (evidence sentences)."""

    host: str
    kind: HostKind
    cpu: int | None
    crashes: int
    p_value: float
    reasons: tuple[str, ...]
    first_alarm_us: int | None = None
    cpu_crashes: int = 0
    anomalous: int = 0
    expected_anomalous: float | None = None
    rate_ratio: float | None = None
    populations: int = 0
    recommendations: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "kind": str(self.kind),
            "cpu": self.cpu,
            "crashes": self.crashes,
            "cpu_crashes": self.cpu_crashes,
            "anomalous": self.anomalous,
            "expected_anomalous": _num(self.expected_anomalous),
            "rate_ratio": _num(self.rate_ratio),
            "populations": self.populations,
            "p_value": _num(self.p_value),
            "first_alarm": None if self.first_alarm_us is None else iso_time(self.first_alarm_us),
            "reasons": list(self.reasons),
            "recommendations": list(self.recommendations),
        }


@dataclass(frozen=True, slots=True)
class FleetAnalysis:
    """The result of :func:`corecensus.epidemiology.analyze`.

    ``scan`` keeps the host scan's per-host arrays (index = position in ``host_names``) for
    callers that need every host's p-value, such as the fleet simulator's calibration; it is
    not part of the JSON.
    """

    populations: tuple[PopulationFinding, ...]
    hosts: tuple[HostFinding, ...]
    rates_available: bool
    notes: tuple[str, ...] = ()
    crashes: int = 0
    host_names: tuple[str, ...] = ()
    scan: HostScan | None = field(default=None, repr=False)

    def population(self, key: str) -> PopulationFinding:
        """The finding for population ``key`` (``KeyError`` if absent)."""
        for p in self.populations:
            if p.id == key:
                return p
        raise KeyError(key)

    def flagged_hosts(self, kind: HostKind = HostKind.HARDWARE) -> tuple[str, ...]:
        return tuple(h.host for h in self.hosts if h.kind is kind)

    def to_json(self) -> dict[str, Any]:
        return {
            "crashes": self.crashes,
            "rates_available": self.rates_available,
            "notes": list(self.notes),
            "populations": [p.to_json() for p in self.populations],
            "hosts": [h.to_json() for h in self.hosts],
        }


def join_names(items: Sequence[str], limit: int = 5) -> str:
    """``a, b and c`` (with ``and N more`` past ``limit``)."""
    items = list(items)
    if len(items) > limit:
        items = [*items[:limit], f"{len(items) - limit} more"]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
