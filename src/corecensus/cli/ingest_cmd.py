"""``corecensus ingest PATH...``: core files and directories into the store, in parallel."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from corecensus.cli.output import console, error, print_json, quiet_libraries
from corecensus.cli.store_option import db_option
from corecensus.errors import CorecensusError
from corecensus.model import CrashRecord, ParseStatus

BATCH = 200


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
    from corecensus.ingest.journal import JournalIndex, load_journal
    from corecensus.pipeline import find_cores, find_screen_records, ingest_records
    from corecensus.store import open_store

    quiet_libraries()
    cores = find_cores(p for p in paths if p.suffix != ".json")
    screens, screen_problems = find_screen_records(paths)
    index: JournalIndex | None = None
    try:
        for j in journal:
            index = load_journal(j, index)
        store = open_store(db)
    except CorecensusError as exc:
        error(str(exc))
        return 2
    workers = jobs or max(1, min(len(cores), os.cpu_count() or 1))
    stats: Counter[str] = Counter()
    events: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    batch: list[CrashRecord] = []

    def flush() -> None:
        result = store.add_crashes(batch)
        stats["ingested"] += result.new
        stats["duplicates"] += result.duplicate
        batch.clear()

    show = console(stderr=True)
    try:
        with Progress(
            TextColumn("ingest"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=show, transient=True, disable=as_json or not show.is_terminal,
        ) as bar:  # fmt: skip
            task = bar.add_task("cores", total=len(cores))
            for rec in ingest_records(
                cores, jobs=workers, journal=index, binaries=list(binaries), symbolize=not no_symbols,
                on_done=lambda _p: bar.advance(task), events=events,
            ):  # fmt: skip
                stats[str(rec.status)] += 1
                if rec.status is not ParseStatus.OK and rec.errors:
                    reasons[_reason(rec.errors[0])] += 1
                batch.append(rec)
                if len(batch) >= BATCH:
                    flush()
            if batch:
                flush()
            if screens:
                stats["screens"] += store.add_screen_results(screens).new
    except CorecensusError as exc:
        error(f"{exc} (records before this batch are stored)")
        return 2
    finally:
        store.close()
    summary = {
        "db": str(db),
        "cores": len(cores),
        "ingested": stats["ingested"],
        "duplicates": stats["duplicates"],
        "ok": stats["ok"],
        "partial": stats["partial"],
        "unparsed": stats["unparsed"],
        "reasons": dict(reasons.most_common()),
        "screens": stats["screens"],
        "worker_died": events["worker_died"],
        "retried_alone": events["retried_alone"],
        "screen_errors": screen_problems[:20],
        "journal_errors": [str(e) for e in (index.errors if index else [])][:20],
    }
    if as_json:
        print_json(summary)
    else:
        _render(summary)
    return 0


def _reason(message: str) -> str:
    """The reason without the file name, so identical problems are counted together."""
    head, sep, tail = message.partition(": ")
    return tail if sep and ("/" in head or head.startswith("<")) else message


def _render(s: dict[str, object]) -> None:
    out = console()
    t = Table(title=f"ingest into {s['db']}", title_justify="left", show_header=False, box=None)
    t.add_column(style="bold")
    t.add_column(justify="right")
    for key in ("cores", "ingested", "duplicates", "ok", "partial", "unparsed", "screens"):
        t.add_row(key, str(s[key]))
    out.print(t)
    reasons = s["reasons"]
    assert isinstance(reasons, dict)
    if reasons:
        r = Table(title="not fully parsed, by reason", title_justify="left")
        r.add_column("cores", justify="right")
        r.add_column("reason")
        for reason, n in list(reasons.items())[:15]:
            r.add_row(str(n), reason)
        out.print(r)
