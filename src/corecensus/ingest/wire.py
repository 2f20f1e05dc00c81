"""The upload wire format between the agent and the collector (schema version 1).

One HTTP request carries one batch of one kind of record, as a JSON object::

    {"schema_version": 1, "kind": "crashes", "records": [ ... ]}

``kind`` is ``crashes`` (each record is a :class:`corecensus.model.CrashRecord` as
``CrashRecord.to_json()`` writes it, the ``corecensus inspect --json`` object), ``heartbeats``
(each a :class:`HeartbeatRecord`) or ``screenings`` (each a
:class:`corecensus.screening.result.ScreenResult` as ``to_json()`` writes it). The body may be
compressed (``Content-Encoding: gzip`` or ``zstd``). The collector answers with a
:class:`BatchAck`. ``docs/collector.md`` documents the HTTP side (paths, headers, statuses).

Decoding is strict: every field is type- and range-checked, unknown fields of a crash record are
refused, strings, lists and whole records have size limits (:class:`WireLimits`). A bad record
costs only itself: :func:`decode_batch` returns the good records and one :class:`RecordProblem`
(index + reason + detail) per bad one. A batch that is not a batch at all (undecodable body,
wrong schema version, wrong kind, too many records) raises :class:`WireError`.

Every record has an id (crash: ``core_id``; screening: ``screen_id``; heartbeat: a hash of its
content) so a retried batch is stored once, and a host (crash: the ``COREDUMP_HOSTNAME``
metadata field; the others: ``host``), which the collector checks against the hosts the
uploading agent's token may speak for.

This module is shared by the agent and the collector, so it imports neither DuckDB (the store)
nor drgn (the core reader): only the record types and the standard library plus zstandard.
"""

from __future__ import annotations

import enum
import gzip
import hashlib
import json
import math
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

import zstandard

from corecensus.errors import CorecensusError, ScreeningError
from corecensus.ingest.fields import DROPPED_FIELDS, HOSTNAME, MAX_VALUE_CHARS, check_fields
from corecensus.model import ANOMALY_NAMES, CrashRecord, FrameTrust, ParseStatus, ProblemKind
from corecensus.screening.result import ScreenResult

__all__ = [
    "AGENT_HEADER",
    "CONTENT_TYPE",
    "DEADLINE_HEADER",
    "PATHS",
    "SCHEMA_VERSION",
    "BatchAck",
    "ContentEncoding",
    "DecodedBatch",
    "HeartbeatRecord",
    "RecordKind",
    "RecordProblem",
    "RejectReason",
    "WireError",
    "WireErrorReason",
    "WireLimits",
    "WireRecord",
    "check_any_json",
    "compress",
    "decode_batch",
    "decode_body",
    "decompress",
    "encode_batch",
    "valid_host",
    "valid_id",
]

SCHEMA_VERSION: Final = 1
CONTENT_TYPE: Final = "application/json"
# How long the client will wait for this request, in milliseconds from when it sent it (a
# duration, not a time of day, so clock skew between host and collector does not matter). The
# collector sheds a request at the door (503 + Retry-After) when the work queued ahead of it could
# not be committed within that time (DESIGN.md, outage lesson 3).
DEADLINE_HEADER: Final = "X-Corecensus-Deadline-Ms"
# The agent's name and version, for the collector's logs only (never used to authorize).
AGENT_HEADER: Final = "X-Corecensus-Agent"


class RecordKind(enum.StrEnum):
    """What a batch holds; the value is the ``kind`` field and the last part of its path."""

    CRASHES = "crashes"
    HEARTBEATS = "heartbeats"
    SCREENINGS = "screenings"


PATHS: Final[Mapping[RecordKind, str]] = {kind: f"/v1/{kind.value}" for kind in RecordKind}


class ContentEncoding(enum.StrEnum):
    IDENTITY = "identity"
    GZIP = "gzip"
    ZSTD = "zstd"


class WireErrorReason(enum.StrEnum):
    """Why a whole request body was refused (the collector maps each to an HTTP status)."""

    UNSUPPORTED_ENCODING = "unsupported_encoding"
    CORRUPT_BODY = "corrupt_body"
    BODY_TOO_LARGE = "body_too_large"
    NOT_JSON = "not_json"
    BAD_ENVELOPE = "bad_envelope"
    SCHEMA_VERSION = "schema_version"
    WRONG_KIND = "wrong_kind"
    TOO_MANY_RECORDS = "too_many_records"


