"""The crash batch's shape as msgspec Structs: one typed pass in C instead of a Python walk.

:mod:`corecensus.ingest.wire`'s checker walks every value of a record in Python (about 0.7 ms
for a 10 KB crash record, the collector's largest cost per record). Here the same rules are
types -- required and unknown fields, integer ranges, string, list and map sizes, enumerations
-- so msgspec checks them while it parses, and a few cross-field rules (ids, problem kinds,
anomaly names, metadata values, the host) run on the result in Python.

This path only ever *accepts*: a body whose every record passes it is decoded here; anything
else -- one bad record, an envelope it does not like, a number it cannot hold, a lone surrogate
-- is handed whole to :func:`corecensus.ingest.wire.decode_batch`, which decides and words
every refusal as before. So the strictness, the answers and their wording are the checker's,
and this module can only be narrower than it (``tests/ingest/test_wire_typed.py`` holds it to
that: whatever it accepts the checker accepts, as the same record).

No ``from __future__ import annotations`` here: the Structs are made per :class:`WireLimits`
(the collector's limits are configuration) inside a function, and msgspec reads their
annotations as objects.
"""

import functools
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
import numpy as np
from msgspec import UNSET, Meta, Struct, UnsetType

from corecensus.ingest.fields import DROPPED_FIELDS, HOSTNAME, fields_ok
from corecensus.ingest.wire import (
    SCHEMA_VERSION,
    DecodedBatch,
    RecordKind,
    WireLimits,
    WireRecord,
    check_any_json,
    decode_batch,
    decode_body,
    valid_host,
    valid_id,
)
from corecensus.model import ANOMALY_NAMES, FrameTrust, ProblemKind

__all__ = ["CrashShapes", "crash_shapes", "decode_upload", "typed_crashes"]

_U64 = 2**64
_I64 = 2**63
_I32 = 2**31
# The checker's size estimate of a record counts at most 4 per byte of its JSON (8 per number,
# and a number takes at least a digit and a comma; strings and keys count at most their bytes,
# keys of registers twice), so a record whose JSON is under a quarter of the limit is under it.
_ESTIMATE_PER_BYTE = 4
_ESTIMATE_SLACK = 64


@dataclass(frozen=True, slots=True)
class CrashShapes:
    """The Structs and decoders of one set of limits (see :func:`crash_shapes`)."""

    envelope: msgspec.json.Decoder[Any]
    record: msgspec.json.Decoder[Any]
    batch: msgspec.json.Decoder[Any]
    crash_type: type[Any]
    max_raw_record_bytes: int
    # The enumerations and the confidence's range are checked by the types (else by
    # _crash_ok): see crash_shapes.
    typed_names: bool


