"""Crash facts: one row per crash from a system users already have (DESIGN.md, "Crash facts").

Columns (header names; only ``host``, ``time`` and one of ``signature``/``frames`` are
required, every other column may be absent or empty = unknown):

=============== ==========================================================================
``host``        host name
``time``        ISO-8601 (UTC when no zone) or integer microseconds since the epoch; a time
                before 1970, or an integer below :data:`MIN_TIME_US` (1973: seconds or
                milliseconds, not microseconds) is an error
``cpu``         logical CPU the crashing thread last ran on
``cpus_allowed`` the process's ``Cpus_allowed_list`` (``0-3,8``)
``host_cpus``   the host's online logical CPUs at the crash
``cpu_core``    physical core of ``cpu`` (SMT siblings share it)
``service``     service (unit) name; ``version`` its version
``signature``   the population key; else ``frames``: top frames, ``|``-separated, innermost
                first, normalized (:func:`corecensus.signature.normalize.normalize_function`)
                and the first :data:`SIGNATURE_FRAMES` joined
``anomalies``   register-anomaly names (:data:`corecensus.model.ANOMALY_NAMES`), ``;`` or
                ``,``-separated
``cpu_model``, ``microcode``, ``kernel``, ``crash_id``  text
=============== ==========================================================================

Unknown columns are ignored (as unknown sidecar fields are). A malformed value is a
:class:`~corecensus.errors.MetadataError` naming ``file:line`` and the column. CSV is read as a
stream (one row at a time into columns); Parquet comes through
:func:`corecensus.store.parquet.read_parquet_columns` (DuckDB lives in ``store``) and then
:func:`crash_facts_from_columns`.
"""

from __future__ import annotations

import csv
import math
import os
from array import array
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from corecensus.cpulist import canonical_cpu_list
from corecensus.epidemiology.findings import iso_time
from corecensus.epidemiology.table import (
    Categorical,
    CrashTable,
    anomaly_mask_of,
    parse_time_us,
)
from corecensus.errors import MetadataError
from corecensus.outside import LineTooLongError, bounded_lines, strip_bom
from corecensus.signature.normalize import normalize_function

__all__ = [
    "COLUMNS",
    "SIGNATURE_FRAMES",
    "crash_facts_from_columns",
    "read_crash_facts_csv",
]

COLUMNS = (
    "host",
    "time",
    "cpu",
    "cpus_allowed",
    "host_cpus",
    "cpu_core",
    "service",
    "version",
    "signature",
    "frames",
    "anomalies",
    "cpu_model",
    "microcode",
    "kernel",
    "crash_id",
)
SIGNATURE_FRAMES = 5
_TEXT = ("service", "version", "cpu_model", "microcode", "kernel")