class WireError(CorecensusError):
    """A request body that is not a batch at all; ``reason`` says which way."""

    def __init__(self, reason: WireErrorReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class RejectReason(enum.StrEnum):
    """Why one record of a batch was refused (the others are still stored)."""

    SCHEMA = "schema"  # a missing, unknown or mistyped field, or a value out of range
    TOO_LARGE = "too_large"  # the record, or one of its strings or lists, is over a limit
    HOST = "host"  # no valid host name in the record


@dataclass(frozen=True, slots=True)
class WireLimits:
    """Size limits of the wire format (bytes, characters, items).

    ``max_body_bytes`` bounds the request body as sent (possibly compressed) and
    ``max_decoded_bytes`` what it decompresses to (a compression bomb stops there). A record's
    size is estimated while it is checked (characters of its strings and keys plus 8 per other
    value), so no record is serialized twice.
    """

    max_body_bytes: int = 8 * 1024 * 1024
    max_decoded_bytes: int = 32 * 1024 * 1024
    max_records: int = 2000
    max_record_bytes: int = 1024 * 1024
    max_string_chars: int = MAX_VALUE_CHARS
    max_list_items: int = 8192
    max_depth: int = 12


@dataclass(frozen=True, slots=True)
class HeartbeatRecord:
    """An agent's report that ``host`` ran ``service`` at ``version`` at ``time_us``
    (microseconds since the Unix epoch); one per running service per heartbeat period.

    The agent's own heartbeat (service ``corecensus-agent``) also says how long the host and the
    agent have been up (``uptime_s``, ``agent_uptime_s``, whole seconds) and how many records the
    agent lost since its last acknowledged report, by reason (``lost``; ``{}``: none). These
    three are optional and left out when unknown, so wire schema 1 is unchanged for service
    heartbeats and for older agents, whose records still decode. So are ``microcode`` and
    ``kernel``, what the host runs (``/proc/cpuinfo``, ``/proc/sys/kernel/osrelease``): a
    flagged host's timeline sees a microcode or kernel update in them even when the host never
    crashes again (issue 9)."""

    host: str
    time_us: int
    service: str
    version: str
    uptime_s: int | None = None
    agent_uptime_s: int | None = None
    lost: Mapping[str, int] | None = None
    microcode: str | None = None
    kernel: str | None = None

    @property
    def record_id(self) -> str:
        """Content hash of who ran what when: the same heartbeat sent twice is the same record
        (a retry may carry newer loss counts; the first stored is kept)."""
        key = json.dumps([self.host, self.time_us, self.service, self.version])
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "host": self.host,
            "time_us": self.time_us,
            "service": self.service,
            "version": self.version,
        }
        if self.uptime_s is not None:
            out["uptime_s"] = self.uptime_s
        if self.agent_uptime_s is not None:
            out["agent_uptime_s"] = self.agent_uptime_s
        if self.lost is not None:
            out["lost"] = dict(sorted(self.lost.items()))
        if self.microcode is not None:
            out["microcode"] = self.microcode
        if self.kernel is not None:
            out["kernel"] = self.kernel
        return out


T = TypeVar("T", CrashRecord, HeartbeatRecord, ScreenResult)


@dataclass(frozen=True, slots=True)
class WireRecord(Generic[T]):
    """One decoded record with its place in the batch, its host and its id."""

    index: int
    host: str
    record_id: str
    value: T


@dataclass(frozen=True, slots=True)
class RecordProblem:
    """Record ``index`` of a batch (0-based) was refused, and why."""

    index: int
    reason: RejectReason
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "reason": str(self.reason), "detail": self.detail}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> RecordProblem:
        return cls(int(obj["index"]), RejectReason(obj["reason"]), str(obj.get("detail", "")))


@dataclass(frozen=True, slots=True)
class DecodedBatch(Generic[T]):
    kind: RecordKind
    records: tuple[WireRecord[T], ...]
    problems: tuple[RecordProblem, ...]
    size: int  # records in the batch, good and bad


