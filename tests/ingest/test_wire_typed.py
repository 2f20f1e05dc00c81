"""The typed pass (msgspec Structs) only ever accepts, and only what wire's checker accepts, as
the same record; everything else goes whole to the checker, so every refusal is the checker's.
Checked on records of real cores, on every bad record the checker's own tests name, on limits,
and on arbitrary values in any field (Hypothesis)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.ingest.test_ingest_wire import BAD_CRASHES, _crash_json
from tests.store.store_records import make_record

from corecensus.coredump import inspect_core
from corecensus.ingest.fields import check_fields, fields_ok
from corecensus.ingest.wire import (
    DecodedBatch,
    RecordKind,
    WireError,
    WireLimits,
    decode_batch,
    decode_body,
    encode_batch,
)
from corecensus.ingest.wire_typed import _fits_u64, decode_upload, typed_crashes
from corecensus.model import CrashRecord

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples" / "x86_64"
SAMPLE_NAMES = sorted(p.name for p in SAMPLES.iterdir() if (p / "core.zst").is_file())


def _body(records: list[Any]) -> bytes:
    return json.dumps({"schema_version": 1, "kind": "crashes", "records": records}).encode()


def _checker(body: bytes, limits: WireLimits) -> DecodedBatch[Any] | WireError:
    try:
        return decode_batch(RecordKind.CRASHES, decode_body(body, limits), limits)
    except WireError as exc:
        return exc


DEFAULT_LIMITS = WireLimits()


def _agree(body: bytes, limits: WireLimits = DEFAULT_LIMITS) -> DecodedBatch[Any] | None:
    """Assert the typed pass and the checker agree on ``body``; the typed pass's result."""
    slow = _checker(body, limits)
    fast = typed_crashes(body, limits)
    if fast is not None:
        # It accepted: the checker accepts every record too, as the same record.
        assert isinstance(slow, DecodedBatch), slow
        assert slow.problems == ()
        assert fast.size == slow.size
        assert [(r.index, r.host, r.record_id) for r in fast.records] == [
            (r.index, r.host, r.record_id) for r in slow.records
        ]
        for f, s in zip(fast.records, slow.records, strict=True):
            assert CrashRecord.from_json(msgspec.to_builtins(f.value)) == s.value
    # And the collector's entry point answers as the checker does, whichever pass decided.
    try:
        either = decode_upload(RecordKind.CRASHES, body, limits)
    except WireError as exc:
        assert isinstance(slow, WireError) and (exc.reason, exc.detail) == (
            slow.reason,
            slow.detail,
        )
    else:
        assert isinstance(slow, DecodedBatch)
        assert either.problems == slow.problems
        assert [r.index for r in either.records] == [r.index for r in slow.records]
    return fast


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_records_of_real_cores_take_the_typed_pass_as_the_same_records(name: str) -> None:
    rec = inspect_core(SAMPLES / name / "core.zst", binaries=[SAMPLES / name])
    rec = dataclasses.replace(
        rec, metadata={**rec.metadata, "COREDUMP_HOSTNAME": "web-1", "COREDUMP_TIMESTAMP": "1"}
    )
    body = encode_batch(RecordKind.CRASHES, [rec, make_record(7, anomalies=("sp_off_by_8",))])
    fast = _agree(body)
    assert fast is not None  # the typed pass took it (not the checker)
    assert CrashRecord.from_json(msgspec.to_builtins(fast.records[0].value)) == rec


@pytest.mark.parametrize("case", sorted(BAD_CRASHES))
def test_every_bad_record_goes_to_the_checker_which_words_the_refusal(case: str) -> None:
    mutate, reason, detail = BAD_CRASHES[case]
    records = [_crash_json(i) for i in range(3)]
    mutate(records[1])
    body = _body(records)
    assert _agree(body) is None
    batch = decode_upload(RecordKind.CRASHES, body, WireLimits())
    (problem,) = batch.problems
    assert (problem.index, problem.reason) == (1, reason) and detail in problem.detail
    assert [r.index for r in batch.records] == [0, 2]


def test_the_largest_address_is_taken_and_one_past_it_is_not() -> None:
    good = _crash_json()
    good["frames"][0]["pc"] = 2**64 - 1
    good["registers"]["rax"] = 2**64 - 1
    assert _agree(_body([good])) is not None
    bad = _crash_json()
    bad["registers"]["rbx"] = 2**64
    assert _agree(_body([bad])) is None


def _fits_u64_by_definition(raw: bytes) -> bool:
    """Every run of 20 digits or more, leading zeros aside, is below 2**64."""
    for run in re.findall(rb"[0-9]{20,}", raw):
        digits = run.lstrip(b"0")
        if len(digits) > 20 or (digits and int(digits) >= 2**64):
            return False
    return True


