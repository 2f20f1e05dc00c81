"""Columnar inputs of the epidemiology: crashes, exposure and deploys.

Each table is a frozen dataclass of equal-length NumPy arrays; a categorical column is a
:class:`~corecensus.epidemiology.categorical.Categorical` (``int32`` codes into a tuple of
strings, ``-1`` meaning unknown). Columns (rather than a list of records) are what lets
:func:`corecensus.epidemiology.analyze` handle ten million crashes with sort-based group-bys
instead of a Python loop per crash.

Units: times are microseconds since the Unix epoch (``int64``, as systemd-coredump's
``COREDUMP_TIMESTAMP``); exposure is in exposure-hours (process-hours), so rates are crashes per
exposure-hour.

Small data comes in through ``from_rows`` (a list of dicts); big data through ``from_arrays``
(validated, not copied when the dtypes already match). Row-at-a-time input (a CSV file read by
an adapter, :mod:`corecensus.ingest.tables`) goes through :class:`ExposureBuilder` and
:class:`DeploysBuilder`, which keep compact columns rather than the rows and name ``source:line``
in their errors. This package reads no files.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from corecensus.cpulist import canonical_cpu_list, parse_cpu_list
from corecensus.epidemiology.categorical import Categorical, CategoryEncoder
from corecensus.errors import MetadataError
from corecensus.model import ANOMALY_NAMES

__all__ = [
    "Categorical",
    "CrashIdLookup",
    "CrashTable",
    "Deploys",
    "DeploysBuilder",
    "ExposureBuilder",
    "ExposureTable",
    "anomaly_mask_of",
    "parse_time_us",
]

# More processes of one service on one host than this is a data error: Linux's PID_MAX_LIMIT is
# 4,194,304 (include/linux/threads.h), so no host runs more processes at once.
MAX_PROCESSES = float(1 << 22)

# The crash table stores anomalies as a bit mask; more than 16 names would need a wider dtype.
assert len(ANOMALY_NAMES) <= 16

_ANOMALY_BIT = {name: 1 << i for i, name in enumerate(ANOMALY_NAMES)}

I32 = NDArray[np.int32]
I64 = NDArray[np.int64]

# The ids of the given crash rows (table positions), in that order. A source that would rather
# not hold an id per crash (a store of ten million) passes one; analyze calls it once, with
# every row a finding may cite.
CrashIdLookup = Callable[[I64], Sequence[str]]


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


def parse_time_us(text: str) -> int:
    """ISO-8601 text to microseconds since the epoch; a time without a zone is taken as UTC."""
    stamp = datetime.fromisoformat(text.strip())
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    delta = stamp - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _int_column(name: str, values: ArrayLike) -> NDArray[np.integer[Any]]:
    arr = np.asarray(values)
    if arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
        raise MetadataError(f"column {name!r} must be a 1-D integer array, got {arr.dtype}")
    return arr


def _column(name: str, values: Categorical | None, n: int) -> Categorical:
    """A categorical column, or ``n`` unknowns when not given."""
    return Categorical.unknown(n) if values is None else values


def _same_length(columns: Mapping[str, Any]) -> int:
    lengths = {k: len(v) for k, v in columns.items()}
    if len(set(lengths.values())) > 1:
        raise MetadataError(f"columns differ in length: {lengths}")
    return next(iter(lengths.values()), 0)


@dataclass(frozen=True, slots=True, eq=False)
class CrashTable:
    """One row per crash.

    ``host`` and ``population`` are never unknown (the signature layer gives every crash a
    population key). ``cpu`` is the logical CPU the crashing thread last ran on, ``-1`` if
    unknown. ``anomaly_mask`` bit *i* is set when anomaly ``ANOMALY_NAMES[i]`` was found.
    ``host_cpus`` optionally gives each host's number of logical CPUs (indexed by host code,
    ``0`` unknown); without it the CPU count is inferred (see
    :mod:`corecensus.epidemiology.placement`). ``crash_id`` optionally names each crash so
    findings can cite the crashes they rest on: an array, or a :data:`CrashIdLookup`.

    Optional per-crash CPU facts (issue 9): ``cpus_allowed`` the CPUs the crashing process was
    allowed to run on (canonical CPU lists, :mod:`~corecensus.cpulist`; unknown
    ``-1``); ``cpu_core`` the physical core of ``cpu`` (SMT siblings share it; ``-1``
    unknown). ``None``: the column was not given at all.
    """

    time_us: I64
    host: Categorical
    cpu: I32
    cpu_model: Categorical
    microcode: Categorical
    kernel: Categorical
    service: Categorical
    version: Categorical
    population: Categorical
    anomaly_mask: NDArray[np.uint16]
    crash_id: NDArray[np.generic] | CrashIdLookup | None = None
    host_cpus: I32 | None = None
    cpus_allowed: Categorical | None = None
    cpu_core: I32 | None = None

    def __len__(self) -> int:
        return len(self.time_us)

    @classmethod
    def from_arrays(
        cls,
        *,
        time_us: ArrayLike,
        host: Categorical,
        population: Categorical,
        cpu: ArrayLike | None = None,
        cpu_model: Categorical | None = None,
        microcode: Categorical | None = None,
        kernel: Categorical | None = None,
        service: Categorical | None = None,
        version: Categorical | None = None,
        anomaly_mask: ArrayLike | None = None,
        crash_id: ArrayLike | CrashIdLookup | None = None,
        host_cpus: ArrayLike | None = None,
        cpus_allowed: Categorical | None = None,
        cpu_core: ArrayLike | None = None,
    ) -> CrashTable:
        """Build from columns; a missing categorical column means "all unknown" (``-1``)."""
        t = _int_column("time_us", time_us)
        n = len(t)
        mask = np.zeros(n, np.uint16) if anomaly_mask is None else np.asarray(anomaly_mask)
        if mask.ndim != 1 or not (mask.size == 0 or np.issubdtype(mask.dtype, np.integer)):
            raise MetadataError("column 'anomaly_mask' must be a 1-D integer array")
        if mask.size and (int(mask.min()) < 0 or int(mask.max()) >= 1 << len(ANOMALY_NAMES)):
            raise MetadataError("column 'anomaly_mask' has bits beyond ANOMALY_NAMES")
        cpu_arr = np.full(n, -1, np.int32) if cpu is None else _int_column("cpu", cpu)
        if cpu_arr.size and int(cpu_arr.min()) < -1:
            raise MetadataError("column 'cpu' has values below -1")
        columns: dict[str, Any] = {
            "time_us": t,
            "host": host.require_known("host"),
            "population": population.require_known("population"),
            "cpu": cpu_arr,
            "cpu_model": _column("cpu_model", cpu_model, n),
            "microcode": _column("microcode", microcode, n),
            "kernel": _column("kernel", kernel, n),
            "service": _column("service", service, n),
            "version": _column("version", version, n),
            "anomaly_mask": mask,
        }
        ids: NDArray[np.generic] | CrashIdLookup | None = None
        if callable(crash_id):
            ids = crash_id
        elif crash_id is not None:
            ids = columns["crash_id"] = np.asarray(crash_id)
        core: I32 | None = None
        if cpus_allowed is not None:
            try:
                for text in cpus_allowed.vocab:
                    parse_cpu_list(text)
            except MetadataError as exc:
                raise MetadataError(f"column 'cpus_allowed': {exc}") from None
            columns["cpus_allowed"] = cpus_allowed
        if cpu_core is not None:
            core = _int_column("cpu_core", cpu_core).astype(np.int32, copy=False)
            if core.size and int(core.min()) < -1:
                raise MetadataError("column 'cpu_core' has values below -1")
            columns["cpu_core"] = core
        _same_length(columns)
        hc: I32 | None = None
        if host_cpus is not None:
            given = np.asarray(host_cpus)
            if given.shape != (len(host.vocab),) or not (
                given.size == 0 or np.issubdtype(given.dtype, np.integer)
            ):
                raise MetadataError("host_cpus must be an integer array with one entry per host")
            if given.size and int(given.min()) < 0:
                raise MetadataError("host_cpus must be non-negative (0 = unknown)")
            hc = given.astype(np.int32, copy=False)
        return cls(
            time_us=t.astype(np.int64, copy=False),
            host=columns["host"],
            cpu=cpu_arr.astype(np.int32, copy=False),
            cpu_model=columns["cpu_model"],
            microcode=columns["microcode"],
            kernel=columns["kernel"],
            service=columns["service"],
            version=columns["version"],
            population=columns["population"],
            anomaly_mask=mask.astype(np.uint16, copy=False),
            crash_id=ids,
            host_cpus=hc,
            cpus_allowed=cpus_allowed,
            cpu_core=core,
        )

    @classmethod
    def from_rows(
        cls, rows: Sequence[Mapping[str, Any]], *, host_cpus: Mapping[str, int] | None = None
    ) -> CrashTable:
        """Build from dicts, one per crash (for small data and tests).

        Keys: ``host`` and ``population`` (required); ``time_us`` (int) or ``time`` (ISO-8601
        text or :class:`datetime`); optional ``cpu`` (int), ``cpu_model``, ``microcode``,
        ``kernel``, ``service``, ``version`` (text), ``anomalies`` (names), ``crash_id``,
        ``cpus_allowed`` (a CPU list such as ``0-3``), ``cpu_core`` (int) and ``host_cpus``
        (int, the host's online CPUs at that crash). The ``host_cpus`` mapping (host name to
        its logical CPUs) wins over the rows' values.
        """
        times: list[int] = []
        for i, row in enumerate(rows):
            for key in ("host", "population"):
                if not row.get(key):
                    raise MetadataError(f"crash row {i}: missing {key!r}")
            times.append(_row_time(row, i))

        def column(key: str) -> Categorical:
            return Categorical.encode([None if r.get(key) is None else str(r[key]) for r in rows])

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
        host = column("host")
        hc = None
        row_cpus: dict[str, int] = {}
        for r in rows:
            if r.get("host_cpus") is not None:
                name = str(r["host"])
                row_cpus[name] = max(row_cpus.get(name, 0), int(r["host_cpus"]))
        if host_cpus is not None or row_cpus:
            given = {**row_cpus, **(host_cpus or {})}
            hc = np.array([int(given.get(h, 0)) for h in host.vocab], dtype=np.int32)
        allowed = None
        if any(r.get("cpus_allowed") for r in rows):
            try:
                allowed = Categorical.encode(
                    [
                        canonical_cpu_list(str(r["cpus_allowed"]))
                        if r.get("cpus_allowed")
                        else None
                        for r in rows
                    ]
                )
            except MetadataError as exc:
                raise MetadataError(f"crash rows: {exc}") from None
        core = None
        if any(r.get("cpu_core") is not None for r in rows):
            core = np.array(
                [-1 if r.get("cpu_core") is None else int(r["cpu_core"]) for r in rows],
                dtype=np.int32,
            )
        return cls.from_arrays(
            time_us=np.array(times, dtype=np.int64),
            host=host,
            population=column("population"),
            cpu=np.array(cpus, dtype=np.int32),
            cpu_model=column("cpu_model"),
            microcode=column("microcode"),
            kernel=column("kernel"),
            service=column("service"),
            version=column("version"),
            anomaly_mask=np.array(masks, dtype=np.uint16),
            crash_id=ids,
            host_cpus=hc,
            cpus_allowed=allowed,
            cpu_core=core,
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
    ``microcode`` and ``kernel`` (optional columns, ``None`` when no row has them) are what the
    host ran during the interval: the host's own record of its microcode and kernel updates,
    which a flagged host's timeline reads even when the host does not crash again (issue 9).
    """

    host: Categorical
    start_us: I64
    end_us: I64
    service: Categorical
    version: Categorical
    cpu_model: Categorical
    hours: NDArray[np.float64]
    microcode: Categorical | None = None
    kernel: Categorical | None = None

    def __len__(self) -> int:
        return len(self.start_us)

    @classmethod
    def from_arrays(
        cls,
        *,
        host: Categorical,
        start_us: ArrayLike,
        end_us: ArrayLike,
        service: Categorical | None = None,
        version: Categorical | None = None,
        cpu_model: Categorical | None = None,
        hours: ArrayLike | None = None,
        microcode: Categorical | None = None,
        kernel: Categorical | None = None,
    ) -> ExposureTable:
        """Build from columns; ``hours`` defaults to the interval lengths (one process);
        ``microcode`` and ``kernel`` stay ``None`` when not given or unknown on every row."""
        start = np.asarray(start_us, dtype=np.int64)
        end = np.asarray(end_us, dtype=np.int64)
        n = len(start)
        if hours is None:
            hrs = (end - start).astype(np.float64) / 3.6e9
        else:
            hrs = np.asarray(hours, dtype=np.float64)
        columns: dict[str, Any] = {
            "host": host.require_known("host"),
            "start_us": start,
            "end_us": end,
            "service": _column("service", service, n),
            "version": _column("version", version, n),
            "cpu_model": _column("cpu_model", cpu_model, n),
            "hours": hrs,
        }
        for name, given in (("microcode", microcode), ("kernel", kernel)):
            if given is not None and bool((given.codes >= 0).any()):
                columns[name] = _column(name, given, n)
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
            microcode=columns.get("microcode"),
            kernel=columns.get("kernel"),
        )

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> ExposureTable:
        """Build from dicts with the ``exposure.csv`` keys (times as ISO text, µs or datetime)."""
        build = ExposureBuilder("row")
        for i, r in enumerate(rows):
            text = {k: _as_text(v) for k, v in r.items()}
            build.add(
                i,
                host=text.get("host", ""),
                start=text.get("start", ""),
                end=text.get("end", ""),
                service=text.get("service", ""),
                version=text.get("version", ""),
                cpu_model=text.get("cpu_model", ""),
                processes=text.get("processes", ""),
                microcode=text.get("microcode", ""),
                kernel=text.get("kernel", ""),
            )
        return build.finish()


