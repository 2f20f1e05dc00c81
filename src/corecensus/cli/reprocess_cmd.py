"""``corecensus reprocess``: recompute signatures from the stored facts after a rule change."""

from __future__ import annotations

from pathlib import Path

import click

from corecensus.cli.output import error, print_json, show
from corecensus.cli.render import plain
from corecensus.cli.store_option import db_option, store_missing
from corecensus.errors import CorecensusError

# Damaged rows named one per line on stderr; the rest are counted (all of them in --json).
DAMAGED_SHOWN = 20


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
    """Recompute every crash's signatures with the current rules.

    A stored row that cannot be read back is skipped and named on stderr (exit 1); the others
    are still re-signed."""
    from corecensus.app.reprocess import reprocess as run_reprocess
    from corecensus.store import open_store

    if store_missing(db):
        return 2
    try:
        store = open_store(db)
        try:
            summary = run_reprocess(store, everything=everything, siglists=siglists)
        finally:
            store.close()
    except CorecensusError as exc:
        error(str(exc))
        return 2
    if as_json:
        print_json(summary.to_json())
    else:
        n = summary.damaged_count
        skipped = f"; skipped {n} damaged row{'s' if n > 1 else ''}" if n else ""
        show(
            plain(
                f"re-signed {summary.examined - summary.damaged_count} of {summary.crashes} "
                f"crashes with signature rules v{summary.signature_version} "
                f"({summary.updated} rows updated){skipped} in {db}"
            )
        )
    # Each damaged row on stderr, one line (with --json too: a script that keeps stdout still
    # learns why the exit status is 1).
    for damaged in summary.damaged[:DAMAGED_SHOWN]:
        error(f"{db}: crash {damaged.core_id} skipped: {damaged.reason}")
    if summary.damaged_count > DAMAGED_SHOWN:
        error(f"{db}: ... and {summary.damaged_count - DAMAGED_SHOWN} more damaged rows skipped")
    return 1 if summary.damaged_count else 0
