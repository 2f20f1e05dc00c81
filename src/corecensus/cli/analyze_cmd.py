"""``corecensus analyze``: crash populations, verdicts, suspects and onsets."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from corecensus.cli.output import error, print_json, show
from corecensus.cli.store_option import db_option, store_missing
from corecensus.errors import CorecensusError

if TYPE_CHECKING:
    from corecensus.app.racewindow import RaceRates


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
@click.option(
    "--signal-hz",
    type=float,
    default=None,
    help="Signals per second per process (e.g. a profiling timer's rate): with --event-rate, "
    "each signal-race population shows the crash rate its window implies beside the observed.",
)
@click.option(
    "--event-rate",
    type=float,
    default=None,
    help="Events per second per process that run the raced code once (e.g. exceptions thrown).",
)
@click.option(
    "--ns-per-instruction",
    type=float,
    default=None,
    help="Time one instruction of a race window takes [default: 1.0].",
)
@click.option(
    "--binaries",
    "binaries",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Directory of binaries (matched by build-id) to measure race windows in; repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the analysis JSON contract.")
@click.option("--brief", is_flag=True, help="Only the table, no evidence.")
def analyze(
    db: Path,
    exposure: Path | None,
    deploys: Path | None,
    level: str,
    crashes: Path | None,
    signal_hz: float | None,
    event_rate: float | None,
    ns_per_instruction: float | None,
    binaries: tuple[Path, ...],
    as_json: bool,
    brief: bool,
) -> int:
    """Find crash populations and say what causes each: a bad host/CPU, a bug, or a deploy."""
    from corecensus.app.analyze import analyze_crash_facts, analyze_store
    from corecensus.outside import require_regular
    from corecensus.signature import PopulationLevel
    from corecensus.store import open_store

    race = _race_rates(signal_hz, event_rate, ns_per_instruction, binaries)
    if isinstance(race, str):
        error(race)
        return 2
    if race is not None and crashes is not None:
        error("--signal-hz/--event-rate need the store's cores (the signal frames), not --crashes")
        return 2
    source = click.get_current_context().get_parameter_source("level")
    if crashes is not None and source is not click.core.ParameterSource.DEFAULT:
        # (it was ignored: a crash-facts file's populations are its signature column)
        error("--level chooses among the store's signatures; --crashes brings its own")
        return 2
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
            if db.suffix.lower() in (".csv", ".parquet"):
                # DuckDB said "Catalog Error: Cannot launch in-memory database in read-only
                # mode!" of such a file, which sends nobody to --crashes
                error(f"{db}: a crash-facts file, not a store: analyze it with --crashes {db}")
                return 2
            store = open_store(db, read_only=True)
            if store.snapshot is not None:
                _note_snapshot(db, Path(store.snapshot))
            try:
                report = analyze_store(
                    store,
                    exposure_csv=exposure,
                    deploys_csv=deploys,
                    level=PopulationLevel(level),
                    race_rates=race,
                )
            finally:
                store.close()
    except CorecensusError as exc:
        error(str(exc))
        return 2
    if as_json:
        print_json(report.to_json())
    else:
        from corecensus.cli.render import analysis_view  # Rich: not loaded for --json

        show(
            analysis_view(
                report.analysis,
                evidence=not brief,
                screens=report.inputs.screens_json(),
                notes=report.inputs.notes,
                race_checks=report.race_checks,
            )
        )
    return 0


def _race_rates(
    signal_hz: float | None,
    event_rate: float | None,
    ns_per_instruction: float | None,
    binaries: tuple[Path, ...],
) -> RaceRates | str | None:
    """The race-window request, None when not asked for, or what is wrong with the flags."""
    import math

    from corecensus.app.racewindow import RaceRates

    if signal_hz is None and event_rate is None:
        if ns_per_instruction is not None:
            return "--ns-per-instruction needs --signal-hz and --event-rate"
        return None
    if signal_hz is None or event_rate is None:
        return "--signal-hz and --event-rate go together (the window check needs both)"
    given = {"--signal-hz": signal_hz, "--event-rate": event_rate}
    if ns_per_instruction is not None:
        given["--ns-per-instruction"] = ns_per_instruction
    for flag, value in given.items():
        if not (math.isfinite(value) and value > 0):
            return f"{flag} must be a positive number, not {value:g}"

    def measure(path: str, build_id: str | None, offsets: Sequence[int], arch: str) -> int | None:
        from corecensus.coredump.codespan import instruction_span

        return instruction_span(path, build_id, offsets, arch, binaries=binaries)

    if ns_per_instruction is None:
        return RaceRates(signal_hz, event_rate, measure=measure)
    return RaceRates(signal_hz, event_rate, ns_per_instruction, measure)


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
