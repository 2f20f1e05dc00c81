"""Reading ``exposure.csv`` and ``deploys.csv`` into the epidemiology's tables.

The files are streamed: each row is checked and added to an
:class:`~corecensus.epidemiology.table.ExposureBuilder` (or ``DeploysBuilder``), which keeps
compact columns, so a million-row exposure file costs tens of megabytes rather than a dict per
row. A malformed file raises :class:`~corecensus.errors.MetadataError` naming ``file:line``.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import IO

from corecensus.epidemiology.table import Deploys, DeploysBuilder, ExposureBuilder, ExposureTable
from corecensus.errors import MetadataError
from corecensus.outside import LineTooLongError, bounded_lines, open_regular, strip_bom

__all__ = [
    "DEPLOY_COLUMNS",
    "EXPOSURE_COLUMNS",
    "EXPOSURE_OPTIONAL",
    "read_deploys",
    "read_exposure",
]

EXPOSURE_COLUMNS = ("host", "start", "end", "service", "version", "cpu_model")
EXPOSURE_OPTIONAL = ("processes", "microcode", "kernel")
DEPLOY_COLUMNS = ("time", "service", "version")

Source = str | os.PathLike[str] | IO[str]
# An exposure or deploy row is a few short fields; a longer physical line is refused before it
# is in memory (a 200 MB one-line file once cost 490 MB to be told its field was too large).
MAX_CSV_LINE_CHARS = 4 << 20


def read_exposure(source: Source) -> ExposureTable:
    """Read ``exposure.csv``: ``host,start,end,service,version,cpu_model`` and optionally
    ``processes``, ``microcode`` and ``kernel`` (what the host ran in the interval; a file
    without them reads as before); other columns are ignored."""
    with _rows(source, EXPOSURE_COLUMNS, optional=EXPOSURE_OPTIONAL) as (name, rows):
        build = ExposureBuilder(name)
        for line, row in rows:
            host, start, end, service, version, cpu_model, processes, microcode, kernel = row
            build.add(
                line,
                host=host,
                start=start,
                end=end,
                service=service,
                version=version,
                cpu_model=cpu_model,
                processes=processes,
                microcode=microcode,
                kernel=kernel,
            )
    return build.finish()


def read_deploys(source: Source) -> Deploys:
    """Read ``deploys.csv``: ``time,service,version``."""
    with _rows(source, DEPLOY_COLUMNS) as (name, rows):
        build = DeploysBuilder(name)
        for line, (time, service, version) in rows:
            build.add(line, time=time, service=service, version=version)
    return build.finish()


Rows = Iterator[tuple[int, list[str]]]


@contextmanager
def _rows(
    source: Source, required: Sequence[str], optional: Sequence[str] = ()
) -> Iterator[tuple[str, Rows]]:
    """The file's name and its rows as (line number, the wanted fields stripped, in the order
    ``required + optional``; a missing optional column reads as ``""``)."""
    if isinstance(source, str | os.PathLike):
        name = os.fspath(source)
        try:
            # A regular file only: a FIFO named as --exposure would block forever.
            raw = open_regular(name)
            stream: IO[str] = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        except OSError as exc:
            raise MetadataError(f"{name}: cannot read: {exc.strerror}") from None
    else:
        name = str(getattr(source, "name", "<stream>"))
        stream = source
    try:
        yield name, _fields(stream, name, required, optional)
    except UnicodeDecodeError:
        raise MetadataError(f"{name}: not UTF-8 text") from None
    except OSError as exc:
        raise MetadataError(f"{name}: cannot read: {exc.strerror}") from None
    finally:
        if stream is not source:
            stream.close()


def _fields(stream: IO[str], name: str, required: Sequence[str], optional: Sequence[str]) -> Rows:
    reader = csv.reader(bounded_lines(stream, MAX_CSV_LINE_CHARS, name))
    try:
        header = next(reader)
    except StopIteration:
        raise MetadataError(f"{name}:1: empty file, expected a header") from None
    except csv.Error as exc:
        raise MetadataError(f"{name}:1: {exc}") from None
    except LineTooLongError as exc:
        raise MetadataError(str(exc)) from None
    header = [strip_bom(h).strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise MetadataError(f"{name}:1: header lacks column(s) {', '.join(missing)}")
    # index of each wanted column; an absent optional one points at an always-empty extra field
    width = len(header)
    column = {h: i for i, h in enumerate(header)}  # a repeated name: the last one counts
    where = [column.get(c, width) for c in (*required, *optional)]
    try:
        for fields in reader:
            line = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != width:
                raise MetadataError(f"{name}:{line}: {len(fields)} fields, header has {width}")
            fields.append("")
            yield line, [fields[i].strip() for i in where]
    except csv.Error as exc:
        raise MetadataError(f"{name}:{reader.line_num}: {exc}") from None
    except LineTooLongError as exc:
        raise MetadataError(str(exc)) from None
