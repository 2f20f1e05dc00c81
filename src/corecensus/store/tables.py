"""Each stored table declared once: name, row type, key and order; its columns and their SQL
types derived from the row type's fields. The DuckDB adapter builds its DDL, inserts and
selects from these declarations and the in-memory fake keys its dicts by them, so a column is
spelled out in exactly one place (the row dataclass in :mod:`corecensus.store.records`).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import operator
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from corecensus.errors import StoreError
from corecensus.store.records import (
    CrashRow,
    DeployRow,
    ExposureRow,
    Heartbeat,
    ScreenResultRow,
    SignatureColumns,
)

__all__ = [
    "BATCH_ROWS",
    "CRASHES",
    "DEPLOYS",
    "EXPOSURE",
    "HEARTBEATS",
    "SCREEN_RESULTS",
    "SIGNATURE_FIELDS",
    "TABLES",
    "Column",
    "Table",
    "batched",
    "population_column",
]

R = TypeVar("R")
T = TypeVar("T")

# Rows per transaction: bounds the memory of one insert and what a failure can lose. The
# in-memory fake rejects bad rows in the same batches.
BATCH_ROWS = 1000
_POPULATION_LEVELS = ("anomaly", "symbolic", "address")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


def population_column(level: str) -> str:
    """The column that holds the population key of ``level``."""
    if level not in _POPULATION_LEVELS:
        raise StoreError(f"unknown population level {level!r} (one of {_POPULATION_LEVELS})")
    return f"pop_{level}"


# SQL type of each annotation used in row types; a field may override it (narrower integers).
_SQL_TYPES: Mapping[str, str] = {
    "str": "VARCHAR NOT NULL",
    "str | None": "VARCHAR",
    "int": "BIGINT NOT NULL",
    "int | None": "BIGINT",
    "bool": "BOOLEAN NOT NULL",
    "tuple[str, ...]": "VARCHAR[] NOT NULL",
}


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    sql_type: str  # DuckDB type with its NOT NULL
    # attributes from the row to the value: (name,), or through a nested dataclass field
    path: tuple[str, ...] = ()

    def get(self, row: Any) -> Any:
        value = row
        for part in self.path or (self.name,):
            value = getattr(value, part)
        return value

    @property
    def base_type(self) -> str:
        return self.sql_type.split()[0]

    @property
    def is_list(self) -> bool:
        return self.base_type.endswith("[]")


@dataclass(frozen=True, slots=True)
class Table(Generic[R]):
    """A stored table: rows of ``row_type``, unique by ``key``, listed in ``order``."""

    name: str
    row_type: type[R]
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    order: tuple[str, ...]
    check: Callable[[R], None] | None = None
    # (getter, is a list column) per column, in column order: values() runs once per stored
    # row and column, so the attribute paths and types are not re-read each time.
    _readers: tuple[tuple[Callable[[Any], Any], bool], ...] = field(
        init=False, repr=False, compare=False
    )
    # Every column's value of a row at once, as a tuple (one call in C per row).
    _read_all: Callable[[Any], tuple[Any, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        paths = [".".join(c.path or (c.name,)) for c in self.columns]
        readers = tuple(
            (operator.attrgetter(path), c.is_list)
            for path, c in zip(paths, self.columns, strict=True)
        )
        object.__setattr__(self, "_readers", readers)
        object.__setattr__(self, "_read_all", operator.attrgetter(*paths))

    def ddl(self) -> str:
        cols = ", ".join(f"{c.name} {c.sql_type}" for c in self.columns)
        return f"{cols}, PRIMARY KEY ({', '.join(self.key)})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def values(self, row: R) -> tuple[Any, ...]:
        """The row's column values, in column order (lists for list columns)."""
        if self.check is not None:
            self.check(row)
        return tuple(list(get(row)) if is_list else get(row) for get, is_list in self._readers)

    def column_lists(
        self, rows: Sequence[R], constants: Mapping[str, Any] | None = None
    ) -> list[list[Any]]:
        """The rows' values column by column (lists for list columns), checked as
        :meth:`values` checks them; a column named in ``constants`` holds that value in every
        row instead of the rows' own (the store's ingest time: no copy of each row to set it)."""
        if self.check is not None:
            for row in rows:
                self.check(row)
        constants = constants or {}
        if len(self.columns) < 2 or not rows:  # (attrgetter of one name gives no tuple)
            by_column: list[Any] = [[get(r) for r in rows] for get, _ in self._readers]
        else:
            # Each row's values in one C call, turned into columns by zip: a comprehension per
            # column was 30 passes in Python over a load's rows (the collector's loader).
            by_column = list(zip(*map(self._read_all, rows), strict=True))
        out: list[list[Any]] = []
        for column, values, (_, is_list) in zip(
            self.columns, by_column, self._readers, strict=True
        ):
            if column.name in constants:
                out.append([constants[column.name]] * len(rows))
            elif is_list:
                out.append([list(v) for v in values])
            else:
                out.append(list(values))
        return out

    def key_of(self, row: R) -> tuple[Any, ...]:
        return tuple(self.column(n).get(row) for n in self.key)

    def sort_key(self, row: R) -> tuple[Any, ...]:
        return tuple(self.column(n).get(row) for n in self.order)

    def row(self, values: Sequence[Any]) -> R:
        """A row from column values as a select returns them."""
        fixed = iter(
            tuple(v) if c.is_list and v is not None else v
            for c, v in zip(self.columns, values, strict=True)
        )
        row: R = _build(self.row_type, fixed)
        return row