@dataclass(frozen=True, slots=True, eq=False)
class Deploys:
    """One row per deploy: at ``time_us`` version ``version`` of ``service`` started rolling out."""

    time_us: I64
    service: Categorical
    version: Categorical

    def __len__(self) -> int:
        return len(self.time_us)

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> Deploys:
        """Build from dicts with keys ``time`` (ISO text, µs or datetime), ``service`` and
        ``version``."""
        build = DeploysBuilder("row")
        for i, r in enumerate(rows):
            text = {k: _as_text(v) for k, v in r.items()}
            build.add(
                i,
                time=text.get("time", ""),
                service=text.get("service", ""),
                version=text.get("version", ""),
            )
        return build.finish()


def _as_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        # An integer time is taken as µs since the epoch.
        return datetime.fromtimestamp(int(value) / 1e6, tz=UTC).isoformat()
    return str(value)


class _TimeCache:
    """Parse each distinct time text once (exposure files repeat the same boundaries a lot)."""

    __slots__ = ("cache", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.cache: dict[str, int] = {}

    def __call__(self, text: str, line: int, column: str) -> int:
        value = self.cache.get(text)
        if value is None:
            if not text:
                raise MetadataError(f"{self.source}:{line}: empty {column!r}")
            try:
                value = parse_time_us(text)
            except ValueError:
                raise MetadataError(
                    f"{self.source}:{line}: {column!r} is not an ISO-8601 time: {text!r}"
                ) from None
            self.cache[text] = value
        return value


class ExposureBuilder:
    """Exposure rows added one at a time as text (``exposure.csv``'s fields), validated as they
    come, kept as compact columns (about 40 bytes a row, not the row's strings); errors name
    ``source:line``."""

    __slots__ = ("_cats", "_end", "_host", "_procs", "_start", "_time", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._time = _TimeCache(source)
        self._host = CategoryEncoder()
        self._start = array("q")
        self._end = array("q")
        self._procs = array("d")
        self._cats = {
            k: CategoryEncoder() for k in ("service", "version", "cpu_model", "microcode", "kernel")
        }

    def add(
        self,
        line: int,
        *,
        host: str,
        start: str,
        end: str,
        service: str,
        version: str,
        cpu_model: str,
        processes: str = "",
        microcode: str = "",
        kernel: str = "",
    ) -> None:
        """One row; ``processes`` empty means 1, ``microcode`` and ``kernel`` empty unknown."""
        name = self.source
        if not host:
            raise MetadataError(f"{name}:{line}: empty 'host'")
        s = self._time(start, line, "start")
        e = self._time(end, line, "end")
        if e < s:
            raise MetadataError(f"{name}:{line}: 'end' is before 'start'")
        p = 1.0
        if processes:
            try:
                p = float(processes)
            except ValueError:
                raise MetadataError(f"{name}:{line}: 'processes' is not a number") from None
            if not np.isfinite(p) or p < 0:
                shown = processes if len(processes) <= 60 else processes[:57] + "..."
                raise MetadataError(
                    f"{name}:{line}: 'processes' must be a finite number >= 0, not {shown!r}"
                )
            if p > MAX_PROCESSES:
                # 1e308 processes overflowed the exposure-hours to inf (a numpy warning and a
                # wrong cause downstream, issue 10); no host runs anything like this many.
                raise MetadataError(
                    f"{name}:{line}: 'processes' {processes} is more than {MAX_PROCESSES:.0f} "
                    "on one host"
                )
        self._host.add(host)
        self._start.append(s)
        self._end.append(e)
        self._procs.append(p)
        self._cats["service"].add(service)
        self._cats["version"].add(version)
        self._cats["cpu_model"].add(cpu_model)
        self._cats["microcode"].add(microcode)
        self._cats["kernel"].add(kernel)

    def finish(self) -> ExposureTable:
        s_arr = np.array(self._start, dtype=np.int64)
        e_arr = np.array(self._end, dtype=np.int64)
        return ExposureTable.from_arrays(
            host=self._host.finish(),
            start_us=s_arr,
            end_us=e_arr,
            hours=(e_arr - s_arr) / 3.6e9 * np.array(self._procs, dtype=np.float64),
            service=self._cats["service"].finish(),
            version=self._cats["version"].finish(),
            cpu_model=self._cats["cpu_model"].finish(),
            microcode=self._cats["microcode"].finish(),
            kernel=self._cats["kernel"].finish(),
        )


class DeploysBuilder:
    """Deploy rows added one at a time as text (``deploys.csv``'s fields); errors name
    ``source:line``."""

    __slots__ = ("_service", "_time", "_times", "_version", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self._time = _TimeCache(source)
        self._times = array("q")
        self._service = CategoryEncoder()
        self._version = CategoryEncoder()

    def add(self, line: int, *, time: str, service: str, version: str) -> None:
        t = self._time(time, line, "time")
        if not version:
            raise MetadataError(f"{self.source}:{line}: empty 'version'")
        self._times.append(t)
        self._service.add(service)
        self._version.add(version)

    def finish(self) -> Deploys:
        return Deploys(
            time_us=np.array(self._times, dtype=np.int64),
            service=self._service.finish(),
            version=self._version.finish(),
        )