def test_the_u64_scan_finds_every_long_run_at_every_alignment() -> None:
    """The scan looks for four all-digit 4-byte words in a row: every run of 20 digits holds
    them wherever it starts and ends; shorter runs pass whatever their value."""
    runs = [b"1" * 19, b"9" * 19, b"1" * 20, str(2**64 - 1).encode(), str(2**64).encode()]
    runs += [b"0" * 30 + b"1", b"0" * 5 + str(2**64).encode(), b"9" * 21, b"0" * 40, b"9" * 5000]
    bodies = [b"", b"7", b'{"pc": 1}']
    for run in runs:
        for before in range(8):
            for after in (b"", b"x", b",2,", b"abc" * 3):
                bodies.append(b"a" * before + run + after)
                bodies.append(b"1" * before + b"," + run + after)
    many = b",".join(str(2**64 - 1 - i).encode() for i in range(500))
    bodies += [many, many + b",18446744073709551616", b"[" + b"0" * 100_000 + b"]"]
    for body in bodies:
        assert _fits_u64(body) == _fits_u64_by_definition(body), body[:40]
    assert not _fits_u64(b'{"r": 18446744073709551616}')
    assert _fits_u64(b'{"r": 18446744073709551615, "s": "1234567890123456789"}')


def test_a_number_of_thousands_of_digits_goes_to_the_checker() -> None:
    """5,000 digits (past CPython's 4,300-digit int limit): the typed pass's own u64 check
    raised a bare ValueError out of the upload path; now the checker answers, as it does for
    any body it cannot parse."""
    body = _body([_crash_json()])
    body = body.replace(b'"pid": ', b'"pid": ' + b"1" * 5000 + b', "x": ', 1)
    assert b"1" * 5000 in body
    assert _agree(body) is None
    with pytest.raises(WireError, match="body is not JSON"):
        decode_upload(RecordKind.CRASHES, body, WireLimits())


def test_text_the_store_could_not_hold_goes_to_the_checker() -> None:
    # A lone surrogate: the checker takes it (signing escapes it later); the typed pass never.
    body = _body([_crash_json()]).replace(b'"/usr/bin/svc"', b'"/usr/bin/\\ud800svc"', 1)
    assert b"\\ud800" in body
    assert _agree(body) is None


def test_the_configured_limits_are_the_typed_pass_limits_too() -> None:
    rec = _crash_json()
    rec["exe"] = "x" * 40
    rec["frames"] = rec["frames"] * 3
    body = _body([rec])
    assert _agree(body) is not None
    assert _agree(body, WireLimits(max_string_chars=39)) is None
    assert _agree(body, WireLimits(max_list_items=len(rec["frames"]) - 1)) is None
    assert _agree(body, WireLimits(max_records=0)) is None
    assert _agree(body, WireLimits(max_record_bytes=4 * len(json.dumps(rec)))) is None
    assert (
        _agree(_body([rec] * 3), WireLimits(max_record_bytes=4 * len(json.dumps(rec)) + 64))
        is not None
    )


def test_a_batch_parsed_in_one_pass_or_record_by_record_is_the_same() -> None:
    """A body under the record size bound is parsed in one pass; a larger one record by
    record (each checked against the bound): the same records either way."""
    records = [_crash_json(i) for i in range(3)]
    body = _body(records)
    one_pass = WireLimits()
    assert len(body) <= (one_pass.max_record_bytes - 64) // 4
    largest = max(len(json.dumps(r)) for r in records)
    by_record = WireLimits(max_record_bytes=4 * largest + 64)
    assert len(body) > (by_record.max_record_bytes - 64) // 4
    fast, slow = _agree(body, one_pass), _agree(body, by_record)
    assert fast is not None and slow is not None
    assert [msgspec.to_builtins(r.value) for r in fast.records] == [
        msgspec.to_builtins(r.value) for r in slow.records
    ]
    # One record past the bound: the checker decides, whichever way the batch was parsed.
    assert _agree(body, WireLimits(max_record_bytes=4 * largest)) is None


def test_a_number_past_2_64_in_the_envelope_goes_to_the_checker() -> None:
    body = b'{"schema_version": 18446744073709551616, "kind": "crashes", "records": []}'
    assert _agree(body) is None
    with pytest.raises(WireError) as refused:
        decode_upload(RecordKind.CRASHES, body, WireLimits())
    assert refused.value.reason == "schema_version"


