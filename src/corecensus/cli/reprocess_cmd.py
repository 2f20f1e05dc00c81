"""``corecensus reprocess``: recompute signatures from the stored facts after a rule change."""

from __future__ import annotations

from pathlib import Path

import click

from corecensus.cli.output import error, print_json, show
from corecensus.cli.render import plain
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
        show(
            plain(
                f"re-signed {summary.examined} of {summary.crashes} crashes with signature rules "
                f"v{summary.signature_version} ({summary.updated} rows updated) in {db}"
            )
        )
    return 0
