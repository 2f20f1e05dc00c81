"""The ``--db`` option every store-using subcommand shares, and its "no such store" check."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from corecensus.cli.output import error

F = TypeVar("F", bound=Callable[..., object])

DEFAULT_DB = Path("corecensus.duckdb")


def db_option(func: F) -> F:
    """``--db FILE``: the DuckDB store (default ``./corecensus.duckdb``)."""
    return click.option(
        "--db",
        type=click.Path(dir_okay=False, path_type=Path),
        default=DEFAULT_DB,
        show_default=True,
        help="The DuckDB store.",
    )(func)


def store_missing(db: Path) -> bool:
    """Say so (one line on stderr) and return True when ``db`` does not exist yet."""
    if db.exists():
        return False
    error(f"{db}: no such store (run `corecensus ingest` first)")
    return True
