"""Use case: recompute signatures from the stored facts after a rule change.

Crash records keep the raw facts (frames, stack window, anomalies), so a new signature rule or
frame list is applied to the whole store without touching a core again. A row whose record
cannot be read back is skipped and reported with its id and the reason; every other row is
still re-signed (one damaged row once stopped the whole pass, issue 10).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corecensus.pipeline import Signer, signature_columns
from corecensus.signature import (
    SIGNATURE_VERSION,
    SignatureGenerator,
    compute_signatures,
    default_pipeline,
)
from corecensus.store import DamagedCrash, SignatureColumns, Store

__all__ = ["BATCH", "MAX_DAMAGED_LISTED", "ReprocessSummary", "reprocess"]

# Crashes re-signed per store update: keeps memory flat on a large store (iteration is
# keyset-paginated and safe to interleave with updates).
BATCH = 1000
# Damaged rows kept with their reasons; past this many they are counted only.
MAX_DAMAGED_LISTED = 1000


@dataclass(frozen=True, slots=True)
class ReprocessSummary:
    location: str
    signature_version: int
    examined: int
    updated: int
    crashes: int
    # Rows skipped because their record could not be read back: the first
    # MAX_DAMAGED_LISTED with their reasons, and how many there were in all.
    damaged: tuple[DamagedCrash, ...] = ()
    damaged_count: int = 0

    def to_json(self) -> dict[str, Any]:
        """The ``reprocess --json`` summary."""
        return {
            "db": self.location,
            "signature_version": self.signature_version,
            "examined": self.examined,
            "updated": self.updated,
            "crashes": self.crashes,
            "damaged": self.damaged_count,
            "damaged_rows": [{"core_id": d.core_id, "reason": d.reason} for d in self.damaged],
        }


def reprocess(
    store: Store, *, everything: bool = False, siglists: Path | None = None
) -> ReprocessSummary:
    """Re-sign the crashes signed by an older rule version (every crash with ``everything``),
    with a site's own frame lists from ``siglists`` when given (validated on load)."""
    sign: Signer = (
        SignatureGenerator(default_pipeline(siglists)).generate if siglists else compute_signatures
    )
    below = None if everything else SIGNATURE_VERSION
    examined = changed = damaged_count = 0
    damaged: list[DamagedCrash] = []
    batch: list[tuple[str, SignatureColumns]] = []
    for outcome in store.iter_crash_outcomes(signature_version_below=below):
        examined += 1
        if isinstance(outcome, DamagedCrash):
            damaged_count += 1
            if len(damaged) < MAX_DAMAGED_LISTED:
                damaged.append(outcome)
            continue
        batch.append((outcome.core_id, signature_columns(sign(outcome))))
        if len(batch) >= BATCH:
            changed += store.update_signatures(batch)
            batch.clear()
    changed += store.update_signatures(batch)
    return ReprocessSummary(
        store.location,
        SIGNATURE_VERSION,
        examined,
        changed,
        store.count_crashes(),
        tuple(damaged),
        damaged_count,
    )