class _Columns:
    """Accumulates validated rows into column lists (no dict per row is kept)."""

    def __init__(self, name: str, header: Sequence[str]) -> None:
        self.name = name
        missing = [c for c in ("host", "time") if c not in header]
        if not ({"signature", "frames"} & set(header)):
            missing.append("signature (or frames)")
        if missing:
            raise MetadataError(f"{name}:1: crash facts lack column(s) {', '.join(missing)}")
        self.header = set(header)
        self.host: list[str] = []
        self.time: list[int] = []
        self.cpu: list[int] = []
        self.core: list[int] = []
        self.allowed: list[str | None] = []
        self.population: list[str] = []
        self.mask: list[int] = []
        self.text: dict[str, list[str | None]] = {k: [] for k in _TEXT}
        self.ids: list[str] = []
        self.lines = array("q")  # each row's line (CSV) or row number (Parquet)
        self.host_cpus: dict[str, int] = {}
        self._lists: dict[str, str] = {}
        self._masks: dict[str, int] = {}
        self._times: dict[str, int] = {}

    def add(self, line: int, row: Mapping[str, Any]) -> None:
        try:
            self._add(row)
        except MetadataError as exc:
            raise MetadataError(f"{self.name}:{line}: {exc}") from None
        self.lines.append(line)

    def _add(self, row: Mapping[str, Any]) -> None:
        for column, value in row.items():
            # A Parquet list, struct or blob column would read as its Python spelling
            # ("[1, 2, 3]" as a signature): a wrong type is an error, as in a CSV it cannot be.
            if isinstance(value, list | tuple | dict | bytes | bytearray | np.ndarray):
                raise MetadataError(
                    f"{column!r} holds a {type(value).__name__}, not text or a number"
                )
        host = _text(row.get("host"))
        if not host:
            raise MetadataError("empty 'host'")
        time_us = self._time(row.get("time"))
        cpu = _int(row.get("cpu"), "cpu")
        core = _int(row.get("cpu_core"), "cpu_core")
        online = _int(row.get("host_cpus"), "host_cpus")
        allowed = _text(row.get("cpus_allowed"))
        if allowed:
            canon = self._lists.get(allowed)
            if canon is None:
                canon = self._lists[allowed] = canonical_cpu_list(allowed)
            allowed = canon
        key = _text(row.get("signature")) or _frames_key(_text(row.get("frames")))
        if not key:
            raise MetadataError("empty 'signature' and 'frames'")
        names = _text(row.get("anomalies")) or ""
        mask = self._masks.get(names)
        if mask is None:
            parts = [p.strip() for p in names.replace(",", ";").split(";") if p.strip()]
            mask = self._masks[names] = anomaly_mask_of(parts)
        self.host.append(host)
        self.time.append(time_us)
        self.cpu.append(cpu)
        self.core.append(core)
        self.allowed.append(allowed or None)
        self.population.append(key)
        self.mask.append(mask)
        for k in _TEXT:
            self.text[k].append(_text(row.get(k)) or None)
        self.ids.append(_text(row.get("crash_id")) or "")
        if online > 0:
            self.host_cpus[host] = max(self.host_cpus.get(host, 0), online)

    def _time(self, value: Any) -> int:
        if isinstance(value, datetime):
            return _after_epoch(parse_time_us(value.isoformat()), value.isoformat())
        if isinstance(value, int | np.integer) and not isinstance(value, bool):
            return _plausible_us(_time_in_range(int(value), str(value)), str(value))
        text = _text(value)
        if not text:
            raise MetadataError("empty 'time'")
        cached = self._times.get(text)
        if cached is not None:
            return cached
        digits = text[1:] if text.startswith("-") else text
        if digits.isascii() and digits.isdigit():
            # Microseconds. The length check comes before int() (which refuses past 4,300
            # digits); a 30-digit time once overflowed the int64 column (a traceback), and
            # "١٧..." passed str.isdigit() as a time.
            if len(digits) > 19:
                raise MetadataError(f"'time' out of range: {_shown(text)}")
            out = _plausible_us(_time_in_range(int(text), text), text)
        else:
            try:
                out = parse_time_us(text)
            except ValueError:
                raise MetadataError(
                    f"'time' is neither ISO-8601 nor microseconds: {_shown(text)}"
                ) from None
            out = _after_epoch(out, text)
        self._times[text] = out
        return out

    def table(self) -> CrashTable:
        host = Categorical.encode(self.host)
        allowed = None
        if "cpus_allowed" in self.header and any(self.allowed):
            allowed = Categorical.encode(self.allowed)
        core = None
        if "cpu_core" in self.header:
            core = np.array(self.core, dtype=np.int32)
        host_cpus = None
        if self.host_cpus:
            host_cpus = np.array([self.host_cpus.get(h, 0) for h in host.vocab], dtype=np.int32)
        ids = None
        if any(self.ids):
            repeat = _repeated_id(self.ids)
            if repeat is not None:
                first, again = (self.lines[i] for i in repeat)
                raise MetadataError(
                    f"{self.name}:{again}: crash_id {_shown(self.ids[repeat[1]])} was given "
                    f"at {first} already: one crash twice would count as two (remove repeats)"
                )
            ids = np.array(self.ids, dtype=object)
        return CrashTable.from_arrays(
            time_us=np.array(self.time, dtype=np.int64),
            host=host,
            population=Categorical.encode(self.population),
            cpu=np.array(self.cpu, dtype=np.int32),
            anomaly_mask=np.array(self.mask, dtype=np.uint16),
            cpu_model=Categorical.encode(self.text["cpu_model"]),
            microcode=Categorical.encode(self.text["microcode"]),
            kernel=Categorical.encode(self.text["kernel"]),
            service=Categorical.encode(self.text["service"]),
            version=Categorical.encode(self.text["version"]),
            crash_id=ids,
            host_cpus=host_cpus,
            cpus_allowed=allowed,
            cpu_core=core,
        )


# A crash-facts row is a dozen short fields (the csv module refuses a field over 131,072
# characters); a longer physical line is not a row, and is refused before it is in memory.
MAX_CSV_LINE_CHARS = 4 << 20


def _text(value: Any) -> str:
    if value is None:
        return ""
    return str(value).strip()


# The latest time ISO-8601 text can spell here (datetime.max, the end of year 9999), in
# microseconds since the epoch; a number of microseconds past it, either way, is no time.
MAX_TIME_US = 253_402_300_800_000_000


def _time_in_range(us: int, text: str) -> int:
    if not -MAX_TIME_US < us < MAX_TIME_US:
        raise MetadataError(f"'time' out of range: {_shown(text)} microseconds")
    return us


# Crash times in microseconds below this (1973-03-03T09:46:40Z) are read as a unit mistake:
# every time of the last fifty years in seconds (1.7e9) or milliseconds (1.7e12) since the epoch
# falls below it, and read as microseconds would silently put the crashes in January 1970.
MIN_TIME_US = 100_000_000_000_000


def _plausible_us(us: int, text: str) -> int:
    if us < MIN_TIME_US:
        when = "before 1970" if us < 0 else iso_time(us)
        raise MetadataError(
            f"'time' {_shown(text)} read as microseconds since the epoch is {when}: "
            "seconds or milliseconds? Give microseconds or ISO-8601"
        )
    return us


