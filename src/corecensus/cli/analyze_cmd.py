"""``corecensus analyze``: crash populations, verdicts, suspects and onsets."""

from __future__ import annotations

from pathlib import Path

import click

from corecensus.cli.findings_view import render_analysis
from corecensus.cli.output import console, error, print_json
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
@click.option("--json", "as_json", is_flag=True, help="Print the analysis JSON contract.")
@click.option("--brief", is_flag=True, help="Only the table, no evidence.")
def analyze(
    db: Path, exposure: Path | None, deploys: Path | None, level: str, as_json: bool, brief: bool
) -> int:
    """Find crash populations and say what causes each: a bad host/CPU, a bug, or a deploy."""
    from corecensus.census import run_census
    from corecensus.signature import PopulationLevel
    from corecensus.store import open_store

    if store_missing(db):
        return 2
    try:
        store = open_store(db, read_only=True)
        try:
            analysis, inputs = run_census(
                store, exposure_csv=exposure, deploys_csv=deploys, level=PopulationLevel(level)
            )
        finally:
            store.close()
    except CorecensusError as exc:
        error(str(exc))
        return 2
    if as_json:
        doc = analysis.to_json()
        doc["inputs"] = {
            "db": str(db),
            "exposure": inputs.exposure_source,
            "deploys": inputs.deploys_source,
            "level": level,
        }
        # SDC screens beside the populations: the latest screen of each suspect host.
        for pop in doc["populations"]:
            pop["screens"] = inputs.screens_json(s["host"] for s in pop["suspects"])
        doc["screens"] = inputs.screens_json()
        print_json(doc)
    else:
        render_analysis(console(), analysis, evidence=not brief, screens=inputs.screens_json())
    return 0
