"""Parquet files through DuckDB (``store`` is the only package that imports duckdb): rows of a
crash-facts file for :func:`corecensus.ingest.crashfacts.crash_facts_from_columns`."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import duckdb

from corecensus.errors import MetadataError

__all__ = ["read_parquet_rows"]

_BATCH = 65_536


def read_parquet_rows(path: str | os.PathLike[str]) -> tuple[list[str], Iterator[Sequence[Any]]]:
    """The header and a stream of rows (tuples, in batches) of a Parquet file."""
    name = os.fspath(path)
    con = duckdb.connect()
    try:
        rel = con.execute("SELECT * FROM read_parquet(?)", [name])
    except duckdb.Error as exc:
        con.close()
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MetadataError(f"{name}: not a readable Parquet file: {first}") from None
    header = [d[0] for d in rel.description or ()]

    def rows() -> Iterator[Sequence[Any]]:
        try:
            while batch := rel.fetchmany(_BATCH):
                yield from batch
        finally:
            con.close()

    return header, rows()
