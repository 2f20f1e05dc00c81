"""The upload wire format: round trips of real records, strict per-record rejection, envelopes,
compressed bodies and their bombs."""

from __future__ import annotations

import copy
import dataclasses
import gzip
import json
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.screening.screening_helpers import screen
from tests.store.store_records import make_record

from corecensus.coredump import inspect_core
from corecensus.ingest.wire import (
    PATHS,
    SCHEMA_VERSION,
    BatchAck,
    ContentEncoding,
    HeartbeatRecord,
    RecordKind,
    RecordProblem,
    RejectReason,
    WireError,
    WireErrorReason,
    WireLimits,
    _zstd_in_one_pass,
    _zstd_in_two_passes,
    compress,
    decode_batch,
    decode_body,
    decompress,
    encode_batch,
)
from corecensus.model import CrashRecord, Problem, ProblemKind
from corecensus.screening.result import ScreenResult

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples" / "x86_64"


@pytest.fixture(scope="module")
def real_crash() -> CrashRecord:
    """A record parsed from a real kernel core (the shipped null_deref sample)."""
    rec = inspect_core(SAMPLES / "null_deref" / "core.zst", binaries=[SAMPLES / "null_deref"])
    meta = {**rec.metadata, "COREDUMP_HOSTNAME": "web-1", "COREDUMP_TIMESTAMP": "1700000000000000"}
    return dataclasses.replace(rec, metadata=meta)


@pytest.fixture(scope="module")
def real_screen() -> ScreenResult:
    """A real one-round screen of CPU 0 with one check (worker processes and all)."""
    result = screen(("crc32",), cpus=(0,))
    return dataclasses.replace(result, host="web-1")


def roundtrip(kind: RecordKind, records: list[Any], encoding: ContentEncoding) -> Any:
    wire = compress(encode_batch(kind, records), encoding)
    body = decompress(wire, str(encoding), 1 << 24)
    return decode_batch(kind, decode_body(body))


@pytest.mark.parametrize("encoding", list(ContentEncoding))
def test_real_crash_record_round_trips(real_crash: CrashRecord, encoding: ContentEncoding) -> None:
    assert real_crash.frames and real_crash.modules  # the sample is a full record
    batch = roundtrip(RecordKind.CRASHES, [real_crash], encoding)
    assert batch.problems == ()
    (got,) = batch.records
    assert got.value == real_crash
    assert (got.index, got.host, got.record_id) == (0, "web-1", real_crash.core_id)


def test_store_shaped_records_round_trip_with_anomalies_and_stack_windows() -> None:
    records = [
        make_record(1, anomalies=("sp_off_by_8", "bit_flip_candidate")),
        make_record(2, null_pc=True, anomalies=("pc_zero",)),
    ]
    batch = roundtrip(RecordKind.CRASHES, records, ContentEncoding.ZSTD)
    assert [r.value for r in batch.records] == records
    assert [r.host for r in batch.records] == ["host-1", "host-2"]


def test_heartbeats_round_trip_and_their_id_is_their_content() -> None:
    beats = [
        HeartbeatRecord("web-1", 1_700_000_000_000_000, "api", "2.1"),
        HeartbeatRecord("web-1", 1_700_000_300_000_000, "api", "2.1"),
    ]
    batch = roundtrip(RecordKind.HEARTBEATS, beats, ContentEncoding.GZIP)
    assert [r.value for r in batch.records] == beats
    ids = [r.record_id for r in batch.records]
    assert ids[0] != ids[1]
    assert ids[0] == HeartbeatRecord("web-1", 1_700_000_000_000_000, "api", "2.1").record_id


def test_real_screen_round_trips(real_screen: ScreenResult) -> None:
    batch = roundtrip(RecordKind.SCREENINGS, [real_screen], ContentEncoding.IDENTITY)
    assert batch.problems == ()
    (got,) = batch.records
    assert got.value.to_json() == real_screen.to_json()
    assert (got.host, got.record_id) == ("web-1", real_screen.screen_id)


def test_paths_name_each_kind() -> None:
    assert PATHS == {
        RecordKind.CRASHES: "/v1/crashes",
        RecordKind.HEARTBEATS: "/v1/heartbeats",
        RecordKind.SCREENINGS: "/v1/screenings",
    }


