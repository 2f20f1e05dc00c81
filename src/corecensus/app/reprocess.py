"""Use case: recompute signatures from the stored facts after a rule change.

Crash records keep the raw facts (frames, stack window, anomalies), so a new signature rule or
frame list is applied to the whole store without touching a core again.
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
from corecensus.store import SignatureColumns, Store

__all__ = ["BATCH", "ReprocessSummary", "reprocess"]

# Crashes re-signed per store update: keeps memory flat on a large store (iteration is
# keyset-paginated and safe to interleave with updates).
BATCH = 1000


@dataclass(frozen=True, slots=True)
class ReprocessSummary:
    location: str
    signature_version: int
    examined: int
    updated: int
    crashes: int

    def to_json(self) -> dict[str, Any]:
        """The ``reprocess --json`` summary."""
        return {
            "db": self.location,
            "signature_version": self.signature_version,
            "examined": self.examined,
            "updated": self.updated,
            "crashes": self.crashes,
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
    examined = changed = 0
    batch: list[tuple[str, SignatureColumns]] = []
    for record in store.iter_crashes(signature_version_below=below):
        batch.append((record.core_id, signature_columns(sign(record))))
        examined += 1
        if len(batch) >= BATCH:
            changed += store.update_signatures(batch)
            batch.clear()
    changed += store.update_signatures(batch)
    return ReprocessSummary(
        store.location, SIGNATURE_VERSION, examined, changed, store.count_crashes()
    )