def _short_strings(rec: dict[str, Any], most: int) -> dict[str, Any]:
    """``rec`` with every string value cut to ``most`` characters (ids and paths stay valid)."""

    def cut(value: Any) -> Any:
        if isinstance(value, str):
            return value[:most]
        if isinstance(value, dict):
            return {k: cut(v) for k, v in value.items()}
        if isinstance(value, list):
            return [cut(v) for v in value]
        return value

    out: dict[str, Any] = cut(rec)
    out["core_id"] = f"c{len(out['frames'])}"
    return out


@pytest.mark.parametrize("case", sorted(BAD_CRASHES))
def test_with_names_past_the_string_limit_the_enumerations_are_checked_in_python(
    case: str,
) -> None:
    """At a string limit some anomaly name is past, the enumerations and the confidence are
    not types (a name too long for the checker would pass one) but checks on the parsed
    record; they send the same records to the checker."""
    limits = WireLimits(max_string_chars=len("returned_to_bad_address") - 1)
    good = [_short_strings(_crash_json(i), limits.max_string_chars) for i in range(3)]
    assert _agree(_body(good), limits) is not None
    mutate, _reason, _detail = BAD_CRASHES[case]
    mutate(good[1])
    assert _agree(_body(good), limits) is None
    for name, fits in (("returned_to_bad_address", False), ("sigbus_memory_error", True)):
        rec = _short_strings(_crash_json(), limits.max_string_chars)
        rec["anomalies"], rec["anomaly_details"][0]["name"] = [name], name
        assert (_agree(_body([rec]), limits) is not None) is fits


def test_envelopes_that_are_not_batches_go_to_the_checker() -> None:
    for body in (
        b'{"schema_version": 2, "kind": "crashes", "records": []}',
        b'{"schema_version": true, "kind": "crashes", "records": []}',
        b'{"schema_version": 1, "kind": "heartbeats", "records": []}',
        b'{"schema_version": 1, "kind": "crashes", "records": [], "x": 1}',
        b'{"schema_version": 1, "kind": "crashes"}',
        b"[1, 2]",
        b"not json",
        b"\xff\xfe",
        b'{"schema_version": 1, "kind": "crashes", "records": ['
        + b"[" * 5000
        + b"]" * 5000
        + b"]}",
    ):
        assert _agree(body) is None
    assert _agree(b'{"schema_version": 1, "kind": "crashes", "records": []}') is not None


_VALUES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=6)
    | st.lists(st.integers(), max_size=3)
    | st.dictionaries(st.text(max_size=4), st.integers(), max_size=2)
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


_TEMPLATE = _crash_json()
_PATHS = _paths(_TEMPLATE)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(_PATHS), _VALUES)
def test_any_value_anywhere_in_a_record_the_passes_agree(path: tuple[Any, ...], value: Any) -> None:
    rec = json.loads(json.dumps(_TEMPLATE))
    target = rec
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    _agree(_body([rec]))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(sorted(_TEMPLATE)), st.sampled_from(_PATHS), _VALUES)
def test_any_field_added_or_removed_the_passes_agree(
    name: str, path: tuple[Any, ...], value: Any
) -> None:
    rec = json.loads(json.dumps(_TEMPLATE))
    del rec[name]
    target = rec
    try:
        for step in path[:-1]:
            target = target[step]
        if isinstance(target, dict):
            target[f"extra_{path[-1]}"] = value
    except (KeyError, IndexError, TypeError):
        pass  # the path went through the removed field
    _agree(_body([rec]))


_FIELD_NAMES = st.sampled_from(
    [
        "COREDUMP_PID",
        "COREDUMP_TIMESTAMP",
        "CORECENSUS_CPU",
        "CORECENSUS_CPU_CORE",
        "CORECENSUS_HOST_CPUS",
        "COREDUMP_RLIMIT",
        "COREDUMP_BOOT_ID",
        "CORECENSUS_CPUS_ALLOWED",
        "COREDUMP_ENVIRON",
        "COREDUMP_HOSTNAME",
        "bad name",
        "",
    ]
) | st.text(max_size=8)
_FIELD_VALUES = (
    st.text(max_size=12)
    | st.from_regex(r"-?[0-9]{1,22}", fullmatch=True)
    | st.from_regex(r"[0-9a-fA-F-]{30,36}", fullmatch=True)
    | st.from_regex(r"[0-9,-]{1,10}", fullmatch=True)
    | st.just("x\ud800")
    | st.just("1" * (64 * 1024 + 1))
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_FIELD_NAMES, _FIELD_VALUES, max_size=4))
def test_the_typed_pass_finds_a_metadata_error_where_check_fields_does(
    fields: dict[str, str],
) -> None:
    assert fields_ok(fields) == (not check_fields(fields, "metadata").errors)