def declare(
    name: str,
    row_type: type[R],
    key: tuple[str, ...],
    order: tuple[str, ...] | None = None,
    overrides: Mapping[str, str] | None = None,
    check: Callable[[R], None] | None = None,
) -> Table[R]:
    overrides = overrides or {}
    columns = [
        Column(f.name, overrides.get(f.name) or _SQL_TYPES[str(f.type)], path)
        for f, path in _leaf_fields(row_type, ())
    ]
    return Table(name, row_type, tuple(columns), key, order or key, check)


@functools.cache
def _nested(row_type: type) -> Mapping[str, type]:
    """The fields of ``row_type`` that are dataclasses themselves (their fields are columns)."""
    hints = typing.get_type_hints(row_type)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(row_type)
        if dataclasses.is_dataclass(hints[f.name])
    }


def _leaf_fields(
    row_type: type, path: tuple[str, ...]
) -> Iterator[tuple[dataclasses.Field[Any], tuple[str, ...]]]:
    """Each column's field and attribute path, in field order, nested dataclasses in place."""
    nested = _nested(row_type)
    for f in dataclasses.fields(row_type):
        if f.name in nested:
            yield from _leaf_fields(nested[f.name], (*path, f.name))
        else:
            yield f, (*path, f.name)


def _build(row_type: type, values: Iterator[Any]) -> Any:
    """A row from its column values in :func:`_leaf_fields` order."""
    nested = _nested(row_type)
    return row_type(
        *(
            _build(nested[f.name], values) if f.name in nested else next(values)
            for f in dataclasses.fields(row_type)
        )
    )


def _check_exposure(r: ExposureRow) -> None:
    if r.end_us < r.start_us:
        raise StoreError(f"exposure row for {r.host} ends before it starts: {r}")


SIGNATURE_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SignatureColumns))

CRASHES: Table[CrashRow] = declare(
    "crashes",
    CrashRow,
    key=("core_id",),
    # The types the first schema used (kept so existing stores read the same).
    overrides={
        "cpu": "INTEGER",
        "signal": "INTEGER",
        "host_cpus": "INTEGER",
        "cpu_core": "INTEGER",
        "anomaly_mask": "USMALLINT NOT NULL",
        "sig_version": "INTEGER NOT NULL",
        # The whole record (about 10 KB of JSON) is most of a row's bytes. Left to choose, DuckDB
        # tries every string compression on it at each checkpoint (about 0.3 ms of CPU per
        # record, most of a collector's cost per record: bench/collector_bench.py); zstd alone
        # costs a third of that and packs tighter. Stores created before keep their choice.
        "record_json": "VARCHAR NOT NULL USING COMPRESSION zstd",
    },
)
EXPOSURE: Table[ExposureRow] = declare(
    "exposure",
    ExposureRow,
    key=("host", "start_us", "end_us", "service", "version"),
    check=_check_exposure,
)
DEPLOYS: Table[DeployRow] = declare("deploys", DeployRow, key=("time_us", "service", "version"))
HEARTBEATS: Table[Heartbeat] = declare(
    "heartbeats", Heartbeat, key=("host", "time_us", "service", "version")
)
SCREEN_RESULTS: Table[ScreenResultRow] = declare(
    "screen_results",
    ScreenResultRow,
    key=("result_id",),
    order=("host", "time_us", "result_id"),
)

# Every table, in the order export_parquet writes them.
TABLES: tuple[Table[Any], ...] = (CRASHES, EXPOSURE, DEPLOYS, HEARTBEATS, SCREEN_RESULTS)
