"""``corecensus ingest PATH...``: core files and directories into the store, in parallel."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from corecensus.cli.output import console, error, print_json, quiet_libraries, show
from corecensus.cli.render import ingest_view
from corecensus.cli.store_option import db_option
from corecensus.errors import CorecensusError


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@db_option
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes (default: CPUs).",
)
@click.option(
    "--journal",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    help="A `journalctl -o json` export with the cores' COREDUMP_* entries.",
)
@click.option(
    "--binaries",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    multiple=True,
    help="Directory of binaries/debug files matched by build-id.",
)
@click.option("--no-symbols", is_flag=True, help="Register and anomaly pass only (no drgn).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def ingest(
    paths: tuple[Path, ...],
    db: Path,
    jobs: int | None,
    journal: tuple[Path, ...],
    binaries: tuple[Path, ...],
    no_symbols: bool,
    as_json: bool,
) -> int:
    """Parse core dumps (files or directories) with their metadata into the store."""
    from corecensus.app.ingest import IngestOptions, ingest_paths
    from corecensus.store import open_store

    quiet_libraries()
    options = IngestOptions(
        jobs=jobs, journals=journal, binaries=binaries, symbolize=not no_symbols
    )
    try:
        store = open_store(db)
    except CorecensusError as exc:
        error(str(exc))
        return 2
    show_bar = console(stderr=True)
    try:
        with Progress(
            TextColumn("ingest"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=show_bar, transient=True, disable=as_json or not show_bar.is_terminal,
        ) as bar:  # fmt: skip
            task = bar.add_task("cores", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            summary = ingest_paths(store, paths, options, progress=progress)
    except CorecensusError as exc:
        error(f"{exc} (records before this batch are stored)")
        return 2
    finally:
        store.close()
    if as_json:
        print_json(summary.to_json())
    else:
        show(ingest_view(summary.to_json()))
    return 0