def _after_epoch(us: int, text: str) -> int:
    # No core dump predates the epoch (COREDUMP_TIMESTAMP is unsigned); a time before it is a
    # wrong or placeholder value, and the windowed host tests assumed none (an IndexError).
    if us < 0:
        raise MetadataError(f"'time' {_shown(text)} is before 1970-01-01, no crash time")
    return us


def _shown(text: str) -> str:
    """An outside value quoted for a message, cut to a readable length."""
    return repr(text) if len(text) <= 60 else repr(text[:57]) + "..."


def _int(value: Any, column: str) -> int:
    """A non-negative integer, or -1 when empty."""
    if isinstance(value, float | np.floating):
        # pandas keeps an integer column with a missing value as floats: to_parquet writes
        # 3.0 (and the missing one as null, or NaN), to_csv "3.0" (and ""). Such a file was
        # refused at its first row ("'cpu' is not a non-negative integer: '1.0'").
        if math.isnan(value):
            return -1
        if not float(value).is_integer():
            raise MetadataError(f"{column!r} is not a non-negative integer: {value!r}")
        value = int(value)
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        number = int(value)
    else:
        text = _text(value)
        if not text:
            return -1
        given = text
        whole, dot, zeros = text.partition(".")
        if dot and zeros and not zeros.strip("0"):
            text = whole  # "3.0", as pandas' to_csv writes the integer 3 of a float column
        # isascii: str.isdigit() also takes "٣" and "³"; the length check comes before
        # int(), which refuses (ValueError, a traceback here once) past 4,300 digits.
        if not (text.isascii() and text.isdigit()):
            raise MetadataError(f"{column!r} is not a non-negative integer: {_shown(given)}")
        if len(text) > 10:
            raise MetadataError(f"{column!r} out of range: {_shown(text)}")
        number = int(text)
    if number < 0 or number >= 1 << 31:
        raise MetadataError(f"{column!r} out of range: {number}")
    return number


def _repeated_id(ids: Sequence[str]) -> tuple[int, int] | None:
    """Row indices (earlier, later) of the first row, in file order, whose non-empty id an
    earlier row gave; else None. Sorts 64-bit hashes, not the text (1e7 ids in a set cost a
    gigabyte); equal hashes are confirmed on the text (two different ids sharing a hash
    between two copies of one could hide that copy: a 2^-64 chance per pair)."""
    n = len(ids)
    keys = np.fromiter((hash(x) for x in ids), dtype=np.int64, count=n)
    given = np.flatnonzero(np.fromiter((x != "" for x in ids), dtype=bool, count=n))
    order = given[np.argsort(keys[given], kind="stable")]
    k = keys[order]
    best: tuple[int, int] | None = None
    for j in np.flatnonzero(k[1:] == k[:-1]).tolist():
        a, b = int(order[j]), int(order[j + 1])  # stable: a before b in the file
        if ids[a] == ids[b] and (best is None or b < best[1]):
            best = (a, b)
    return best


def _frames_key(frames: str) -> str:
    """The population key of a row that has frames but no signature."""
    names = [normalize_function(f.strip()) for f in frames.split("|") if f.strip()]
    return " | ".join([n for n in names if n][:SIGNATURE_FRAMES])


def read_crash_facts_csv(path: str | os.PathLike[str]) -> CrashTable:
    """Read a crash-facts CSV file (see the module docstring) as a stream."""
    name = os.fspath(path)
    try:
        with open(name, newline="", encoding="utf-8") as f:
            reader = csv.reader(bounded_lines(f, MAX_CSV_LINE_CHARS, name))
            try:
                header = [strip_bom(h).strip() for h in next(reader)]
            except StopIteration:
                raise MetadataError(f"{name}:1: empty file, expected a header") from None
            cols = _Columns(name, header)
            width = len(header)
            for fields in reader:
                if not fields or all(not x.strip() for x in fields):
                    continue
                if len(fields) != width:
                    raise MetadataError(
                        f"{name}:{reader.line_num}: {len(fields)} fields, header has {width}"
                    )
                cols.add(reader.line_num, dict(zip(header, fields, strict=True)))
    except OSError as exc:
        raise MetadataError(f"{name}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise MetadataError(f"{name}: not UTF-8 text") from None
    except csv.Error as exc:
        raise MetadataError(f"{name}: {exc}") from None
    except LineTooLongError as exc:
        raise MetadataError(str(exc)) from None
    return cols.table()


def crash_facts_from_columns(
    name: str, header: Sequence[str], rows: Iterable[Sequence[Any]]
) -> CrashTable:
    """Crash facts from rows of values in ``header`` order (a Parquet file's, say); row
    numbers in errors count from 1 for the first data row."""
    cols = _Columns(name, list(header))
    for i, values in enumerate(rows, start=1):
        cols.add(i, dict(zip(header, values, strict=True)))
    return cols.table()
