"""Columnar inputs of the epidemiology: crashes, exposure and deploys.

Each table is a frozen dataclass of equal-length NumPy arrays plus vocabularies: a categorical
column holds ``int32`` codes into a tuple of strings, ``-1`` meaning unknown. Columns (rather than
a list of records) are what lets :func:`corecensus.epidemiology.analyze` handle ten million crashes
with sort-based group-bys instead of a Python loop per crash.

Units: times are microseconds since the Unix epoch (``int64``, as systemd-coredump's
``COREDUMP_TIMESTAMP``); exposure is in exposure-hours (process-hours), so rates are crashes per
exposure-hour.

Small data comes in through ``from_rows`` (a list of dicts); big data through ``from_arrays``
(codes and vocabularies, validated but not copied when the dtypes already match). ``exposure.csv``
and ``deploys.csv`` are read by :meth:`ExposureTable.read_csv` and :meth:`Deploys.read_csv`; a
malformed file raises :class:`~corecensus.errors.MetadataError` naming ``file:line``.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from corecensus.errors import MetadataError
from corecensus.model import ANOMALY_NAMES

__all__ = [
    "CrashTable",
    "Deploys",
    "ExposureTable",
    "anomaly_mask_of",
    "encode",
    "parse_time_us",
]

# The crash table stores anomalies as a bit mask; more than 16 names would need a wider dtype.
assert len(ANOMALY_NAMES) <= 16

_ANOMALY_BIT = {name: 1 << i for i, name in enumerate(ANOMALY_NAMES)}

I32 = NDArray[np.int32]
I64 = NDArray[np.int64]


def anomaly_mask_of(names: Iterable[str]) -> int:
    """The bit mask (bit *i* = ``ANOMALY_NAMES[i]``) of anomaly names; unknown names are errors."""
    mask = 0
    for name in names:
        try:
            mask |= _ANOMALY_BIT[name]
        except KeyError:
            raise MetadataError(
                f"unknown anomaly {name!r} (known: {', '.join(ANOMALY_NAMES)})"
            ) from None
    return mask


def encode(values: Sequence[str | None]) -> tuple[I32, tuple[str, ...]]:
    """Codes and a sorted vocabulary for a column of strings; ``None`` and ``""`` become ``-1``."""
    vocab = tuple(sorted({v for v in values if v}))
    index = {v: i for i, v in enumerate(vocab)}
    codes = np.fromiter((index[v] if v else -1 for v in values), dtype=np.int32, count=len(values))
    return codes, vocab


def parse_time_us(text: str) -> int:
    """ISO-8601 text to microseconds since the epoch; a time without a zone is taken as UTC."""
    stamp = datetime.fromisoformat(text.strip())
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    delta = stamp - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _codes(name: str, values: Any, vocab: Sequence[str], *, allow_unknown: bool = True) -> I32:
    """Validate a code column against its vocabulary (no copy when already ``int32``)."""
    arr = np.asarray(values)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise MetadataError(f"column {name!r} must be a 1-D integer array, got {arr.dtype}")
    arr = arr.astype(np.int32, copy=False)
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        floor = -1 if allow_unknown else 0
        if lo < floor or hi >= len(vocab):
            raise MetadataError(
                f"column {name!r} has codes in [{lo}, {hi}] outside [{floor}, {len(vocab) - 1}]"
            )
    return arr


def _same_length(columns: Mapping[str, NDArray[Any]]) -> int:
    lengths = {k: len(v) for k, v in columns.items()}
    if len(set(lengths.values())) > 1:
        raise MetadataError(f"columns differ in length: {lengths}")
    return next(iter(lengths.values()), 0)


@dataclass(frozen=True, slots=True, eq=False)
class CrashTable:
    """One row per crash.

    ``host`` and ``population`` are codes into ``hosts`` and ``populations`` (never unknown: the
    signature layer gives every crash a population key). ``cpu`` is the logical CPU the crashing
    thread last ran on, ``-1`` if unknown. ``anomaly_mask`` bit *i* is set when anomaly
    ``ANOMALY_NAMES[i]`` was found. ``host_cpus`` optionally gives each host's number of logical
    CPUs (indexed by host code, ``0`` unknown); without it the CPU count is inferred (see
    :mod:`corecensus.epidemiology.concentration`). ``crash_id`` optionally names each crash so
    findings can cite the crashes they rest on.
    """

    time_us: I64
    host: I32
    cpu: I32
    cpu_model: I32
    microcode: I32
    kernel: I32
    service: I32
    version: I32
    population: I32
    anomaly_mask: NDArray[np.uint16]
    hosts: tuple[str, ...]
    populations: tuple[str, ...]
    cpu_models: tuple[str, ...] = ()
    microcodes: tuple[str, ...] = ()
    kernels: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    versions: tuple[str, ...] = ()
    crash_id: NDArray[Any] | None = None
    host_cpus: I32 | None = None

    def __len__(self) -> int:
        return len(self.time_us)

    @classmethod
    def from_arrays(
        cls,
        *,
        time_us: Any,
        host: Any,
        population: Any,
        hosts: Sequence[str],
        populations: Sequence[str],
        cpu: Any = None,
        cpu_model: Any = None,
        microcode: Any = None,
        kernel: Any = None,
        service: Any = None,
        version: Any = None,
        anomaly_mask: Any = None,
        cpu_models: Sequence[str] = (),
        microcodes: Sequence[str] = (),
        kernels: Sequence[str] = (),
        services: Sequence[str] = (),
        versions: Sequence[str] = (),
        crash_id: Any = None,
        host_cpus: Any = None,
    ) -> CrashTable:
        """Build from code arrays; a missing categorical column means "all unknown" (``-1``)."""
        t = np.asarray(time_us)
        if t.ndim != 1 or not np.issubdtype(t.dtype, np.integer):
            raise MetadataError(f"column 'time_us' must be a 1-D integer array, got {t.dtype}")
        n = len(t)

        def opt(name: str, values: Any, vocab: Sequence[str]) -> I32:
            if values is None:
                return np.full(n, -1, dtype=np.int32)
            return _codes(name, values, vocab)

        mask = np.zeros(n, np.uint16) if anomaly_mask is None else np.asarray(anomaly_mask)
        if mask.ndim != 1 or not np.issubdtype(mask.dtype, np.integer):
            raise MetadataError("column 'anomaly_mask' must be a 1-D integer array")
        if mask.size and (int(mask.min()) < 0 or int(mask.max()) >= 1 << len(ANOMALY_NAMES)):
            raise MetadataError("column 'anomaly_mask' has bits beyond ANOMALY_NAMES")
        cpu_arr = np.full(n, -1, np.int32) if cpu is None else np.asarray(cpu)
        if cpu_arr.ndim != 1 or not np.issubdtype(cpu_arr.dtype, np.integer):
            raise MetadataError("column 'cpu' must be a 1-D integer array")
        if cpu_arr.size and int(cpu_arr.min()) < -1:
            raise MetadataError("column 'cpu' has values below -1")
        columns: dict[str, NDArray[Any]] = {
            "time_us": t.astype(np.int64, copy=False),
            "host": _codes("host", host, hosts, allow_unknown=False),
            "population": _codes("population", population, populations, allow_unknown=False),
            "cpu": cpu_arr.astype(np.int32, copy=False),
            "cpu_model": opt("cpu_model", cpu_model, cpu_models),
            "microcode": opt("microcode", microcode, microcodes),
            "kernel": opt("kernel", kernel, kernels),
            "service": opt("service", service, services),
            "version": opt("version", version, versions),
            "anomaly_mask": mask.astype(np.uint16, copy=False),
        }
        ids: NDArray[Any] | None = None
        if crash_id is not None:
            ids = np.asarray(crash_id)
            columns["crash_id"] = ids
        _same_length(columns)
        hc: I32 | None = None
        if host_cpus is not None:
            hc = np.asarray(host_cpus)
            if hc.shape != (len(hosts),) or not np.issubdtype(hc.dtype, np.integer):
                raise MetadataError("host_cpus must be an integer array with one entry per host")
            if hc.size and int(hc.min()) < 0:
                raise MetadataError("host_cpus must be non-negative (0 = unknown)")
            hc = hc.astype(np.int32, copy=False)
        return cls(
            time_us=columns["time_us"],
            host=columns["host"],
            cpu=columns["cpu"],
            cpu_model=columns["cpu_model"],
            microcode=columns["microcode"],
            kernel=columns["kernel"],
            service=columns["service"],
            version=columns["version"],
            population=columns["population"],
            anomaly_mask=columns["anomaly_mask"],
            hosts=tuple(hosts),
            populations=tuple(populations),
            cpu_models=tuple(cpu_models),
            microcodes=tuple(microcodes),
            kernels=tuple(kernels),
            services=tuple(services),
            versions=tuple(versions),
            crash_id=ids,
            host_cpus=hc,
        )

    @classmethod
    def from_rows(
        cls, rows: Sequence[Mapping[str, Any]], *, host_cpus: Mapping[str, int] | None = None
    ) -> CrashTable:
        """Build from dicts, one per crash (for small data and tests).

        Keys: ``host`` and ``population`` (required); ``time_us`` (int) or ``time`` (ISO-8601
        text or :class:`datetime`); optional ``cpu`` (int), ``cpu_model``, ``microcode``,
        ``kernel``, ``service``, ``version`` (text), ``anomalies`` (names) and ``crash_id``.
        ``host_cpus`` maps host name to its number of logical CPUs.
        """
        times: list[int] = []
        for i, row in enumerate(rows):
            for key in ("host", "population"):
                if not row.get(key):
                    raise MetadataError(f"crash row {i}: missing {key!r}")
            times.append(_row_time(row, i))

        def column(key: str) -> list[str | None]:
            return [None if r.get(key) is None else str(r[key]) for r in rows]

        host, hosts = encode(column("host"))
        population, populations = encode(column("population"))
        cols = {k: encode(column(k)) for k in ("cpu_model", "microcode", "kernel")}
        cols |= {k: encode(column(k)) for k in ("service", "version")}
        masks: list[int] = []
        for i, r in enumerate(rows):
            try:
                masks.append(anomaly_mask_of(r.get("anomalies", ())))
            except MetadataError as exc:
                raise MetadataError(f"crash row {i}: {exc}") from None
        cpus = [-1 if r.get("cpu") is None else int(r["cpu"]) for r in rows]
        ids = None
        if any(r.get("crash_id") is not None for r in rows):
            ids = np.array([str(r.get("crash_id", "")) for r in rows], dtype=object)
        hc = None
        if host_cpus is not None:
            hc = np.array([int(host_cpus.get(h, 0)) for h in hosts], dtype=np.int32)
        return cls.from_arrays(
            time_us=np.array(times, dtype=np.int64),
            host=host,
            population=population,
            hosts=hosts,
            populations=populations,
            cpu=np.array(cpus, dtype=np.int32),
            cpu_model=cols["cpu_model"][0],
            cpu_models=cols["cpu_model"][1],
            microcode=cols["microcode"][0],
            microcodes=cols["microcode"][1],
            kernel=cols["kernel"][0],
            kernels=cols["kernel"][1],
            service=cols["service"][0],
            services=cols["service"][1],
            version=cols["version"][0],
            versions=cols["version"][1],
            anomaly_mask=np.array(masks, dtype=np.uint16),
            crash_id=ids,
            host_cpus=hc,
        )


def _row_time(row: Mapping[str, Any], i: int) -> int:
    if row.get("time_us") is not None:
        return int(row["time_us"])
    value = row.get("time")
    if isinstance(value, datetime):
        return parse_time_us(value.isoformat())
    if isinstance(value, str):
        try:
            return parse_time_us(value)
        except ValueError:
            raise MetadataError(f"crash row {i}: bad time {value!r}") from None
    raise MetadataError(f"crash row {i}: missing 'time_us' or 'time'")


@dataclass(frozen=True, slots=True, eq=False)
class ExposureTable:
    """One row per interval in which a host ran one version of one service.

    ``hours`` is the row's exposure in exposure-hours: the interval's length in hours times the
    number of processes (``processes`` column, default 1 — an optional extension of the
    ``exposure.csv`` contract; unknown columns are ignored, as sidecar fields are).
    """

    host: I32
    start_us: I64
    end_us: I64
    service: I32
    version: I32
    cpu_model: I32
    hours: NDArray[np.float64]
    hosts: tuple[str, ...]
    services: tuple[str, ...] = ()
    versions: tuple[str, ...] = ()
    cpu_models: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.host)

    @classmethod
    def from_arrays(
        cls,
        *,
        host: Any,
        start_us: Any,
        end_us: Any,
        hosts: Sequence[str],
        service: Any = None,
        version: Any = None,
        cpu_model: Any = None,
        hours: Any = None,
        services: Sequence[str] = (),
        versions: Sequence[str] = (),
        cpu_models: Sequence[str] = (),
    ) -> ExposureTable:
        """Build from arrays; ``hours`` defaults to the interval lengths (one process)."""
        start = np.asarray(start_us, dtype=np.int64)
        end = np.asarray(end_us, dtype=np.int64)
        n = len(start)

        def opt(name: str, values: Any, vocab: Sequence[str]) -> I32:
            if values is None:
                return np.full(n, -1, dtype=np.int32)
            return _codes(name, values, vocab)

        if hours is None:
            hrs = (end - start).astype(np.float64) / 3.6e9
        else:
            hrs = np.asarray(hours, dtype=np.float64)
        columns: dict[str, NDArray[Any]] = {
            "host": _codes("host", host, hosts, allow_unknown=False),
            "start_us": start,
            "end_us": end,
            "service": opt("service", service, services),
            "version": opt("version", version, versions),
            "cpu_model": opt("cpu_model", cpu_model, cpu_models),
            "hours": hrs,
        }
        _same_length(columns)
        bad = np.flatnonzero((end < start) | ~np.isfinite(hrs) | (hrs < 0))
        if bad.size:
            raise MetadataError(f"exposure row {int(bad[0])}: end before start or bad hours")
        return cls(
            host=columns["host"],
            start_us=start,
            end_us=end,
            service=columns["service"],
            version=columns["version"],
            cpu_model=columns["cpu_model"],
            hours=hrs,
            hosts=tuple(hosts),
            services=tuple(services),
            versions=tuple(versions),
            cpu_models=tuple(cpu_models),
        )

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> ExposureTable:
        """Build from dicts with the ``exposure.csv`` keys (times as ISO text, µs or datetime)."""
        return _exposure_from_text_rows(
            [(i, {k: _as_text(v) for k, v in r.items()}) for i, r in enumerate(rows)], "row"
        )

    @classmethod
    def read_csv(cls, source: str | os.PathLike[str] | IO[str]) -> ExposureTable:
        """Read ``exposure.csv``: ``host,start,end,service,version,cpu_model[,processes]``."""
        name, rows = _read_csv(
            source, required=("host", "start", "end", "service", "version", "cpu_model")
        )
        return _exposure_from_text_rows(rows, name)


@dataclass(frozen=True, slots=True, eq=False)
class Deploys:
    """One row per deploy: at ``time_us`` version ``version`` of ``service`` started rolling out."""

    time_us: I64
    service: I32
    version: I32
    services: tuple[str, ...] = ()
    versions: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.time_us)

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> Deploys:
        """Build from dicts with keys ``time`` (ISO text, µs or datetime), ``service`` and
        ``version``."""
        return _deploys_from_text_rows(
            [(i, {k: _as_text(v) for k, v in r.items()}) for i, r in enumerate(rows)], "row"
        )

    @classmethod
    def read_csv(cls, source: str | os.PathLike[str] | IO[str]) -> Deploys:
        """Read ``deploys.csv``: ``time,service,version``."""
        name, rows = _read_csv(source, required=("time", "service", "version"))
        return _deploys_from_text_rows(rows, name)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        # An integer time is taken as µs since the epoch.
        return datetime.fromtimestamp(int(value) / 1e6, tz=UTC).isoformat()
    return str(value)


def _read_csv(
    source: str | os.PathLike[str] | IO[str], *, required: Sequence[str]
) -> tuple[str, list[tuple[int, dict[str, str]]]]:
    """Rows of a CSV file as (line number, dict); checks the header and each row's fields."""
    if isinstance(source, str | os.PathLike):
        name = os.fspath(source)
        try:
            with open(name, newline="", encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise MetadataError(f"{name}: cannot read: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise MetadataError(f"{name}: not UTF-8 text") from None
        stream: IO[str] = io.StringIO(text, newline="")
    else:
        name = str(getattr(source, "name", "<stream>"))
        stream = source
    reader = csv.reader(stream)
    try:
        header = next(reader)
    except StopIteration:
        raise MetadataError(f"{name}:1: empty file, expected a header") from None
    except csv.Error as exc:
        raise MetadataError(f"{name}:1: {exc}") from None
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    if missing:
        raise MetadataError(f"{name}:1: header lacks column(s) {', '.join(missing)}")
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        for fields in reader:
            line = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != len(header):
                raise MetadataError(
                    f"{name}:{line}: {len(fields)} fields, header has {len(header)}"
                )
            rows.append((line, dict(zip(header, (f.strip() for f in fields), strict=True))))
    except csv.Error as exc:
        raise MetadataError(f"{name}:{reader.line_num}: {exc}") from None
    return name, rows


class _TimeCache:
    """Parse each distinct time text once (exposure files repeat the same boundaries a lot)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cache: dict[str, int] = {}

    def __call__(self, text: str, line: int, column: str) -> int:
        value = self.cache.get(text)
        if value is None:
            if not text:
                raise MetadataError(f"{self.name}:{line}: empty {column!r}")
            try:
                value = parse_time_us(text)
            except ValueError:
                raise MetadataError(
                    f"{self.name}:{line}: {column!r} is not an ISO-8601 time: {text!r}"
                ) from None
            self.cache[text] = value
        return value


def _exposure_from_text_rows(
    rows: Sequence[tuple[int, dict[str, str]]], name: str
) -> ExposureTable:
    parse = _TimeCache(name)
    host: list[str | None] = []
    start: list[int] = []
    end: list[int] = []
    procs: list[float] = []
    cats: dict[str, list[str | None]] = {"service": [], "version": [], "cpu_model": []}
    for line, row in rows:
        h = row.get("host", "")
        if not h:
            raise MetadataError(f"{name}:{line}: empty 'host'")
        s = parse(row.get("start", ""), line, "start")
        e = parse(row.get("end", ""), line, "end")
        if e < s:
            raise MetadataError(f"{name}:{line}: 'end' is before 'start'")
        p_text = row.get("processes", "")
        p = 1.0
        if p_text:
            try:
                p = float(p_text)
            except ValueError:
                raise MetadataError(f"{name}:{line}: 'processes' is not a number") from None
            if not np.isfinite(p) or p < 0:
                raise MetadataError(f"{name}:{line}: 'processes' must be >= 0")
        host.append(h)
        start.append(s)
        end.append(e)
        procs.append(p)
        for key, values in cats.items():
            values.append(row.get(key) or None)
    host_codes, hosts = encode(host)
    enc = {k: encode(v) for k, v in cats.items()}
    s_arr = np.array(start, dtype=np.int64)
    e_arr = np.array(end, dtype=np.int64)
    return ExposureTable.from_arrays(
        host=host_codes,
        hosts=hosts,
        start_us=s_arr,
        end_us=e_arr,
        hours=(e_arr - s_arr) / 3.6e9 * np.array(procs, dtype=np.float64),
        service=enc["service"][0],
        services=enc["service"][1],
        version=enc["version"][0],
        versions=enc["version"][1],
        cpu_model=enc["cpu_model"][0],
        cpu_models=enc["cpu_model"][1],
    )


def _deploys_from_text_rows(rows: Sequence[tuple[int, dict[str, str]]], name: str) -> Deploys:
    parse = _TimeCache(name)
    times: list[int] = []
    services: list[str | None] = []
    versions: list[str | None] = []
    for line, row in rows:
        times.append(parse(row.get("time", ""), line, "time"))
        version = row.get("version", "")
        if not version:
            raise MetadataError(f"{name}:{line}: empty 'version'")
        services.append(row.get("service") or None)
        versions.append(version)
    svc, svc_vocab = encode(services)
    ver, ver_vocab = encode(versions)
    return Deploys(
        time_us=np.array(times, dtype=np.int64),
        service=svc,
        version=ver,
        services=svc_vocab,
        versions=ver_vocab,
    )