@dataclass(frozen=True, slots=True)
class BatchAck:
    """The collector's answer to a batch (HTTP 200, or 422 when ``rejected`` is not empty).

    Either way the batch is finished: its ``accepted`` records (all but the rejected ones) are
    durably stored -- committed now, or already there from an earlier copy of the same record --
    and the rejected ones will never be accepted as they are, so the agent drops them (counting
    each by reason) instead of retrying. How many were new is not said per batch: many batches
    share one commit; the collector's metrics count stored and duplicate records.
    """

    accepted: int
    rejected: tuple[RecordProblem, ...] = ()
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "accepted": self.accepted,
            "rejected": [p.to_json() for p in self.rejected],
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> BatchAck:
        try:
            return cls(
                accepted=int(obj["accepted"]),
                rejected=tuple(RecordProblem.from_json(p) for p in obj.get("rejected", ())),
                schema_version=int(obj.get("schema_version", SCHEMA_VERSION)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise WireError(WireErrorReason.BAD_ENVELOPE, f"malformed ack: {exc!r}") from exc


# --- bodies ---------------------------------------------------------------------------------


def compress(body: bytes, encoding: ContentEncoding) -> bytes:
    """``body`` encoded for ``Content-Encoding: encoding``."""
    if encoding is ContentEncoding.GZIP:
        return gzip.compress(body, compresslevel=6, mtime=0)
    if encoding is ContentEncoding.ZSTD:
        return zstandard.ZstdCompressor(level=3).compress(body)
    return body


def _bounded(chunks: Callable[[int], bytes], limit: int) -> bytes:
    out = bytearray()
    while True:
        chunk = chunks(65536)
        if not chunk:
            return bytes(out)
        out += chunk
        if len(out) > limit:
            raise WireError(
                WireErrorReason.BODY_TOO_LARGE, f"decompresses to more than {limit} bytes"
            )


def decompress(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The body as sent under ``Content-Encoding`` (None or empty: identity), decompressed to at
    most ``limit`` bytes; a bomb stops at the limit instead of filling memory."""
    name = (content_encoding or "identity").strip().lower()
    try:
        encoding = ContentEncoding(name)
    except ValueError:
        raise WireError(
            WireErrorReason.UNSUPPORTED_ENCODING,
            f"Content-Encoding {name[:40]!r} (use identity, gzip or zstd)",
        ) from None
    if encoding is ContentEncoding.IDENTITY:
        if len(body) > limit:
            raise WireError(WireErrorReason.BODY_TOO_LARGE, f"more than {limit} bytes")
        return body
    try:
        if encoding is ContentEncoding.GZIP:
            # wbits 16 + MAX_WBITS: a gzip header and trailer (RFC 1952), checked.
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = bytearray()
            data = body
            while data:
                out += inflater.decompress(data, 65536)
                if len(out) > limit:
                    raise WireError(
                        WireErrorReason.BODY_TOO_LARGE, f"decompresses to more than {limit} bytes"
                    )
                data = inflater.unconsumed_tail
            out += inflater.flush()
            if not inflater.eof or inflater.unused_data:
                raise WireError(WireErrorReason.CORRUPT_BODY, "gzip stream truncated or trailed")
            if len(out) > limit:
                raise WireError(
                    WireErrorReason.BODY_TOO_LARGE, f"decompresses to more than {limit} bytes"
                )
            return bytes(out)
        one = _zstd_in_one_pass(body, limit)
        if one is not None:
            return one
        return _zstd_in_two_passes(body, limit)
    except (zlib.error, zstandard.ZstdError) as exc:
        raise WireError(WireErrorReason.CORRUPT_BODY, f"{encoding} body: {exc}") from exc


def _zstd_in_one_pass(body: bytes, limit: int) -> bytes | None:
    """``body`` decompressed in one pass when its frame header says its size and that is
    within ``limit`` (zstd's one-shot decompression writes into a buffer of that size and fails
    on a frame whose content is not that size), and the body is that one frame, whole; else
    None, and :func:`_zstd_in_two_passes` decides, and words what is wrong. A zstd compressor
    writes the size unless told not to; the two passes took 111 us for the collector bench's
    20-record body, this 25 us."""
    try:
        size = zstandard.get_frame_parameters(body).content_size
    except zstandard.ZstdError:
        return None
    # (0: not written, or an empty content.)
    if not 0 < size <= limit:
        return None
    try:
        plain: bytes = zstandard.ZstdDecompressor().decompress(body, allow_extra_data=False)
    except zstandard.ZstdError:
        return None
    return plain


def _zstd_in_two_passes(body: bytes, limit: int) -> bytes:
    # The stream reader bounds the output (a bomb stops at the limit) but takes a truncated
    # frame for a short one; a second pass, whose output is now known to be bounded, checks
    # that the one frame ends where the body does.
    dctx = zstandard.ZstdDecompressor()
    with dctx.stream_reader(body, read_across_frames=False) as reader:
        _bounded(reader.read, limit)
    whole = dctx.decompressobj()
    plain: bytes = whole.decompress(body)
    if not whole.eof or whole.unused_data:
        raise WireError(WireErrorReason.CORRUPT_BODY, "zstd stream truncated or trailed")
    return plain


def encode_batch(
    kind: RecordKind,
    records: Sequence[CrashRecord | HeartbeatRecord | ScreenResult],
) -> bytes:
    """The JSON body of one batch (uncompressed; see :func:`compress`)."""
    payload = {
        "schema_version": SCHEMA_VERSION,
        "kind": str(kind),
        "records": [r.to_json() for r in records],
    }
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def decode_body(body: bytes, limits: WireLimits = WireLimits()) -> Any:
    """Parse a decompressed body as JSON (a WireError if it is not UTF-8 JSON)."""
    if len(body) > limits.max_decoded_bytes:
        raise WireError(
            WireErrorReason.BODY_TOO_LARGE, f"more than {limits.max_decoded_bytes} bytes"
        )
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise WireError(WireErrorReason.NOT_JSON, f"body is not UTF-8 ({exc.reason})") from exc
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise WireError(WireErrorReason.NOT_JSON, f"body is not JSON ({_short(exc)})") from exc


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259); Python's parser accepts them by default.
    raise ValueError(f"{name} is not JSON")


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 160 else text[:157] + "..."


# --- strict record checks ---------------------------------------------------------------------


class _Bad(Exception):
    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


_U64 = 2**64
_I64 = 2**63
_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252})")
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def valid_host(name: str) -> bool:
    """A host name the wire accepts: letters, digits, ``.``, ``_`` and ``-``, at most 253."""
    return bool(_HOST_RE.fullmatch(name))


def valid_id(text: str) -> bool:
    """A record id the wire accepts (``core_id``, ``screen_id``)."""
    return bool(_ID_RE.fullmatch(text))


def check_any_json(value: Any, limits: WireLimits) -> bool:
    """Whether free-form JSON (anomaly data) is within the checker's depth and size limits."""
    try:
        _Checker(limits).any_json(value, "data")
    except (_Bad, RecursionError):
        return False
    return True


class _Checker:
    """Walks one record, checking types and limits and adding up its estimated size."""

    def __init__(self, limits: WireLimits) -> None:
        self.limits = limits
        self.size = 0

    def _grow(self, n: int, where: str) -> None:
        self.size += n
        if self.size > self.limits.max_record_bytes:
            raise _Bad(
                RejectReason.TOO_LARGE,
                f"record larger than {self.limits.max_record_bytes} bytes (at {where})",
            )

    def string(self, v: Any, where: str) -> str:
        if not isinstance(v, str):
            raise _Bad(RejectReason.SCHEMA, f"{where}: expected a string, got {_type(v)}")
        if len(v) > self.limits.max_string_chars:
            raise _Bad(
                RejectReason.TOO_LARGE,
                f"{where}: {len(v)} characters (limit {self.limits.max_string_chars})",
            )
        self._grow(len(v) + 2, where)
        return v

    def opt_string(self, v: Any, where: str) -> str | None:
        return None if v is None else self.string(v, where)

    def integer(self, v: Any, where: str, lo: int, hi: int) -> int:
        # bool is an int in Python, but true is not a number on the wire.
        if not isinstance(v, int) or isinstance(v, bool):
            raise _Bad(RejectReason.SCHEMA, f"{where}: expected an integer, got {_type(v)}")
        if not lo <= v < hi:
            raise _Bad(RejectReason.SCHEMA, f"{where}: {v} out of range [{lo}, {hi})")
        self._grow(8, where)
        return v

    def opt_integer(self, v: Any, where: str, lo: int, hi: int) -> int | None:
        return None if v is None else self.integer(v, where, lo, hi)

    def boolean(self, v: Any, where: str) -> bool:
        if not isinstance(v, bool):
            raise _Bad(RejectReason.SCHEMA, f"{where}: expected true or false, got {_type(v)}")
        self._grow(5, where)
        return v

    def number(self, v: Any, where: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _Bad(RejectReason.SCHEMA, f"{where}: expected a finite number, got {_type(v)}")
        self._grow(8, where)
        return float(v)

    def array(self, v: Any, where: str) -> list[Any]:
        if not isinstance(v, list):
            raise _Bad(RejectReason.SCHEMA, f"{where}: expected a list, got {_type(v)}")
        if len(v) > self.limits.max_list_items:
            raise _Bad(
                RejectReason.TOO_LARGE,
                f"{where}: {len(v)} items (limit {self.limits.max_list_items})",
            )
        self._grow(2, where)
        return v

    def obj(
        self,
        v: Any,
        where: str,
        required: frozenset[str] = frozenset(),
        allowed: frozenset[str] | None = None,
    ) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise _Bad(RejectReason.SCHEMA, f"{where}: expected an object, got {_type(v)}")
        missing = required - v.keys()
        if missing:
            raise _Bad(RejectReason.SCHEMA, f"{where}: missing {', '.join(sorted(missing))}")
        if allowed is not None:
            unknown = v.keys() - allowed
            if unknown:
                names = ", ".join(repr(k[:40]) for k in sorted(unknown)[:3])
                raise _Bad(RejectReason.SCHEMA, f"{where}: unknown field {names}")
        if len(v) > self.limits.max_list_items:
            raise _Bad(RejectReason.TOO_LARGE, f"{where}: {len(v)} fields")
        self._grow(2 + sum(len(k) + 3 for k in v), where)
        return v

    def any_json(self, v: Any, where: str, depth: int = 0) -> None:
        """Free-form JSON (anomaly data, screen records): only sizes and depth are checked."""
        if depth > self.limits.max_depth:
            raise _Bad(RejectReason.TOO_LARGE, f"{where}: nested deeper than {depth}")
        if isinstance(v, str):
            self.string(v, where)
        elif isinstance(v, dict):
            self.obj(v, where)
            for k, item in v.items():
                self.any_json(item, f"{where}.{k[:40]}", depth + 1)
        elif isinstance(v, list):
            self.array(v, where)
            for i, item in enumerate(v):
                self.any_json(item, f"{where}[{i}]", depth + 1)
        else:
            self._grow(8, where)


_JSON_TYPES: Mapping[type, str] = {
    type(None): "null",
    bool: "boolean",
    int: "integer",
    float: "number",
    str: "string",
    list: "list",
    dict: "object",
}


def _type(v: Any) -> str:
    return _JSON_TYPES.get(type(v), type(v).__name__)


# The fields of CrashRecord.to_json(); anything else in a crash record is refused.
_CRASH_FIELDS = frozenset(
    {
        "core_id", "status", "errors", "problems", "source", "writer", "arch", "pid", "comm", "exe",
        "cmdline", "signal", "signal_name", "si_code", "si_code_name", "fault_address",
        "effective_address", "instruction", "crashed_tid", "threads", "cpu", "registers",
        "modules", "frames", "anomalies", "anomaly_details", "stack_window", "signal_frames",
        "threads_detail", "metadata",
    }
)  # fmt: skip
_CRASH_STRINGS = (
    "source", "writer", "arch", "comm", "exe", "cmdline", "signal_name", "si_code_name",
    "instruction",
)  # fmt: skip
# Signed 32-bit for ids and signal numbers (the store's INTEGER columns), unsigned 64-bit for
# addresses; si_code is negative for user-sent signals (SI_USER is 0, SI_TKILL is -6).
_CRASH_INTS: Mapping[str, tuple[int, int]] = {
    "pid": (0, 2**31),
    "crashed_tid": (0, 2**31),
    "signal": (0, 2**31),
    "si_code": (-(2**31), 2**31),
    "fault_address": (0, _U64),
    "effective_address": (0, _U64),
    "cpu": (0, 2**31),
}
_MODULE_FIELDS = frozenset({"path", "build_id", "base", "end", "file_offset", "executable"})
_FRAME_FIELDS = frozenset({"pc", "function", "module", "offset", "build_id", "recovered", "trust"})
_FRAME_TRUSTS = frozenset(FrameTrust)
_THREAD_FIELDS = frozenset({"tid", "signal", "registers", "frames"})
_WORD_FIELDS = frozenset({"offset", "address", "function", "module", "module_offset", "after_call"})
_SIGFRAME_FIELDS = frozenset(
    {"offset", "interrupted_pc", "function", "function_offset", "module", "module_offset",
     "interrupted_sp", "signal"}
)  # fmt: skip
_ANOMALY_FIELDS = frozenset({"name", "detail", "confidence", "data"})
_PROBLEM_FIELDS = frozenset({"kind", "detail"})
_PROBLEM_KINDS = frozenset(ProblemKind)
_ANOMALIES = frozenset(ANOMALY_NAMES)


def _check_frames(c: _Checker, raw: Any, where: str) -> None:
    for i, raw_f in enumerate(c.array(raw, where)):
        w = f"{where}[{i}]"
        f = c.obj(raw_f, w, frozenset({"pc"}), _FRAME_FIELDS)
        c.integer(f["pc"], f"{w}.pc", 0, _U64)
        for name in ("function", "module", "build_id"):
            c.opt_string(f.get(name), f"{w}.{name}")
        c.opt_integer(f.get("offset"), f"{w}.offset", 0, _U64)
        c.boolean(f.get("recovered", False), f"{w}.recovered")
        trust = c.opt_string(f.get("trust"), f"{w}.trust")
        if trust is not None and trust not in _FRAME_TRUSTS:
            raise _Bad(RejectReason.SCHEMA, f"{w}.trust: unknown frame trust {trust[:40]!r}")


def _check_crash(c: _Checker, raw: Any) -> tuple[str, str, CrashRecord]:
    obj = c.obj(raw, "record", frozenset({"core_id", "status", "metadata"}), _CRASH_FIELDS)
    core_id = c.string(obj["core_id"], "core_id")
    if not _ID_RE.fullmatch(core_id):
        raise _Bad(RejectReason.SCHEMA, "core_id: 1-128 letters, digits, '.', '_', ':' or '-'")
    status = c.string(obj["status"], "status")
    if status not in set(ParseStatus):
        raise _Bad(RejectReason.SCHEMA, f"status: {status[:40]!r} is not ok, partial or unparsed")
    details: list[str] = []
    for i, raw_p in enumerate(c.array(obj.get("problems", []), "problems")):
        w = f"problems[{i}]"
        prob = c.obj(raw_p, w, _PROBLEM_FIELDS, _PROBLEM_FIELDS)
        kind = c.string(prob["kind"], f"{w}.kind")
        if kind not in _PROBLEM_KINDS:
            raise _Bad(RejectReason.SCHEMA, f"{w}.kind: unknown problem kind {kind[:40]!r}")
        details.append(c.string(prob["detail"], f"{w}.detail"))
    if "errors" in obj:
        errors = [
            c.string(e, f"errors[{i}]") for i, e in enumerate(c.array(obj["errors"], "errors"))
        ]
        # ``errors`` is the sentences of ``problems``; a record with only ``errors`` comes from
        # an agent older than problem kinds, and the record type reads it that way.
        if "problems" in obj and errors != details:
            raise _Bad(RejectReason.SCHEMA, "errors: not the details of problems in order")
    for name in _CRASH_STRINGS:
        c.opt_string(obj.get(name), name)
    for name, (lo, hi) in _CRASH_INTS.items():
        c.opt_integer(obj.get(name), name, lo, hi)
    c.integer(obj.get("threads", 0), "threads", 0, 2**31)
    regs = c.obj(obj.get("registers", {}), "registers")
    for name, value in regs.items():
        c.string(name, "registers")
        # Registers are stored unsigned; a vector register does not belong here.
        c.integer(value, f"registers.{name[:40]}", 0, _U64)
    for i, raw_m in enumerate(c.array(obj.get("modules", []), "modules")):
        w = f"modules[{i}]"
        m = c.obj(raw_m, w, frozenset({"path", "base"}), _MODULE_FIELDS)
        c.string(m["path"], f"{w}.path")
        c.opt_string(m.get("build_id"), f"{w}.build_id")
        c.integer(m["base"], f"{w}.base", 0, _U64)
        c.integer(m.get("end", m["base"]), f"{w}.end", 0, _U64)
        c.integer(m.get("file_offset", 0), f"{w}.file_offset", 0, _U64)
        c.boolean(m.get("executable", False), f"{w}.executable")
    _check_frames(c, obj.get("frames", []), "frames")
    for i, raw_t in enumerate(c.array(obj.get("threads_detail", []), "threads_detail")):
        w = f"threads_detail[{i}]"
        t = c.obj(raw_t, w, frozenset({"tid"}), _THREAD_FIELDS)
        c.integer(t["tid"], f"{w}.tid", 0, 2**31)
        c.opt_integer(t.get("signal"), f"{w}.signal", 0, 2**31)
        for name, value in c.obj(t.get("registers", {}), f"{w}.registers").items():
            c.string(name, f"{w}.registers")
            c.integer(value, f"{w}.registers.{name[:40]}", 0, _U64)
        _check_frames(c, t.get("frames", []), f"{w}.frames")
    names: list[str] = []
    for i, raw_a in enumerate(c.array(obj.get("anomaly_details", []), "anomaly_details")):
        w = f"anomaly_details[{i}]"
        a = c.obj(raw_a, w, frozenset({"name"}), _ANOMALY_FIELDS)
        name = c.string(a["name"], f"{w}.name")
        if name not in _ANOMALIES:
            raise _Bad(RejectReason.SCHEMA, f"{w}.name: unknown anomaly {name[:40]!r}")
        names.append(name)
        c.string(a.get("detail", ""), f"{w}.detail")
        confidence = c.number(a.get("confidence", 1.0), f"{w}.confidence")
        if not 0.0 <= confidence <= 1.0:
            raise _Bad(RejectReason.SCHEMA, f"{w}.confidence: {confidence} not in [0, 1]")
        c.any_json(c.obj(a.get("data", {}), f"{w}.data"), f"{w}.data")
    listed = [c.string(n, "anomalies") for n in c.array(obj.get("anomalies", names), "anomalies")]
    if listed != names:
        raise _Bad(RejectReason.SCHEMA, "anomalies: not the names of anomaly_details in order")
    for i, raw_s in enumerate(c.array(obj.get("stack_window", []), "stack_window")):
        w = f"stack_window[{i}]"
        s = c.obj(raw_s, w, frozenset({"offset", "address"}), _WORD_FIELDS)
        c.integer(s["offset"], f"{w}.offset", -_I64, _I64)
        c.integer(s["address"], f"{w}.address", 0, _U64)
        c.opt_string(s.get("function"), f"{w}.function")
        c.opt_string(s.get("module"), f"{w}.module")
        c.opt_integer(s.get("module_offset"), f"{w}.module_offset", 0, _U64)
        c.boolean(s.get("after_call", False), f"{w}.after_call")
    for i, raw_s in enumerate(c.array(obj.get("signal_frames", []), "signal_frames")):
        w = f"signal_frames[{i}]"
        s = c.obj(raw_s, w, frozenset({"offset", "interrupted_pc"}), _SIGFRAME_FIELDS)
        c.integer(s["offset"], f"{w}.offset", -_I64, _I64)
        c.integer(s["interrupted_pc"], f"{w}.interrupted_pc", 0, _U64)
        c.opt_string(s.get("function"), f"{w}.function")
        c.opt_integer(s.get("function_offset"), f"{w}.function_offset", 0, _U64)
        c.opt_string(s.get("module"), f"{w}.module")
        c.opt_integer(s.get("module_offset"), f"{w}.module_offset", 0, _U64)
        c.opt_integer(s.get("interrupted_sp"), f"{w}.interrupted_sp", 0, _U64)
        c.opt_integer(s.get("signal"), f"{w}.signal", 0, 2**31)
    meta = c.obj(obj["metadata"], "metadata")
    for key, value in meta.items():
        c.string(value, f"metadata.{key[:40]}")
        if key in DROPPED_FIELDS:
            # The core itself or the process environment: memory contents stay on the host.
            raise _Bad(RejectReason.SCHEMA, f"metadata.{key}: never sent (privacy)")
    checked = check_fields(meta, "metadata")
    if checked.errors:
        raise _Bad(RejectReason.SCHEMA, str(checked.errors[0]))
    host = meta.get(HOSTNAME)
    if not isinstance(host, str) or not valid_host(host):
        raise _Bad(RejectReason.HOST, f"metadata.{HOSTNAME}: missing or not a host name")
    try:
        record = CrashRecord.from_json(obj)
    except (KeyError, TypeError, ValueError) as exc:
        raise _Bad(RejectReason.SCHEMA, f"record: {_short(exc)}") from exc
    return host, core_id, record


_HEARTBEAT_FIELDS = frozenset({"host", "time_us", "service", "version"})
_HEARTBEAT_OPTIONAL = frozenset({"uptime_s", "agent_uptime_s", "lost", "microcode", "kernel"})
# Loss reasons are the agent's LossReason values, "rejected:<reason>" or "refused:<error>".
_LOSS_REASON_RE = re.compile(r"[a-z0-9_]{1,32}(:[A-Za-z0-9_.-]{1,64})?")
_MAX_LOSS_REASONS = 64


def _check_heartbeat(c: _Checker, raw: Any) -> tuple[str, str, HeartbeatRecord]:
    obj = c.obj(raw, "record", _HEARTBEAT_FIELDS, _HEARTBEAT_FIELDS | _HEARTBEAT_OPTIONAL)
    host = c.string(obj["host"], "host")
    if not valid_host(host):
        raise _Bad(RejectReason.HOST, "host: not a host name")
    lost: dict[str, int] | None = None
    if "lost" in obj:
        counts = c.obj(obj["lost"], "lost")
        if len(counts) > _MAX_LOSS_REASONS:
            raise _Bad(RejectReason.SCHEMA, f"lost: more than {_MAX_LOSS_REASONS} reasons")
        lost = {}
        for reason, n in counts.items():
            if not _LOSS_REASON_RE.fullmatch(reason):
                raise _Bad(RejectReason.SCHEMA, f"lost: bad reason {reason[:40]!r}")
            lost[reason] = c.integer(n, f"lost.{reason}", 0, _I64)
    beat = HeartbeatRecord(
        host=host,
        time_us=c.integer(obj["time_us"], "time_us", 0, _I64),
        service=c.string(obj["service"], "service"),
        version=c.string(obj["version"], "version"),
        uptime_s=c.opt_integer(obj.get("uptime_s"), "uptime_s", 0, _I64),
        agent_uptime_s=c.opt_integer(obj.get("agent_uptime_s"), "agent_uptime_s", 0, _I64),
        lost=lost,
        microcode=c.opt_string(obj.get("microcode"), "microcode"),
        kernel=c.opt_string(obj.get("kernel"), "kernel"),
    )
    if not beat.service:
        raise _Bad(RejectReason.SCHEMA, "service: empty")
    return host, beat.record_id, beat


def _check_screening(c: _Checker, raw: Any) -> tuple[str, str, ScreenResult]:
    obj = c.obj(raw, "record", frozenset({"kind", "screen_id", "host", "started_at"}))
    c.any_json(obj, "record")
    host = obj["host"]
    if not isinstance(host, str) or not valid_host(host):
        raise _Bad(RejectReason.HOST, "host: missing or not a host name")
    screen_id = c.string(obj["screen_id"], "screen_id")
    if not _ID_RE.fullmatch(screen_id):
        raise _Bad(RejectReason.SCHEMA, "screen_id: 1-128 letters, digits, '.', '_', ':' or '-'")
    c.integer(obj["started_at"], "started_at", 0, _I64)
    try:
        result = ScreenResult.from_json(obj)
    except (ScreeningError, KeyError, TypeError, ValueError) as exc:
        raise _Bad(RejectReason.SCHEMA, _short(exc)) from exc
    return host, screen_id, result


_CHECKS: Mapping[RecordKind, Callable[[_Checker, Any], tuple[str, str, Any]]] = {
    RecordKind.CRASHES: _check_crash,
    RecordKind.HEARTBEATS: _check_heartbeat,
    RecordKind.SCREENINGS: _check_screening,
}


@dataclass(slots=True)
class _Collected:
    records: list[WireRecord[Any]] = field(default_factory=list)
    problems: list[RecordProblem] = field(default_factory=list)


def decode_batch(
    kind: RecordKind, body: Any, limits: WireLimits = WireLimits()
) -> DecodedBatch[Any]:
    """Check a parsed batch (see :func:`decode_body`) of ``kind``: the good records, and a
    problem for each bad one. Raises :class:`WireError` when ``body`` is not such a batch."""
    if not isinstance(body, dict):
        raise WireError(WireErrorReason.BAD_ENVELOPE, "a batch is a JSON object")
    unknown = body.keys() - {"schema_version", "kind", "records"}
    if unknown:
        names = ", ".join(repr(k[:40]) for k in sorted(unknown)[:3])
        raise WireError(WireErrorReason.BAD_ENVELOPE, f"unknown field {names}")
    version = body.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise WireError(
            WireErrorReason.SCHEMA_VERSION,
            f"schema_version {str(version)[:20]} (this collector speaks {SCHEMA_VERSION})",
        )
    if body.get("kind") != kind.value:
        raise WireError(
            WireErrorReason.WRONG_KIND,
            f"kind {str(body.get('kind'))[:40]!r} sent to the {kind} endpoint",
        )
    records = body.get("records")
    if not isinstance(records, list):
        raise WireError(WireErrorReason.BAD_ENVELOPE, "records: expected a list")
    if len(records) > limits.max_records:
        raise WireError(
            WireErrorReason.TOO_MANY_RECORDS,
            f"{len(records)} records (limit {limits.max_records} per batch)",
        )
    check = _CHECKS[kind]
    out = _Collected()
    for index, raw in enumerate(records):
        checker = _Checker(limits)
        try:
            host, record_id, value = check(checker, raw)
        except _Bad as bad:
            out.problems.append(RecordProblem(index, bad.reason, bad.detail))
            continue
        except RecursionError:
            out.problems.append(RecordProblem(index, RejectReason.TOO_LARGE, "nested too deeply"))
            continue
        out.records.append(WireRecord(index, host, record_id, value))
    return DecodedBatch(kind, tuple(out.records), tuple(out.problems), len(records))
