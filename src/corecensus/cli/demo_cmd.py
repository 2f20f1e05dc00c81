"""``corecensus demo``: the main job on an embedded store, no setup."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from corecensus.cli.output import console, error, print_json, quiet_libraries, show
from corecensus.cli.render import analysis_view, demo_view, plain
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
    from corecensus.demo import analyze_demo

    try:
        report = analyze_demo(run)
    except CorecensusError as exc:
        error(str(exc))
        return 2
    if run.used_samples:
        out.print(
            plain(
                f"note: {run.used_samples}; using the sample cores shipped with corecensus",
                "yellow",
            )
        )
    if as_json:
        print_json({"demo": run.summary_json(), **report.analysis.to_json()})
        return 0
    show(demo_view(run.summary_json()))
    show(analysis_view(report.analysis))
    show(plain(f"store: {run.db}   exposure: {run.exposure}   deploys: {run.deploys}"))
    show(
        plain(
            f"again: corecensus analyze --db {run.db} --exposure {run.exposure} "
            f"--deploys {run.deploys}"
        )
    )
    return 0
