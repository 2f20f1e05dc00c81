"""Crash, exposure and deploy tables: categorical columns, constructors and validation (the CSV
readers are tested in tests/ingest/test_ingest_tables.py)."""

from __future__ import annotations

import numpy as np
import pytest

from corecensus.epidemiology import CrashTable, Deploys, ExposureTable
from corecensus.epidemiology.categorical import Categorical, CategoryEncoder
from corecensus.epidemiology.table import anomaly_mask_of, parse_time_us
from corecensus.errors import MetadataError
from corecensus.model import ANOMALY_NAMES


def test_parse_time_naive_is_utc_and_offsets_apply() -> None:
    assert parse_time_us("1970-01-01T00:00:01") == 1_000_000
    assert parse_time_us("1970-01-01T01:00:00+01:00") == 0
    assert parse_time_us("2024-01-01T00:00:00.5Z") == 1_704_067_200_500_000


def test_crash_rows_round_trip_codes_and_masks() -> None:
    t = CrashTable.from_rows(
        [
            {
                "host": "b",
                "population": "p1",
                "time": "2024-01-01T00:00:00Z",
                "cpu": 3,
                "anomalies": ["sp_off_by_8", "bit_flip_candidate"],
                "version": "2",
            },
            {"host": "a", "population": "p2", "time_us": 5, "crash_id": "x"},
        ],
        host_cpus={"a": 8},
    )
    assert t.host.vocab == ("a", "b")
    assert [t.host.vocab[h] for h in t.host.codes] == ["b", "a"]
    assert t.cpu.tolist() == [3, -1]
    assert t.version.codes.tolist() == [0, -1] and t.version.vocab == ("2",)
    bits = [ANOMALY_NAMES[i] for i in range(16) if int(t.anomaly_mask[0]) >> i & 1]
    assert sorted(bits) == ["bit_flip_candidate", "sp_off_by_8"]
    assert t.time_us.tolist() == [1_704_067_200_000_000, 5]
    assert t.crash_id is not None and t.crash_id.tolist() == ["", "x"]
    assert t.host_cpus is not None and t.host_cpus.tolist() == [8, 0]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"population": "p", "time_us": 1}, "missing 'host'"),
        ({"host": "h", "time_us": 1}, "missing 'population'"),
        ({"host": "h", "population": "p"}, "missing 'time_us' or 'time'"),
        ({"host": "h", "population": "p", "time": "yesterday"}, "bad time"),
        ({"host": "h", "population": "p", "time_us": 1, "anomalies": ["nope"]}, "unknown anomaly"),
    ],
)
def test_crash_rows_errors(row: dict[str, object], message: str) -> None:
    with pytest.raises(MetadataError, match=message):
        CrashTable.from_rows([row])


def test_from_arrays_validates_codes_lengths_and_masks() -> None:
    def cat(*codes: int, vocab: tuple[str, ...] = ("a",)) -> Categorical:
        return Categorical(np.array(codes), vocab)

    t = np.array([1, 2])
    with pytest.raises(MetadataError, match="outside"):
        CrashTable.from_arrays(time_us=t, host=cat(0, 1), population=cat(0, 0))
    with pytest.raises(MetadataError, match="unknown"):
        CrashTable.from_arrays(time_us=t, host=cat(0, -1), population=cat(0, 0))
    with pytest.raises(MetadataError, match="differ in length"):
        CrashTable.from_arrays(time_us=t, host=cat(0), population=cat(0, 0))
    with pytest.raises(MetadataError, match="anomaly_mask"):
        CrashTable.from_arrays(
            time_us=t, host=cat(0, 0), population=cat(0, 0), anomaly_mask=[0, 1 << 12]
        )
    with pytest.raises(MetadataError, match="host_cpus"):
        CrashTable.from_arrays(time_us=t, host=cat(0, 0), population=cat(0, 0), host_cpus=[4, 4])
    with pytest.raises(MetadataError, match="cpu"):
        CrashTable.from_arrays(time_us=t, host=cat(0, 0), population=cat(0, 0), cpu=[0, -2])
    ok = CrashTable.from_arrays(time_us=t, host=cat(0, 0), population=cat(0, 0))
    assert len(ok) == 2 and ok.cpu.tolist() == [-1, -1] and ok.host.codes.dtype == np.int32
    assert ok.service.codes.tolist() == [-1, -1] and ok.service.vocab == ()


