"""``corecensus inspect CORE``: one core dump → a crash record (Rich summary or ``--json``)."""

from __future__ import annotations

from pathlib import Path

import click

from corecensus.cli.numbers import FiniteFloatRange
from corecensus.cli.output import error, print_json, quiet_libraries, show
from corecensus.model import ParseStatus


@click.command()
@click.argument("core", type=str)
@click.option("--json", "as_json", is_flag=True, help="Print the crash record as one JSON object.")
@click.option(
    "--binaries",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    multiple=True,
    help="Directory of executables/libraries/debug files, matched to the core by build-id.",
)
@click.option(
    "--head-bytes",
    type=click.IntRange(min=64),
    default=None,
    help="Read only the first N bytes of the (decompressed) core, as a pipeline that fetches "
    "only the head of each core would.",
)
@click.option("--no-symbols", is_flag=True, help="Register and anomaly pass only (no drgn).")
@click.option(
    "--journal",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A `journalctl -o json` export holding the core's COREDUMP_* entry (the agent's "
    "watcher passes what journalctl said about a systemd-coredump core).",
)
@click.option(
    "--stdin-timeout",
    type=FiniteFloatRange(min=0.001, max=86_400),
    default=60.0,
    show_default=True,
    metavar="S",
    help="With CORE '-': give up on stdin after S seconds without a byte.",
)
def inspect(
    core: str,
    as_json: bool,
    binaries: tuple[Path, ...],
    head_bytes: int | None,
    no_symbols: bool,
    journal: Path | None,
    stdin_timeout: float,
) -> int:
    """Read one core dump (plain, .zst, .lz4, .xz, or - for stdin) into a crash record."""
    from corecensus.coredump import inspect_core
    from corecensus.errors import MetadataError
    from corecensus.ingest.journal import load_journal
    from corecensus.ingest.metadata import collect_metadata

    if not no_symbols:
        quiet_libraries()  # drgn's logger; logging is not loaded without it
    try:
        index = load_journal(journal) if journal is not None else None
    except MetadataError as exc:
        error(str(exc))
        return 2
    meta = collect_metadata(core, index).fields if core != "-" else {}
    record = inspect_core(
        core,
        head_bytes=head_bytes,
        binaries=binaries,
        symbolize=not no_symbols,
        metadata=meta,
        stdin_timeout=stdin_timeout,
    )
    if as_json:
        print_json(record.to_json())
    else:
        from corecensus.cli.render import record_view  # Rich: only when a table is shown

        show(record_view(record))
    if record.status is ParseStatus.UNPARSED:
        # The reason on stderr too, as one line: a script that keeps only stderr, or reads
        # --json from stdout, still learns why the exit status is 1.
        error(record.errors[0] if record.errors else f"{core}: not parsed")
        return 1
    return 0
