"""``corecensus demo``: the main job on an embedded store, no setup."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from corecensus.cli.findings_view import render_analysis
from corecensus.cli.output import console, error, print_json, quiet_libraries
from corecensus.errors import CorecensusError


@click.command()
@click.option(
    "--dir",
    "workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("corecensus-demo"),
    show_default=True,
    help="Where the demo's cores, store and report go (emptied first).",
)
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the simulated fleet.")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def demo(workdir: Path, jobs: int, seed: int, as_json: bool) -> int:
    """Crash a small simulated fleet for real, ingest the cores, analyze, report."""
    from corecensus.demo import run_demo

    quiet_libraries()
    out = console(stderr=True)
    try:
        with Progress(
            TextColumn("{task.description:8}"), BarColumn(), MofNCompleteColumn(),
            console=out, transient=True, disable=as_json or not out.is_terminal,
        ) as bar:  # fmt: skip
            tasks: dict[str, TaskID] = {}

            def progress(step: str, done: int, total: int) -> None:
                if step not in tasks:
                    tasks[step] = bar.add_task(step, total=total)
                bar.update(tasks[step], completed=done)

            run = run_demo(workdir, jobs=jobs, seed=seed, progress=progress)
    except CorecensusError as exc:
        error(str(exc))
        return 2
    from corecensus.census import run_census
    from corecensus.store import open_store

    try:
        store = open_store(run.db, read_only=True)
        try:
            analysis, _inputs = run_census(
                store, exposure_csv=run.exposure, deploys_csv=run.deploys
            )
        finally:
            store.close()
    except CorecensusError as exc:
        error(str(exc))
        return 2
    if run.used_samples:
        out.print(
            Text(
                f"note: {run.used_samples}; using the sample cores shipped with corecensus",
                style="yellow",
            )
        )
    classes = Counter(",".join(r.anomaly_names) or "none" for r in run.records)
    summary = {
        "workdir": str(run.workdir),
        "db": str(run.db),
        "crashes": len(run.fleet.crashes),
        "hosts": len(run.fleet.hosts),
        "ingested": run.ingested,
        "duplicates": run.duplicates,
        "status": dict(Counter(str(r.status) for r in run.records)),
        "anomaly_classes": dict(classes),
    }
    if as_json:
        print_json({"demo": summary, **analysis.to_json()})
        return 0
    con = console()
    t = Table(
        title=f"demo fleet: {summary['crashes']} real kernel cores from {summary['hosts']} simulated hosts",
        title_justify="left",
    )
    t.add_column("anomaly class")
    t.add_column("crashes", justify="right")
    for cls, n in classes.most_common():
        t.add_row(cls, str(n))
    con.print(t)
    render_analysis(con, analysis)
    con.print(f"store: {run.db}   exposure: {run.exposure}   deploys: {run.deploys}")
    con.print(
        f"again: corecensus analyze --db {run.db} --exposure {run.exposure} --deploys {run.deploys}"
    )
    return 0