# --- one bad record costs only itself ----------------------------------------------------------


def _crash_json(i: int = 1) -> dict[str, Any]:
    return make_record(i, anomalies=("sp_off_by_8",)).to_json()


def _set(path: str, value: Any) -> Any:
    def mutate(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = obj
        for p in parents:
            target = target[int(p)] if isinstance(target, list) else target[p]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return mutate


def _delete(path: str) -> Any:
    def mutate(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = obj
        for p in parents:
            target = target[p]
        del target[last]

    return mutate


BAD_CRASHES = {
    "missing core_id": (_delete("core_id"), RejectReason.SCHEMA, "missing core_id"),
    "core_id with a slash": (_set("core_id", "../x"), RejectReason.SCHEMA, "core_id"),
    "unknown status": (_set("status", "fine"), RejectReason.SCHEMA, "status"),
    "unknown field": (_set("password", "x"), RejectReason.SCHEMA, "unknown field 'password'"),
    "pid as a string": (_set("pid", "12"), RejectReason.SCHEMA, "pid: expected an integer"),
    "signal as a boolean": (
        _set("signal", True),
        RejectReason.SCHEMA,
        "signal: expected an integer",
    ),
    "negative address": (_set("fault_address", -1), RejectReason.SCHEMA, "fault_address"),
    "address past 2**64": (_set("frames.0.pc", 2**64), RejectReason.SCHEMA, "frames[0].pc"),
    "frame as a list": (_set("frames.1", [1, 2]), RejectReason.SCHEMA, "frames[1]"),
    "unknown anomaly": (
        _set("anomaly_details.0.name", "cosmic_ray"),
        RejectReason.SCHEMA,
        "unknown anomaly",
    ),
    "anomaly names disagree": (
        _set("anomalies", ["pc_zero"]),
        RejectReason.SCHEMA,
        "anomalies",
    ),
    "confidence above 1": (
        _set("anomaly_details.0.confidence", 1.5),
        RejectReason.SCHEMA,
        "confidence",
    ),
    "no host": (_delete("metadata.COREDUMP_HOSTNAME"), RejectReason.HOST, "COREDUMP_HOSTNAME"),
    "host with a space": (
        _set("metadata.COREDUMP_HOSTNAME", "web 1"),
        RejectReason.HOST,
        "COREDUMP_HOSTNAME",
    ),
    "malformed known metadata": (
        _set("metadata.COREDUMP_PID", "twelve"),
        RejectReason.SCHEMA,
        "COREDUMP_PID",
    ),
    "process environment": (
        _set("metadata.COREDUMP_ENVIRON", "SECRET=1"),
        RejectReason.SCHEMA,
        "privacy",
    ),
    "metadata value not a string": (
        _set("metadata.CORECENSUS_CPU", 3),
        RejectReason.SCHEMA,
        "expected a string",
    ),
    "string over the limit": (
        _set("cmdline", "x" * (64 * 1024 + 1)),
        RejectReason.TOO_LARGE,
        "cmdline",
    ),
    "too many frames": (
        _set("frames", [{"pc": 1}] * 8193),
        RejectReason.TOO_LARGE,
        "frames",
    ),
    "not an object": (lambda obj: obj.clear(), RejectReason.SCHEMA, "missing"),
    "unknown problem kind": (
        _set("problems", [{"kind": "gremlins", "detail": "x"}]),
        RejectReason.SCHEMA,
        "unknown problem kind",
    ),
    "errors disagree with problems": (
        _set("problems", [{"kind": "truncated", "detail": "x"}]),
        RejectReason.SCHEMA,
        "errors: not the details",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CRASHES))
def test_a_bad_crash_record_is_refused_with_its_index_and_the_others_kept(case: str) -> None:
    mutate, reason, detail = BAD_CRASHES[case]
    records = [_crash_json(i) for i in range(3)]
    mutate(records[1])
    body = {"schema_version": SCHEMA_VERSION, "kind": "crashes", "records": records}
    batch = decode_batch(RecordKind.CRASHES, body)
    (problem,) = batch.problems
    assert problem.index == 1
    assert problem.reason is reason
    assert detail in problem.detail
    assert [r.index for r in batch.records] == [0, 2]
    assert batch.size == 3


def test_record_size_limit_refuses_a_large_record_and_accepts_one_just_under() -> None:
    rec = _crash_json()
    rec["metadata"].update({f"X_FIELD_{i}": "e" * 60_000 for i in range(4)})  # about 240 kB
    body = {"schema_version": 1, "kind": "crashes", "records": [rec]}
    small = decode_batch(RecordKind.CRASHES, body, WireLimits(max_record_bytes=250_000))
    assert small.problems == () and len(small.records) == 1
    big = decode_batch(RecordKind.CRASHES, body, WireLimits(max_record_bytes=200_000))
    (problem,) = big.problems
    assert problem.reason is RejectReason.TOO_LARGE and "larger than 200000" in problem.detail


def test_limits_are_inclusive_a_value_at_each_limit_is_accepted() -> None:
    rec = _crash_json()
    rec["cmdline"] = "x" * (64 * 1024)
    rec["frames"] = [{"pc": 2**64 - 1}] * 8192
    rec["si_code"] = -6  # SI_TKILL: negative codes are legitimate
    body = {"schema_version": 1, "kind": "crashes", "records": [rec]}
    batch = decode_batch(RecordKind.CRASHES, body)
    assert batch.problems == ()
    assert batch.records[0].value.cmdline == "x" * (64 * 1024)


def test_problems_round_trip_and_an_older_agents_errors_are_read() -> None:
    rec = make_record(1)
    rec = dataclasses.replace(rec, problems=(Problem(ProblemKind.TRUNCATED, "notes cut short"),))
    body = {"schema_version": 1, "kind": "crashes", "records": [rec.to_json()]}
    (got,) = decode_batch(RecordKind.CRASHES, body).records
    assert got.value == rec
    older = rec.to_json()
    del older["problems"]
    older["status"] = "partial"
    body = {"schema_version": 1, "kind": "crashes", "records": [older]}
    (got,) = decode_batch(RecordKind.CRASHES, body).records
    assert got.value.errors == ("notes cut short",)


def test_unknown_metadata_fields_are_kept_as_the_data_contract_says() -> None:
    rec = _crash_json()
    rec["metadata"]["COREDUMP_SOMETHING_NEW"] = "kept"
    body = {"schema_version": 1, "kind": "crashes", "records": [rec]}
    (got,) = decode_batch(RecordKind.CRASHES, body).records
    assert got.value.metadata["COREDUMP_SOMETHING_NEW"] == "kept"


BAD_HEARTBEATS = {
    "missing version": ({"host": "a", "time_us": 1, "service": "s"}, RejectReason.SCHEMA),
    "extra field": (
        {"host": "a", "time_us": 1, "service": "s", "version": "1", "x": 1},
        RejectReason.SCHEMA,
    ),
    "time as float": (
        {"host": "a", "time_us": 1.5, "service": "s", "version": "1"},
        RejectReason.SCHEMA,
    ),
    "negative time": (
        {"host": "a", "time_us": -1, "service": "s", "version": "1"},
        RejectReason.SCHEMA,
    ),
    "empty service": (
        {"host": "a", "time_us": 1, "service": "", "version": "1"},
        RejectReason.SCHEMA,
    ),
    "bad host": ({"host": "-a", "time_us": 1, "service": "s", "version": "1"}, RejectReason.HOST),
    "negative uptime": (
        {"host": "a", "time_us": 1, "service": "s", "version": "1", "uptime_s": -5},
        RejectReason.SCHEMA,
    ),
    "uptime as text": (
        {"host": "a", "time_us": 1, "service": "s", "version": "1", "agent_uptime_s": "9"},
        RejectReason.SCHEMA,
    ),
    "lost not an object": (
        {"host": "a", "time_us": 1, "service": "s", "version": "1", "lost": [1]},
        RejectReason.SCHEMA,
    ),
    "negative loss": (
        {"host": "a", "time_us": 1, "service": "s", "version": "1", "lost": {"spool_full": -1}},
        RejectReason.SCHEMA,
    ),
    "loss reason not a name": (
        {"host": "a", "time_us": 1, "service": "s", "version": "1", "lost": {"<b>": 1}},
        RejectReason.SCHEMA,
    ),
    "microcode not text": (
        {"host": "a", "time_us": 1, "service": "s", "version": "1", "microcode": 208},
        RejectReason.SCHEMA,
    ),
    "kernel not text": (
        {"host": "a", "time_us": 1, "service": "s", "version": "1", "kernel": ["6.1"]},
        RejectReason.SCHEMA,
    ),
}


def test_heartbeat_health_fields_round_trip_and_older_heartbeats_still_decode() -> None:
    """The agent's own heartbeat carries uptimes and losses by reason; a heartbeat without them
    (an older agent, or a service's) decodes as before, with them unknown, and keeps its id."""
    full = HeartbeatRecord(
        "web-1",
        1_700_000_000_000_000,
        "corecensus-agent",
        "0.1.0",
        uptime_s=86_400,
        agent_uptime_s=300,
        lost={"spool_full": 3, "rejected:schema": 1, "refused:http_400": 2},
        microcode="0xd0003a5",
        kernel="6.1.0-13-amd64",
    )
    old = {"host": "web-1", "time_us": 1, "service": "api", "version": "2.1"}
    batch = roundtrip(RecordKind.HEARTBEATS, [full], ContentEncoding.ZSTD)
    assert [r.value for r in batch.records] == [full]
    assert batch.records[0].record_id == dataclasses.replace(full, lost=None).record_id
    assert batch.records[0].record_id == (
        dataclasses.replace(full, microcode=None, kernel=None).record_id
    )
    older = decode_batch(
        RecordKind.HEARTBEATS, {"schema_version": 1, "kind": "heartbeats", "records": [old]}
    )
    assert older.problems == ()
    value = older.records[0].value
    assert (value.uptime_s, value.agent_uptime_s, value.lost) == (None, None, None)
    assert (value.microcode, value.kernel) == (None, None)
    assert value.to_json() == old  # nothing added on the way out either
    nothing_lost = dataclasses.replace(full, lost={})
    (got,) = roundtrip(RecordKind.HEARTBEATS, [nothing_lost], ContentEncoding.GZIP).records
    assert got.value.lost == {}  # "none lost" is not "unknown"


@pytest.mark.parametrize("case", sorted(BAD_HEARTBEATS))
def test_a_bad_heartbeat_is_refused(case: str) -> None:
    bad, reason = BAD_HEARTBEATS[case]
    good = HeartbeatRecord("a", 1, "s", "1").to_json()
    body = {"schema_version": 1, "kind": "heartbeats", "records": [good, bad]}
    batch = decode_batch(RecordKind.HEARTBEATS, body)
    assert [p.index for p in batch.problems] == [1]
    assert batch.problems[0].reason is reason
    assert [r.index for r in batch.records] == [0]


def test_a_bad_screen_is_refused_and_a_good_one_kept(real_screen: ScreenResult) -> None:
    good = real_screen.to_json()
    bad_mode = copy.deepcopy(good)
    bad_mode["mode"] = "sometimes"
    bad_host = copy.deepcopy(good)
    bad_host["host"] = ""
    not_screen = copy.deepcopy(good)
    not_screen["kind"] = "crash"
    body = {
        "schema_version": 1,
        "kind": "screenings",
        "records": [good, bad_mode, bad_host, not_screen],
    }
    batch = decode_batch(RecordKind.SCREENINGS, body)
    assert [r.index for r in batch.records] == [0]
    assert [(p.index, p.reason) for p in batch.problems] == [
        (1, RejectReason.SCHEMA),
        (2, RejectReason.HOST),
        (3, RejectReason.SCHEMA),
    ]


# --- whole bodies that are not batches ---------------------------------------------------------

BAD_ENVELOPES = {
    "a list": ([], WireErrorReason.BAD_ENVELOPE),
    "no records": ({"schema_version": 1, "kind": "crashes"}, WireErrorReason.BAD_ENVELOPE),
    "records not a list": (
        {"schema_version": 1, "kind": "crashes", "records": {}},
        WireErrorReason.BAD_ENVELOPE,
    ),
    "extra field": (
        {"schema_version": 1, "kind": "crashes", "records": [], "x": 1},
        WireErrorReason.BAD_ENVELOPE,
    ),
    "future schema": (
        {"schema_version": 2, "kind": "crashes", "records": []},
        WireErrorReason.SCHEMA_VERSION,
    ),
    "schema as true": (
        {"schema_version": True, "kind": "crashes", "records": []},
        WireErrorReason.SCHEMA_VERSION,
    ),
    "no schema": ({"kind": "crashes", "records": []}, WireErrorReason.SCHEMA_VERSION),
    "wrong kind": (
        {"schema_version": 1, "kind": "heartbeats", "records": []},
        WireErrorReason.WRONG_KIND,
    ),
    "too many records": (
        {"schema_version": 1, "kind": "crashes", "records": [{}] * 2001},
        WireErrorReason.TOO_MANY_RECORDS,
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ENVELOPES))
def test_a_body_that_is_not_a_batch_is_a_wire_error(case: str) -> None:
    body, reason = BAD_ENVELOPES[case]
    with pytest.raises(WireError) as err:
        decode_batch(RecordKind.CRASHES, body)
    assert err.value.reason is reason


def test_an_empty_batch_is_a_batch() -> None:
    batch = decode_batch(
        RecordKind.CRASHES, {"schema_version": 1, "kind": "crashes", "records": []}
    )
    assert batch.records == () and batch.problems == () and batch.size == 0


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"\xff\xfe{}", "UTF-8"),
        (b'{"schema_version": 1,', "not JSON"),
        (b'{"x": NaN}', "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    ],
)
def test_bodies_that_are_not_json(raw: bytes, words: str) -> None:
    with pytest.raises(WireError) as err:
        decode_body(raw)
    assert err.value.reason is WireErrorReason.NOT_JSON
    assert words in str(err.value)


def test_unsupported_and_corrupt_encodings() -> None:
    body = encode_batch(RecordKind.HEARTBEATS, [HeartbeatRecord("a", 1, "s", "1")])
    with pytest.raises(WireError) as err:
        decompress(body, "br", 1 << 20)
    assert err.value.reason is WireErrorReason.UNSUPPORTED_ENCODING
    for encoding in (ContentEncoding.GZIP, ContentEncoding.ZSTD):
        packed = compress(body, encoding)
        for broken in (packed[: len(packed) // 2], b"garbage" + packed, body):
            with pytest.raises(WireError) as err:
                decompress(broken, str(encoding), 1 << 20)
            assert err.value.reason is WireErrorReason.CORRUPT_BODY, (encoding, broken[:10])
    # A gzip body with bytes after its end is refused rather than half read.
    with pytest.raises(WireError):
        decompress(compress(body, ContentEncoding.GZIP) + b"tail", "gzip", 1 << 20)


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_a_compression_bomb_stops_at_the_limit(encoding: str) -> None:
    zeros = b"\0" * (64 << 20)
    bomb = gzip.compress(zeros) if encoding == "gzip" else zstandard.compress(zeros)
    assert len(bomb) < 1 << 20
    with pytest.raises(WireError) as err:
        decompress(bomb, encoding, 1 << 20)
    assert err.value.reason is WireErrorReason.BODY_TOO_LARGE
    # Under a limit it fits, the same body decompresses whole.
    assert len(decompress(bomb, encoding, 65 << 20)) == 64 << 20


def _answer(decode: Callable[[], bytes]) -> bytes | tuple[WireErrorReason, str]:
    try:
        return decode()
    except WireError as exc:
        return exc.reason, exc.detail
    except zstandard.ZstdError as exc:
        return WireErrorReason.CORRUPT_BODY, f"zstd body: {exc}"


def test_zstd_in_one_pass_answers_as_the_two_passes_do() -> None:
    """A zstd body whose frame says its size is decompressed in one pass; every other body,
    and one the pass fails on, gets the two passes' answer, word for word."""
    plain = encode_batch(
        RecordKind.HEARTBEATS, [HeartbeatRecord("a", i, "s", "1") for i in range(40)]
    )
    packed = zstandard.ZstdCompressor(level=3).compress(plain)
    assert zstandard.get_frame_parameters(packed).content_size == len(plain)

    def lying(size: int) -> bytes:
        # The frame header's content size (single segment, two bytes: size - 256) changed.
        small = zstandard.ZstdCompressor(level=3).compress(b"a" * 1000)
        assert small[4] & 0xE0 == 0x60 and int.from_bytes(small[5:7], "little") == 1000 - 256
        forged = small[:5] + (size - 256).to_bytes(2, "little") + small[7:]
        assert zstandard.get_frame_parameters(forged).content_size == size
        return forged

    unsized = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(plain)
    bodies = {
        "whole": packed,
        "truncated": packed[:-3],
        "trailed": packed + b"x",
        "two frames": packed + packed,
        "size not written": unsized,
        "empty": zstandard.ZstdCompressor().compress(b""),
        "says less than it holds": lying(900),
        "says more than it holds": lying(1100),
        "garbage": b"garbage" + packed,
        "header only": packed[:6],
    }
    for limit in (len(plain), len(plain) - 1, 1 << 20):
        for name, body in bodies.items():
            one = _answer(partial(decompress, body, "zstd", limit))
            two = _answer(partial(_zstd_in_two_passes, body, limit))
            assert one == two, (name, limit)
    # The rule must fire: a whole sized frame is answered by the one pass alone.
    assert _zstd_in_one_pass(packed, len(plain)) == plain
    assert _zstd_in_one_pass(packed, len(plain) - 1) is None
    assert _zstd_in_one_pass(unsized, 1 << 20) is None


def test_identity_over_the_limit_and_case_insensitive_encoding_names() -> None:
    with pytest.raises(WireError) as err:
        decompress(b"x" * 11, None, 10)
    assert err.value.reason is WireErrorReason.BODY_TOO_LARGE
    assert decompress(b"x" * 10, "", 10) == b"x" * 10
    assert decompress(compress(b"abc", ContentEncoding.GZIP), " GZip ", 10) == b"abc"


def test_ack_round_trips_and_a_malformed_ack_is_a_wire_error() -> None:
    ack = BatchAck(3, (RecordProblem(2, RejectReason.HOST, "no host"),))
    assert BatchAck.from_json(json.loads(json.dumps(ack.to_json()))) == ack
    with pytest.raises(WireError):
        BatchAck.from_json({"accepted": "many"})


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=30,
    )
)
def test_any_json_record_is_decoded_or_refused_never_raises(raw: Any) -> None:
    for kind in RecordKind:
        body = {"schema_version": 1, "kind": str(kind), "records": [raw]}
        batch = decode_batch(kind, body)
        assert len(batch.records) + len(batch.problems) == 1


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(sorted(make_record(1).to_json())),
    st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.lists(st.integers()),
)
def test_any_field_of_a_crash_record_replaced_is_decoded_or_refused(name: str, value: Any) -> None:
    rec = _crash_json()
    rec[name] = value
    body = {"schema_version": 1, "kind": "crashes", "records": [rec]}
    batch = decode_batch(RecordKind.CRASHES, body)
    assert len(batch.records) + len(batch.problems) == 1
    for good in batch.records:
        # Whatever was accepted becomes a record that serializes back to the same JSON.
        assert good.value.to_json()[name] == CrashRecord.from_json(rec).to_json()[name]


def test_the_wire_module_needs_neither_duckdb_nor_drgn() -> None:
    code = (
        "import sys, corecensus.ingest.wire\n"
        "heavy = {'duckdb', 'drgn', '_drgn', 'capstone', 'numpy', 'scipy'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_record_with_signal_frames_and_scanned_frames_round_trips() -> None:
    """The signal_race sample (a live signal frame with function, module and offsets) and the
    return_to_null sample (frames scanned above pc 0, each with its trust) go through the wire
    as inspect produced them."""
    records = []
    for name in ("signal_race", "return_to_null"):
        rec = inspect_core(SAMPLES / name / "core.zst", binaries=[SAMPLES / name])
        meta = {**rec.metadata, "COREDUMP_HOSTNAME": "web-1"}
        records.append(dataclasses.replace(rec, metadata=meta))
    assert records[0].signal_frames and records[0].signal_frames[0].module is not None
    assert any(f.trust is not None and f.recovered for f in records[1].frames)
    decoded = decode_batch(
        RecordKind.CRASHES, decode_body(encode_batch(RecordKind.CRASHES, records))
    )
    assert decoded.problems == ()
    assert [r.value for r in decoded.records] == records
