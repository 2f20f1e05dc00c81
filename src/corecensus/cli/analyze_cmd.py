"""``corecensus analyze``: crash populations, verdicts, suspects and onsets."""

from __future__ import annotations

from pathlib import Path

import click

from corecensus.cli.output import error, print_json, show
from corecensus.cli.render import analysis_view
from corecensus.cli.store_option import db_option, store_missing
from corecensus.errors import CorecensusError


@click.command()
@db_option
@click.option(
    "--exposure",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="exposure.csv: host,start,end,service,version,cpu_model",
)
@click.option(
    "--deploys",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="deploys.csv: time,service,version",
)
@click.option(
    "--level",
    type=click.Choice(["symbolic", "address", "anomaly"]),
    default="symbolic",
    show_default=True,
    help="Which signature defines a population.",
)
@click.option(
    "--crashes",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Crash facts (CSV, or Parquet by its .parquet name) to analyze instead of the store: "
    "host,time,cpu,cpus_allowed,host_cpus,cpu_core,service,version,signature or frames,"
    "anomalies,cpu_model,microcode,kernel",
)
@click.option("--json", "as_json", is_flag=True, help="Print the analysis JSON contract.")
@click.option("--brief", is_flag=True, help="Only the table, no evidence.")
def analyze(
    db: Path,
    exposure: Path | None,
    deploys: Path | None,
    level: str,
    crashes: Path | None,
    as_json: bool,
    brief: bool,
) -> int:
    """Find crash populations and say what causes each: a bad host/CPU, a bug, or a deploy."""
    from corecensus.app.analyze import analyze_crash_facts, analyze_store
    from corecensus.outside import require_regular
    from corecensus.signature import PopulationLevel
    from corecensus.store import open_store

    try:
        for given in (exposure, deploys, crashes):
            if given is not None:
                require_regular(given)  # a FIFO would block the reader forever
    except OSError as exc:
        error(f"{exc.filename}: {exc.strerror}")
        return 2
    try:
        if crashes is not None:
            report = analyze_crash_facts(crashes, exposure_csv=exposure, deploys_csv=deploys)
        else:
            if store_missing(db):
                return 2
            store = open_store(db, read_only=True)
            if store.snapshot is not None:
                _note_snapshot(db, Path(store.snapshot))
            try:
                report = analyze_store(
                    store, exposure_csv=exposure, deploys_csv=deploys, level=PopulationLevel(level)
                )
            finally:
                store.close()
    except CorecensusError as exc:
        error(str(exc))
        return 2
    if as_json:
        print_json(report.to_json())
    else:
        show(
            analysis_view(
                report.analysis,
                evidence=not brief,
                screens=report.inputs.screens_json(),
                notes=report.inputs.notes,
            )
        )
    return 0


def _note_snapshot(db: Path, snapshot: Path) -> None:
    """Say, on stderr, that the analysis is of the writer's last snapshot, and how old it is."""
    import time

    from corecensus.cli.render import escape_control

    age = max(0.0, time.time() - snapshot.stat().st_mtime)
    click.echo(
        escape_control(
            f"note: {db} is being written by another process; analyzing its snapshot "
            f"{snapshot} ({age:.0f} s old)"
        ),
        err=True,
    )
