"""``corecensus reprocess``: recompute signatures from the stored facts after a rule change.

Crash records keep the raw facts (frames, stack window, anomalies), so a new signature rule or
frame list is applied to the whole store without touching a core again.
"""

from __future__ import annotations

from pathlib import Path

import click

from corecensus.cli.output import console, error, print_json
from corecensus.cli.store_option import db_option, store_missing
from corecensus.errors import CorecensusError


@click.command()
@db_option
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Re-sign every crash, not only those signed by an older rule version.",
)
@click.option(
    "--siglists",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Directory with a site's own irrelevant/prefix frame lists (validated on load).",
)
@click.option("--json", "as_json", is_flag=True)
def reprocess(db: Path, everything: bool, siglists: Path | None, as_json: bool) -> int:
    """Recompute every crash's signatures with the current rules."""
    from corecensus.signature import (
        SIGNATURE_VERSION,
        SignatureGenerator,
        Signatures,
        compute_signatures,
        default_pipeline,
    )
    from corecensus.store import open_store

    if store_missing(db):
        return 2
    try:
        sign = (
            SignatureGenerator(default_pipeline(siglists)).generate
            if siglists
            else compute_signatures
        )
        store = open_store(db)
        try:
            below = None if everything else SIGNATURE_VERSION
            examined = changed = 0
            batch: list[tuple[str, Signatures]] = []
            # Batches keep memory flat on a large store (iteration is keyset-paginated and safe
            # to interleave with updates).
            for r in store.iter_crashes(signature_version_below=below):
                batch.append((r.core_id, sign(r)))
                examined += 1
                if len(batch) >= 1000:
                    changed += store.update_signatures(batch)
                    batch.clear()
            changed += store.update_signatures(batch)
            total = store.count_crashes()
        finally:
            store.close()
    except CorecensusError as exc:
        error(str(exc))
        return 2
    summary = {
        "db": str(db),
        "signature_version": SIGNATURE_VERSION,
        "examined": examined,
        "updated": changed,
        "crashes": total,
    }
    if as_json:
        print_json(summary)
    else:
        console().print(
            f"re-signed {examined} of {total} crashes with signature rules v{SIGNATURE_VERSION} ({changed} rows updated) in {db}"
        )
    return 0