@functools.cache
def crash_shapes(max_string_chars: int, max_list_items: int, max_record_bytes: int) -> CrashShapes:
    """The crash batch's Structs for these limits (:class:`~corecensus.ingest.wire.WireLimits`
    fields), made once per distinct set."""
    Text = Annotated[str, Meta(max_length=max_string_chars)]
    # msgspec bounds must fit int64; the upper bound of unsigned 64-bit values is checked on
    # the raw bytes instead (:func:`_fits_u64`).
    U64 = Annotated[int, Meta(ge=0)]
    I64 = Annotated[int, Meta(ge=-_I64, le=_I64 - 1)]
    I32 = Annotated[int, Meta(ge=0, lt=_I32)]
    S32 = Annotated[int, Meta(ge=-_I32, lt=_I32)]
    Registers = Annotated[dict[Text, U64], Meta(max_length=max_list_items)]
    # The enumerations (frame trust, problem kind, anomaly name) and the confidence's range
    # are types too, checked in C while parsing, when every name is within the string limit
    # (else a name too long for the checker would pass): Python loops over every frame had
    # been a tenth of the typed pass.
    typed_names = _names_fit(max_string_chars)
    Trust: Any = Literal[tuple(t.value for t in FrameTrust)] if typed_names else Text
    Kind: Any = Literal[tuple(k.value for k in ProblemKind)] if typed_names else Text
    Name: Any = Literal[ANOMALY_NAMES] if typed_names else Text
    Confidence: Any = Annotated[float, Meta(ge=0.0, le=1.0)] if typed_names else float
    # gc=False: a parsed record is some hundred Structs (its stack window, frames, threads)
    # that hold only text, numbers and JSON values, so they can never be part of a reference
    # cycle. Tracked by the garbage collector, they made it run a young collection every few
    # records: the typed pass took 0.18 ms per 10 KB crash record, 0.11 ms untracked (one
    # process, load average 4).

    class Problem(Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True, gc=False):
        kind: Kind
        detail: Text

    class Module(Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True, gc=False):
        path: Text
        base: U64
        build_id: Text | None = None
        end: U64 | UnsetType = UNSET
        file_offset: U64 = 0
        executable: bool = False

    class Frame(Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True, gc=False):
        pc: U64
        function: Text | None = None
        module: Text | None = None
        offset: U64 | None = None
        build_id: Text | None = None
        recovered: bool = False
        trust: Trust | None = None

    Frames = Annotated[tuple[Frame, ...], Meta(max_length=max_list_items)]

    class Thread(Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True, gc=False):
        tid: I32
        signal: I32 | None = None
        registers: Registers = msgspec.field(default_factory=dict)
        frames: Frames = ()

    class AnomalyDetail(
        Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True, gc=False
    ):
        name: Name
        detail: Text = ""
        confidence: Confidence = 1.0
        data: Annotated[dict[str, Any], Meta(max_length=max_list_items)] = msgspec.field(
            default_factory=dict
        )

    class StackWord(Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True, gc=False):
        offset: I64
        address: U64
        function: Text | None = None
        module: Text | None = None
        module_offset: U64 | None = None
        after_call: bool = False

    class SignalFrame(
        Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True, gc=False
    ):
        offset: I64
        interrupted_pc: U64
        function: Text | None = None
        function_offset: U64 | None = None
        module: Text | None = None
        module_offset: U64 | None = None
        interrupted_sp: U64 | None = None
        signal: I32 | None = None

    def many(item: Any) -> Any:
        return Annotated[tuple[item, ...], Meta(max_length=max_list_items)]

    class Crash(Struct, forbid_unknown_fields=True, frozen=True, omit_defaults=True, gc=False):
        # The fields of CrashRecord.to_json(), in its order.
        core_id: Text
        status: Literal["ok", "partial", "unparsed"]
        metadata: Annotated[dict[str, Text], Meta(max_length=max_list_items)]
        errors: many(Text) | UnsetType = UNSET  # type: ignore[valid-type]
        problems: many(Problem) | UnsetType = UNSET  # type: ignore[valid-type]
        source: Text | None = None
        writer: Text | None = None
        arch: Text | None = None
        pid: I32 | None = None
        comm: Text | None = None
        exe: Text | None = None
        cmdline: Text | None = None
        signal: I32 | None = None
        signal_name: Text | None = None
        si_code: S32 | None = None
        si_code_name: Text | None = None
        fault_address: U64 | None = None
        effective_address: U64 | None = None
        instruction: Text | None = None
        crashed_tid: I32 | None = None
        threads: I32 = 0
        cpu: I32 | None = None
        registers: Registers = msgspec.field(default_factory=dict)
        modules: many(Module) = ()  # type: ignore[valid-type]
        frames: Frames = ()
        anomalies: many(Text) | UnsetType = UNSET  # type: ignore[valid-type]
        anomaly_details: many(AnomalyDetail) = ()  # type: ignore[valid-type]
        stack_window: many(StackWord) = ()  # type: ignore[valid-type]
        signal_frames: many(SignalFrame) = ()  # type: ignore[valid-type]
        threads_detail: many(Thread) = ()  # type: ignore[valid-type]

    class Envelope(Struct, forbid_unknown_fields=True):
        schema_version: int
        kind: str
        records: list[msgspec.Raw]

    class Batch(Struct, forbid_unknown_fields=True):
        schema_version: int
        kind: str
        records: list[Crash]

    return CrashShapes(
        envelope=msgspec.json.Decoder(Envelope),
        record=msgspec.json.Decoder(Crash),
        batch=msgspec.json.Decoder(Batch),
        crash_type=Crash,
        max_raw_record_bytes=max(0, (max_record_bytes - _ESTIMATE_SLACK) // _ESTIMATE_PER_BYTE),
        typed_names=typed_names,
    )


def _names_fit(max_string_chars: int) -> bool:
    """Every frame trust, problem kind and anomaly name within the string limit: the checker
    refuses a longer string before it looks the name up."""
    names = (*FrameTrust, *ProblemKind, *ANOMALY_NAMES)
    return all(len(name) <= max_string_chars for name in names)


# The u64 scan (_fits_u64): a byte's digit flag is 1, a word of four bytes all digits is
# 0x01010101, and a run of 20 digits holds four such words in a row at any alignment (a run
# of 15, the most a register's or an address's decimal has below 2**53, never does).
_ZERO, _TEN = np.uint8(ord("0")), np.uint8(10)
_FOUR_DIGITS = np.uint32(0x01010101)
_NON_DIGIT = re.compile(rb"[^0-9]")
_U64_DIGITS = len(str(_U64))
_FEW_PLACES = 256


def _fits_u64(raw: bytes) -> bool:
    """No number in ``raw`` reaches 2**64: what msgspec's unbounded ``int`` lets through and
    the checker refuses in an address field. Digits inside strings count too (harmless: such
    a record only goes to the checker).

    Found as runs of 20 digits or more (2**64 - 1 has 20): numpy flags the digits and finds
    four all-digit 4-byte words in a row, which every such run holds, in a few passes over the
    body; only those places are read in Python. A translate to digit flags and a substring
    search took 0.42 ms for the collector bench's 206 KB body (7.8 % of a front end's CPU at
    capacity, py-spy), this a third of it."""
    size = len(raw)
    # One buffer, padded to whole words: each byte's code less "0", then its digit flag.
    flags = np.empty(size // 4 * 4 + 4, dtype=np.uint8)
    flags[size:] = 0
    np.subtract(np.frombuffer(raw, dtype=np.uint8), _ZERO, out=flags[:size])
    np.less(flags[:size], _TEN, out=flags[:size].view(np.bool_))
    words = flags.view(np.uint32) == _FOUR_DIGITS
    four = words[:-1] & words[1:]
    four = four[:-2] & four[2:]
    # Where such places are: each of them, when they are few (a body's 16-digit timestamps
    # and 20-digit registers; a place inside the run read last is skipped below), else where
    # each run of them begins (a long run of zeros is one, not millions). (``four[:1].any()``
    # and the comparison for every body had been a third of the scan's time, py-spy.)
    if np.count_nonzero(four) <= _FEW_PLACES:
        places = np.flatnonzero(four).tolist()
    else:
        places = (np.flatnonzero(four[1:] > four[:-1]) + 1).tolist()
        if four[0]:
            places.insert(0, 0)
    end = 0
    for word in places:
        at = 4 * word
        if at < end:
            continue  # (within the run read last)
        while at and flags[at - 1]:  # (at most three: the word before is not all digits)
            at -= 1
        after = _NON_DIGIT.search(raw, 4 * word + 16)
        end = size if after is None else after.start()
        if end - at < _U64_DIGITS:
            continue
        # Leading zeros aside (digits inside strings), a run longer than 2**64 has digits is
        # past it; int() of one over 4,300 digits raises ValueError (CPython's limit), which
        # escaped the collector's upload path.
        run = raw[at:end].lstrip(b"0")
        if len(run) > _U64_DIGITS or (run and int(run) >= _U64):
            return False
    return True


_PROBLEM_KINDS = frozenset(ProblemKind)
_TRUSTS = frozenset(FrameTrust)
_ANOMALIES = frozenset(ANOMALY_NAMES)


def decode_upload(kind: RecordKind, plain: bytes, limits: WireLimits) -> DecodedBatch[Any]:
    """A decompressed upload body checked as :func:`~corecensus.ingest.wire.decode_batch`
    checks it, and with the same result: the typed pass when it accepts every record (crash
    records come out as the Crash Struct of :func:`crash_shapes`, see :func:`typed_crashes`),
    else the checker's, which words every refusal."""
    if kind is RecordKind.CRASHES and len(plain) <= limits.max_decoded_bytes:
        fast = typed_crashes(plain, limits)
        if fast is not None:
            return fast
    return decode_batch(kind, decode_body(plain, limits), limits)


def typed_crashes(plain: bytes, limits: WireLimits) -> DecodedBatch[Any] | None:
    """The batch of crash records in ``plain`` when every one passes the typed pass and the
    cross-field rules; None when anything does not (the caller asks the checker)."""
    shapes = crash_shapes(limits.max_string_chars, limits.max_list_items, limits.max_record_bytes)
    # Numbers anywhere in the body (the envelope's too: one past 2**64 there is refused by the
    # checker as well), in one scan rather than one per record.
    if not _fits_u64(plain):
        return None
    try:
        if len(plain) <= shapes.max_raw_record_bytes:
            # Every record is shorter than the whole body, so under the size bound: the batch
            # is parsed in one pass, records and all (a separate pass over each record's raw
            # JSON cost 0.015 ms per 10 KB record).
            env = shapes.batch.decode(plain)
        else:
            env = shapes.envelope.decode(plain)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None
    if (
        env.schema_version != SCHEMA_VERSION
        or env.kind != RecordKind.CRASHES.value
        or len(env.records) > limits.max_records
    ):
        return None
    records: list[WireRecord[Any]] = []
    for index, given in enumerate(env.records):
        if isinstance(given, shapes.crash_type):
            crash = given
        else:
            if len(given) > shapes.max_raw_record_bytes:
                return None
            try:
                crash = shapes.record.decode(given)
            except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                return None
        host = crash.metadata.get(HOSTNAME)
        if not (
            host is not None and valid_host(host) and _crash_ok(crash, limits, shapes.typed_names)
        ):
            return None
        records.append(WireRecord(index, host, crash.core_id, crash))
    return DecodedBatch(RecordKind.CRASHES, tuple(records), (), len(env.records))


def _crash_ok(crash: Any, limits: WireLimits, typed_names: bool) -> bool:
    """The checker's rules that are not types (wire._check_crash, in its order)."""
    if not valid_id(crash.core_id):
        return False
    if crash.problems is not UNSET:
        if not typed_names and any(p.kind not in _PROBLEM_KINDS for p in crash.problems):
            return False
        if crash.errors is not UNSET and list(crash.errors) != [p.detail for p in crash.problems]:
            return False
    if not typed_names:
        frames = [*crash.frames, *(f for t in crash.threads_detail for f in t.frames)]
        if any(f.trust is not None and f.trust not in _TRUSTS for f in frames):
            return False
        for a in crash.anomaly_details:
            if a.name not in _ANOMALIES or not 0.0 <= a.confidence <= 1.0:
                return False
    for a in crash.anomaly_details:
        if a.data and not check_any_json(a.data, limits):
            return False
    if crash.anomalies is not UNSET and list(crash.anomalies) != [
        a.name for a in crash.anomaly_details
    ]:
        return False
    meta = crash.metadata
    return DROPPED_FIELDS.isdisjoint(meta) and fields_ok(meta)