def test_categorical_validates_and_encodes_with_a_sorted_vocabulary() -> None:
    c = Categorical.encode(["b", None, "a", "", "b"])
    assert c.vocab == ("a", "b") and c.codes.tolist() == [1, -1, 0, -1, 1]
    assert c.codes.dtype == np.int32 and len(c) == 5
    same = np.array([0, 1], dtype=np.int32)
    assert Categorical(same, ("x", "y")).codes is same  # int32 codes are not copied
    assert Categorical(np.array([], dtype=np.float64), ()).codes.dtype == np.int32
    with pytest.raises(MetadataError, match="outside"):
        Categorical(np.array([2]), ("x", "y"))
    with pytest.raises(MetadataError, match="outside"):
        Categorical(np.array([-2]), ("x", "y"))
    with pytest.raises(MetadataError, match="integer"):
        Categorical(np.array([0.0]), ("x",))
    with pytest.raises(MetadataError, match="integer"):
        Categorical(np.zeros((1, 1), dtype=np.int32), ("x",))
    assert Categorical.encode([]).vocab == () and len(Categorical.unknown(3).codes) == 3
    # remap: codes into another vocabulary, absent and unknown values -1
    assert c.remap(("b", "c")).tolist() == [0, -1, -1, -1, 0]


def test_fill_unknown_is_encode_with_a_name_for_unknown() -> None:
    values = ["m", None, "b", None]
    filled = Categorical.encode(values).fill_unknown("(unknown)")
    direct = Categorical.encode([v if v is not None else "(unknown)" for v in values])
    assert filled.vocab == direct.vocab == ("(unknown)", "b", "m")
    assert filled.codes.tolist() == direct.codes.tolist() == [2, 0, 1, 0]
    # a name already in the vocabulary is reused; a column without unknowns is unchanged
    assert Categorical.encode(["b", None]).fill_unknown("b").codes.tolist() == [0, 0]
    known = Categorical.encode(["a"])
    assert known.fill_unknown("z") is known
    assert Categorical.encode(["x", None]).decode() == ["x", None]


def test_category_encoder_matches_encode_in_any_arrival_order() -> None:
    values = ["k", "c", None, "a", "c", "z", "", "a"]
    enc = CategoryEncoder()
    for v in values:
        enc.add(v)
    streamed, whole = enc.finish(), Categorical.encode(values)
    assert streamed.vocab == whole.vocab == ("a", "c", "k", "z")
    assert streamed.codes.tolist() == whole.codes.tolist() == [2, 1, -1, 0, 1, 3, -1, 0]
    assert CategoryEncoder().finish().codes.size == 0


def test_anomaly_mask_of() -> None:
    assert anomaly_mask_of([]) == 0
    assert anomaly_mask_of(["pc_zero"]) == 1
    with pytest.raises(MetadataError):
        anomaly_mask_of(["sp_off_by_9"])


def test_rows_constructors_accept_datetimes_and_microseconds() -> None:
    from datetime import UTC, datetime

    e = ExposureTable.from_rows(
        [
            {
                "host": "a",
                "start": datetime(2024, 1, 1, tzinfo=UTC),
                "end": 1_704_070_800_000_000,
                "service": "api",
                "version": "1",
                "cpu_model": None,
            }
        ]
    )
    assert e.hours.tolist() == [1.0]
    d = Deploys.from_rows([{"time": "2024-01-01T00:00:00Z", "service": None, "version": "7"}])
    assert d.service.codes.tolist() == [-1] and d.version.vocab == ("7",)
