"""Reading exposure.csv and deploys.csv (streamed into the epidemiology's tables): values,
optional and unknown columns, and one-line errors naming file:line."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from corecensus.errors import MetadataError
from corecensus.ingest.tables import read_deploys, read_exposure

GOOD_EXPOSURE = (
    "host,start,end,service,version,cpu_model\n"
    "a,2024-01-01T00:00:00Z,2024-01-01T12:00:00Z,api,1,x\n"
    "a,2024-01-01T12:00:00+00:00,2024-01-02T00:00:00Z,api,2,x\n"
    "b,2024-01-01T00:00:00,2024-01-02T00:00:00,api,1,\n"
)


def test_exposure_csv_from_stream_and_path(tmp_path: Path) -> None:
    e = read_exposure(io.StringIO(GOOD_EXPOSURE))
    assert e.host.vocab == ("a", "b")
    assert e.hours.tolist() == [12.0, 12.0, 24.0]
    assert e.version.vocab == ("1", "2") and e.cpu_model.codes.tolist() == [0, 0, -1]
    path = tmp_path / "exposure.csv"
    path.write_text(GOOD_EXPOSURE)
    assert read_exposure(path).hours.tolist() == e.hours.tolist()


def test_exposure_processes_column_and_unknown_columns() -> None:
    text = (
        "host,start,end,service,version,cpu_model,processes,rack\n"
        "a,2024-01-01T00:00:00Z,2024-01-01T02:00:00Z,api,1,x,4,r1\n"
        "\n"
        "b,2024-01-01T00:00:00Z,2024-01-01T02:00:00Z,api,1,x,,r2\n"
    )
    assert read_exposure(io.StringIO(text)).hours.tolist() == [8.0, 2.0]


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
        read_exposure(path)
    assert f"{path}{where}" in str(info.value)


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="cannot read"):
        read_exposure(tmp_path / "missing.csv")
    bad = tmp_path / "deploys.csv"
    bad.write_bytes(b"time,service,version\n\xff\xfe\n")
    with pytest.raises(MetadataError, match="not UTF-8"):
        read_deploys(bad)


def test_deploys_csv_and_errors() -> None:
    d = read_deploys(io.StringIO("time,service,version\n2024-01-15T00:00:00Z,api,2\n"))
    assert d.time_us.tolist() == [1_705_276_800_000_000]
    assert d.service.vocab == ("api",) and d.version.vocab == ("2",)
    stream = io.StringIO("time,service,version\n2024-01-15T00:00:00Z,api,\n")
    stream.name = "deploys.csv"
    with pytest.raises(MetadataError, match=r"deploys\.csv:2: empty 'version'"):
        read_deploys(stream)
    with pytest.raises(MetadataError, match="header lacks"):
        read_deploys(io.StringIO("when,service,version\n"))


def test_columns_in_any_order_and_a_bad_byte_late_in_a_long_file(tmp_path: Path) -> None:
    text = "cpu_model,version,service,end,start,host\nx,1,api,2024-01-01T03:00:00Z,2024-01-01,a\n"
    e = read_exposure(io.StringIO(text))
    assert e.host.vocab == ("a",) and e.hours.tolist() == [3.0] and e.cpu_model.vocab == ("x",)
    # the file is streamed: a bad byte after many good rows is still one line of error
    path = tmp_path / "exposure.csv"
    row = b"a,2024-01-01T00:00:00Z,2024-01-01T01:00:00Z,api,1,x\n"
    path.write_bytes(GOOD_EXPOSURE.encode() + row * 50_000 + b"\xff\n")
    with pytest.raises(MetadataError, match="not UTF-8") as info:
        read_exposure(path)
    assert str(info.value).startswith(str(path))
