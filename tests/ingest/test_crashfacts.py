"""Crash facts from CSV and Parquet files (DESIGN.md "Crash facts"): the columns users bring."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pytest

from corecensus.epidemiology import HostKind, analyze
from corecensus.errors import MetadataError
from corecensus.ingest.crashfacts import crash_facts_from_columns, read_crash_facts_csv
from corecensus.model import ANOMALY_NAMES
from corecensus.store.parquet import read_parquet_rows

HEADER = (
    "host,time,cpu,cpus_allowed,host_cpus,cpu_core,service,version,signature,frames,anomalies,"
    "cpu_model,microcode,kernel,extra\n"
)


def test_csv_columns_become_the_crash_table(tmp_path: Path) -> None:
    path = tmp_path / "crashes.csv"
    path.write_text(
        HEADER + "h1,2024-06-01T00:00:00Z,3,0-3,8,1,api,2,sig-a,,sp_off_by_8;bit_flip_candidate,"
        "m,0x1,6.1,x\n"
        + "h2,1717200000000000,,,,,api,,,main | foo::bar(int) | baz,,,,,\n"
        + 'h1,2024-06-02T00:00:00,5,"3,0-2",16,,api,2,sig-a,,,m,0x1,6.1,\n',
        encoding="utf-8",
    )
    t = read_crash_facts_csv(path)
    assert len(t) == 3
    assert t.host.vocab == ("h1", "h2")
    assert t.time_us[1] == 1_717_200_000_000_000
    assert t.time_us[0] == t.time_us[1]  # the same instant, ISO and µs
    assert t.cpu.tolist() == [3, -1, 5]
    assert t.cpu_core is not None and t.cpu_core.tolist() == [1, -1, -1]
    assert t.cpus_allowed is not None
    assert t.cpus_allowed.vocab == ("0-3",)  # "3,0-2" is the same set, spelled canonically
    assert t.cpus_allowed.codes.tolist() == [0, -1, 0]
    assert t.host_cpus is not None and t.host_cpus.tolist() == [16, 0]  # largest reported
    bits = (1 << ANOMALY_NAMES.index("sp_off_by_8")) | (
        1 << ANOMALY_NAMES.index("bit_flip_candidate")
    )
    assert t.anomaly_mask.tolist() == [bits, 0, 0]
    assert t.population.vocab[t.population.codes[1]] == "main | foo::bar | baz"
    assert t.service.vocab == ("api",) and t.version.vocab == ("2",)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (",2024-06-01,1,,,,,,s,,,,,,", "crashes.csv:2: empty 'host'"),
        ("h,yesterday,1,,,,,,s,,,,,,", "crashes.csv:2: 'time' is neither ISO-8601"),
        ("h,2024-06-01,-3,,,,,,s,,,,,,", "crashes.csv:2: 'cpu' is not a non-negative"),
        (
            "h,2024-06-01,1,3-1,,,,,s,,,,,,",
            "crashes.csv:2: bad CPU list '3-1': range '3-1' runs backwards",
        ),
        ("h,2024-06-01,1,,,,,,s,,no_such_anomaly,,,,", "crashes.csv:2: unknown anomaly"),
        ("h,2024-06-01,1,,,,,,,,,,,,", "crashes.csv:2: empty 'signature' and 'frames'"),
        ("h,2024-06-01,1", "crashes.csv:2: 3 fields, header has 15"),
        # seconds and milliseconds since the epoch were read as microseconds: January 1970
        (
            "h,1790000000,1,,,,,,s,,,,,,",
            "crashes.csv:2: 'time' '1790000000' read as microseconds since the epoch is "
            "1970-01-01T00:29:50Z: seconds or milliseconds? Give microseconds or ISO-8601",
        ),
        ("h,1790000000000,1,,,,,,s,,,,,,", "is 1970-01-21T17:13:20Z: seconds or milliseconds?"),
        # a time before the epoch reached the windowed host tests (an IndexError)
        ("h,-5,1,,,,,,s,,,,,,", "crashes.csv:2: 'time' '-5' read as microseconds since the "),
        (
            "h,1969-12-31T23:59:59Z,1,,,,,,s,,,,,,",
            "crashes.csv:2: 'time' '1969-12-31T23:59:59Z' is before 1970-01-01, no crash time",
        ),
    ],
)
def test_bad_rows_are_one_line_errors_naming_file_and_line(
    tmp_path: Path, row: str, message: str
) -> None:
    path = tmp_path / "crashes.csv"
    path.write_text(HEADER + row + "\n", encoding="utf-8")
    with pytest.raises(MetadataError) as err:
        read_crash_facts_csv(path)
    assert str(err.value).endswith(str(err.value).splitlines()[0])  # one line
    assert message in str(err.value)


def test_missing_required_columns(tmp_path: Path) -> None:
    path = tmp_path / "crashes.csv"
    path.write_text("host,cpu\nh,1\n", encoding="utf-8")
    with pytest.raises(MetadataError, match="lack column"):
        read_crash_facts_csv(path)
    with pytest.raises(MetadataError, match="cannot read"):
        read_crash_facts_csv(tmp_path / "absent.csv")


def test_parquet_through_duckdb_in_store(tmp_path: Path) -> None:
    """A real Parquet file (written by DuckDB, as a user's export would be) analyzed as facts:
    a 2-CPU host's pile-up is no flag, a 64-CPU host's is."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(400):
        rows.append(
            (
                f"bg{i % 50}",
                1_717_200_000_000_000 + i * 3_600_000_000,
                int(rng.integers(16)),
                "0-15",
                16,
                f"s{i % 7}",
                "",
            )
        )
    for i in range(8):
        t = 1_717_200_000_000_000 + i * 86_400_000_000
        rows.append(("small", t, i % 2, "0-1", 2, f"s{i}", ""))
        rows.append(("big", t, 9, "0-63", 64, f"s{i}", "sp_off_by_8" if i % 2 else ""))
    path = tmp_path / "facts.parquet"
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE f (host VARCHAR, time BIGINT, cpu INTEGER, cpus_allowed VARCHAR, "
        "host_cpus INTEGER, signature VARCHAR, anomalies VARCHAR)"
    )
    con.executemany("INSERT INTO f VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    con.execute(f"COPY f TO '{path}' (FORMAT parquet)")
    con.close()
    header, it = read_parquet_rows(path)
    table = crash_facts_from_columns(str(path), header, it)
    assert len(table) == len(rows)
    a = analyze(table)
    assert a.flagged_hosts(HostKind.HARDWARE) == ("big",)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(MetadataError, match="not a readable Parquet file"):
        read_parquet_rows(bad)


def test_parquet_times_in_seconds_or_before_the_epoch_are_refused(tmp_path: Path) -> None:
    """The same rules for a Parquet file's integer and timestamp columns; microseconds, ISO
    text and timestamps of any unit from 1970 on are read."""
    con = duckdb.connect()
    cases = {
        "seconds": ("BIGINT", "1790000000", "read as microseconds since the epoch is 1970"),
        "early": ("TIMESTAMP", "TIMESTAMP '1969-12-31 23:00:00'", "is before 1970-01-01"),
        "us": ("BIGINT", "1790000000000000", None),
        "ts_s": ("TIMESTAMP_S", "TIMESTAMP_S '1970-01-01 00:00:01'", None),
    }
    for name, (kind, value, message) in cases.items():
        path = tmp_path / f"{name}.parquet"
        con.execute(
            f"COPY (SELECT 'h' AS host, CAST({value} AS {kind}) AS time, 's' AS signature) "
            f"TO '{path}' (FORMAT parquet)"
        )
        header, rows = read_parquet_rows(path)
        if message is None:
            table = crash_facts_from_columns(str(path), header, rows)
            assert table.time_us.tolist() == [1_790_000_000_000_000 if name == "us" else 1_000_000]
            continue
        with pytest.raises(MetadataError, match=f"{name}.parquet:1: 'time' .*{message}"):
            crash_facts_from_columns(str(path), header, rows)
    con.close()


def test_a_crash_id_given_twice_is_refused_at_its_second_line(tmp_path: Path) -> None:
    """An export that repeats a crash (a join that fans out, a retried dump) counted it twice:
    eight copies of one crash made a host a crash loop. Rows without an id are each a crash."""
    path = tmp_path / "crashes.csv"

    def row(host: str, day: int, cid: str) -> str:
        return ",".join(
            [host, f"2024-06-0{day}T00:00:00Z", "3", "", "", "", "api", "", "s"]
            + [""] * 5
            + [cid, ""]
        )

    rows = [row("h1", 1, "")] * 2  # no crash_id: two crashes
    rows += [row(f"h{i}", i, cid) for i, cid in enumerate(["c1", "c2", "c3", "c2", "c1"], 1)]
    header = HEADER.replace("kernel,extra", "kernel,crash_id,extra")
    path.write_text(header + "\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(MetadataError) as err:
        read_crash_facts_csv(path)
    # c2 at line 7 is the first repeat in the file (c1's comes at line 8)
    assert str(err.value) == (
        f"{path}:7: crash_id 'c2' was given at 5 already: one crash twice would count as two "
        "(remove repeats)"
    )
    path.write_text(header + "\n".join(rows[:5]) + "\n", encoding="utf-8")
    table = read_crash_facts_csv(path)
    assert len(table) == 5
    assert table.crash_id is not None and list(table.crash_id) == ["", "", "c1", "c2", "c3"]

    con = duckdb.connect()
    parquet = tmp_path / "facts.parquet"
    con.execute(
        "COPY (SELECT * FROM (VALUES ('h', 1790000000000000, 's', 'x'), "
        "('h', 1790000000000001, 's', 'y'), ('h', 1790000000000002, 's', 'x')) "
        f"AS t(host, time, signature, crash_id)) TO '{parquet}' (FORMAT parquet)"
    )
    con.close()
    header_pq, it = read_parquet_rows(parquet)
    with pytest.raises(MetadataError, match=r"facts.parquet:3: crash_id 'x' was given at 1"):
        crash_facts_from_columns(str(parquet), header_pq, it)


def test_integer_columns_written_as_floats_by_pandas_are_read(tmp_path: Path) -> None:
    """pandas keeps an integer column with a missing value as floats, and a user exporting
    crashes from a DataFrame got "'cpu' is not a non-negative integer: '1.0'" at row 1: 3.0
    is 3 (CSV and Parquet), a NaN or empty value unknown; 3.5, inf and "3." still refused."""
    path = tmp_path / "crashes.csv"
    path.write_text(
        "host,time,cpu,host_cpus,cpu_core,signature\n"
        "h1,2024-06-01T00:00:00Z,3.0,16.0,1.00,s\n"
        "h1,2024-06-02T00:00:00Z,,16.0,,s\n",
        encoding="utf-8",
    )
    t = read_crash_facts_csv(path)
    assert t.cpu.tolist() == [3, -1]
    assert t.host_cpus is not None and t.host_cpus.tolist() == [16]
    assert t.cpu_core is not None and t.cpu_core.tolist() == [1, -1]
    for bad in ("3.5", "3.", ".0", "-3.0", "NaN"):
        path.write_text(f"host,time,cpu,signature\nh1,2024-06-01,{bad},s\n", encoding="utf-8")
        with pytest.raises(MetadataError, match=r"crashes\.csv:2: 'cpu' is not a non-negative"):
            read_crash_facts_csv(path)

    parquet = tmp_path / "facts.parquet"
    con = duckdb.connect()
    con.execute(
        "COPY (SELECT * FROM (VALUES ('h', 1790000000000000, 's', 3.0::DOUBLE), "
        "('h', 1790000000000001, 's', 'NaN'::DOUBLE), ('h', 1790000000000002, 's', NULL)) "
        f"AS t(host, time, signature, cpu)) TO '{parquet}' (FORMAT parquet)"
    )
    header, rows = read_parquet_rows(parquet)
    assert crash_facts_from_columns(str(parquet), header, rows).cpu.tolist() == [3, -1, -1]
    for bad in ("2.5", "'Infinity'"):
        con.execute(
            f"COPY (SELECT 'h' AS host, 1790000000000000 AS time, 's' AS signature, "
            f"{bad}::DOUBLE AS cpu) TO '{parquet}' (FORMAT parquet)"
        )
        header, rows = read_parquet_rows(parquet)
        with pytest.raises(MetadataError, match=r"facts\.parquet:1: 'cpu' is not a non-negative"):
            crash_facts_from_columns(str(parquet), header, rows)
    con.close()
