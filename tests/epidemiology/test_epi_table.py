"""Crash, exposure and deploy tables: constructors, validation, CSV readers and their errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from corecensus.epidemiology import CrashTable, Deploys, ExposureTable
from corecensus.epidemiology.table import anomaly_mask_of, parse_time_us
from corecensus.errors import MetadataError
from corecensus.model import ANOMALY_NAMES

GOOD_EXPOSURE = (
    "host,start,end,service,version,cpu_model\n"
    "a,2024-01-01T00:00:00Z,2024-01-01T12:00:00Z,api,1,x\n"
    "a,2024-01-01T12:00:00+00:00,2024-01-02T00:00:00Z,api,2,x\n"
    "b,2024-01-01T00:00:00,2024-01-02T00:00:00,api,1,\n"
)


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
    assert t.hosts == ("a", "b")
    assert [t.hosts[h] for h in t.host] == ["b", "a"]
    assert t.cpu.tolist() == [3, -1]
    assert t.version.tolist() == [0, -1] and t.versions == ("2",)
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
    base = {"time_us": np.array([1, 2]), "hosts": ("a",), "populations": ("p",)}
    with pytest.raises(MetadataError, match="outside"):
        CrashTable.from_arrays(host=np.array([0, 1]), population=np.array([0, 0]), **base)
    with pytest.raises(MetadataError, match="differ in length"):
        CrashTable.from_arrays(host=np.array([0]), population=np.array([0, 0]), **base)
    with pytest.raises(MetadataError, match="anomaly_mask"):
        CrashTable.from_arrays(
            host=np.array([0, 0]), population=np.array([0, 0]), anomaly_mask=[0, 1 << 12], **base
        )
    with pytest.raises(MetadataError, match="host_cpus"):
        CrashTable.from_arrays(
            host=np.array([0, 0]), population=np.array([0, 0]), host_cpus=[4, 4], **base
        )
    ok = CrashTable.from_arrays(host=np.array([0, 0]), population=np.array([0, 0]), **base)
    assert len(ok) == 2 and ok.cpu.tolist() == [-1, -1] and ok.host.dtype == np.int32


def test_anomaly_mask_of() -> None:
    assert anomaly_mask_of([]) == 0
    assert anomaly_mask_of(["pc_zero"]) == 1
    with pytest.raises(MetadataError):
        anomaly_mask_of(["sp_off_by_9"])


def test_exposure_csv_from_stream_and_path(tmp_path: Path) -> None:
    e = ExposureTable.read_csv(io.StringIO(GOOD_EXPOSURE))
    assert e.hosts == ("a", "b")
    assert e.hours.tolist() == [12.0, 12.0, 24.0]
    assert e.versions == ("1", "2") and e.cpu_model.tolist() == [0, 0, -1]
    path = tmp_path / "exposure.csv"
    path.write_text(GOOD_EXPOSURE)
    assert ExposureTable.read_csv(path).hours.tolist() == e.hours.tolist()


def test_exposure_processes_column_and_unknown_columns() -> None:
    text = (
        "host,start,end,service,version,cpu_model,processes,rack\n"
        "a,2024-01-01T00:00:00Z,2024-01-01T02:00:00Z,api,1,x,4,r1\n"
        "\n"
        "b,2024-01-01T00:00:00Z,2024-01-01T02:00:00Z,api,1,x,,r2\n"
    )
    assert ExposureTable.read_csv(io.StringIO(text)).hours.tolist() == [8.0, 2.0]


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("", ":1:", "empty file"),
        ("host,start,end,service,version\n", ":1:", "cpu_model"),
        (
            "host,start,end,service,version,cpu_model\na,2024-01-01,2024-01-02,api,1\n",
            ":2:",
            "5 fields",
        ),
        (
            "host,start,end,service,version,cpu_model\na,2024-01-01,2024-01-02,api,1,x\n"
            "b,soon,2024-01-02,api,1,x\n",
            ":3:",
            "not an ISO-8601 time",
        ),
        (
            "host,start,end,service,version,cpu_model\na,2024-01-02,2024-01-01,api,1,x\n",
            ":2:",
            "before",
        ),
        (
            "host,start,end,service,version,cpu_model\n,2024-01-01,2024-01-02,api,1,x\n",
            ":2:",
            "empty 'host'",
        ),
        (
            "host,start,end,service,version,cpu_model,processes\n"
            "a,2024-01-01,2024-01-02,api,1,x,many\n",
            ":2:",
            "not a number",
        ),
        (
            "host,start,end,service,version,cpu_model,processes\n"
            "a,2024-01-01,2024-01-02,api,1,x,-1\n",
            ":2:",
            ">= 0",
        ),
    ],
)
def test_malformed_exposure_names_file_and_line(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    path = tmp_path / "exposure.csv"
    path.write_text(text)
    with pytest.raises(MetadataError, match=message) as info:
        ExposureTable.read_csv(path)
    assert f"{path}{where}" in str(info.value)


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="cannot read"):
        ExposureTable.read_csv(tmp_path / "missing.csv")
    bad = tmp_path / "deploys.csv"
    bad.write_bytes(b"time,service,version\n\xff\xfe\n")
    with pytest.raises(MetadataError, match="not UTF-8"):
        Deploys.read_csv(bad)


def test_deploys_csv_and_errors() -> None:
    d = Deploys.read_csv(io.StringIO("time,service,version\n2024-01-15T00:00:00Z,api,2\n"))
    assert d.time_us.tolist() == [1_705_276_800_000_000]
    assert d.services == ("api",) and d.versions == ("2",)
    stream = io.StringIO("time,service,version\n2024-01-15T00:00:00Z,api,\n")
    stream.name = "deploys.csv"
    with pytest.raises(MetadataError, match=r"deploys\.csv:2: empty 'version'"):
        Deploys.read_csv(stream)
    with pytest.raises(MetadataError, match="header lacks"):
        Deploys.read_csv(io.StringIO("when,service,version\n"))


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
    assert d.service.tolist() == [-1] and d.versions == ("7",)
