"""Row types the store keeps besides crashes, and the shapes it returns.

Times are microseconds since the Unix epoch (as ``COREDUMP_TIMESTAMP``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from corecensus.signature import PopulationLevel

__all__ = [
    "AddResult",
    "CrashColumns",
    "DeployRow",
    "ExposureRow",
    "Heartbeat",
    "ScreenResultRow",
]


@dataclass(frozen=True, slots=True)
class AddResult:
    """What an ``add_*`` call did: rows stored now, and rows already there (or repeated in the
    batch) that were skipped. Adding is idempotent."""

    new: int = 0
    duplicate: int = 0

    def __add__(self, other: AddResult) -> AddResult:
        return AddResult(self.new + other.new, self.duplicate + other.duplicate)


@dataclass(frozen=True, slots=True)
class ExposureRow:
    """An interval ``[start_us, end_us)`` in which ``host`` ran ``service`` at ``version``
    (a row of ``exposure.csv``)."""

    host: str
    start_us: int
    end_us: int
    service: str
    version: str
    cpu_model: str | None = None


@dataclass(frozen=True, slots=True)
class DeployRow:
    """``service`` moved to ``version`` at ``time_us`` (a row of ``deploys.csv``)."""

    time_us: int
    service: str
    version: str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """An agent's report that ``host`` ran ``service`` at ``version`` at ``time_us``."""

    host: str
    time_us: int
    service: str
    version: str


@dataclass(frozen=True, slots=True)
class ScreenResultRow:
    """One SDC screen record: the full result as JSON plus the columns queries filter on."""

    host: str
    time_us: int
    mode: str
    decision: str
    result: Mapping[str, Any] = field(default_factory=dict)

    def result_json(self) -> str:
        return json.dumps(self.result, sort_keys=True, separators=(",", ":"))

    @property
    def result_id(self) -> str:
        """Content hash: the same record stored twice is stored once."""
        key = json.dumps(
            [self.host, self.time_us, self.mode, self.decision, self.result_json()],
            separators=(",", ":"),
        )
        return hashlib.sha256(key.encode("utf-8")).hexdigest()


ObjectArray = npt.NDArray[np.object_]


@dataclass(frozen=True, slots=True)
class CrashColumns:
    """Crash table as NumPy columns for the analysis layer, one row per crash, ordered by time
    (unknown times last) then ``core_id``.

    String columns are object arrays holding ``str`` or ``None`` (unknown). ``time_us`` is 0 where
    ``time_known`` is false; ``cpu`` and ``signal`` are -1 where unknown. ``anomaly_mask`` has bit
    ``i`` set for ``corecensus.model.ANOMALY_NAMES[i]``. ``population`` is the population key at
    ``level``.
    """

    level: PopulationLevel
    core_id: ObjectArray
    host: ObjectArray
    time_us: npt.NDArray[np.int64]
    time_known: npt.NDArray[np.bool_]
    cpu: npt.NDArray[np.int64]
    cpu_model: ObjectArray
    microcode: ObjectArray
    kernel: ObjectArray
    service: ObjectArray
    version: ObjectArray
    exe: ObjectArray
    signal: npt.NDArray[np.int64]
    population: ObjectArray
    anomaly_mask: npt.NDArray[np.uint16]

    def __len__(self) -> int:
        return int(self.core_id.shape[0])
