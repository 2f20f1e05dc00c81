"""Metadata and tables from outside, as an adversary writes them (issue 10, second round): JSON
numbers CPython will not convert, byte order marks, wrong Parquet types, one-line files of
megabytes. Each once ended in a traceback with nothing stored, or lost the metadata or a
column without a word. Real kernel cores, real files, a real DuckDB store; each case asserts on
what the user sees and on what is stored."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from corecensus.cli.main import main
from crashers import CrashResult

BIG = "1" * 5000  # past CPython's 4,300-digit limit on int(): json.loads raises a bare ValueError
CRASH_HEADER = (
    "host,time,cpu,cpus_allowed,host_cpus,cpu_core,service,version,signature,frames,anomalies,"
    "cpu_model,microcode,kernel"
)
BOM = "\ufeff"


def _cores(kernel_cores: dict[str, CrashResult], into: Path, names: tuple[str, ...]) -> list[Path]:
    into.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        core = kernel_cores[name].core
        assert core is not None
        out.append(Path(shutil.copy(core, into / f"core.{name}")))
    return out


def _meta(record: dict[str, object]) -> dict[str, str]:
    meta = record["metadata"]
    assert isinstance(meta, dict)
    return meta


def _records(db: Path) -> dict[str, dict[str, object]]:
    """Stored records by the core's file name."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT record_json FROM crashes").fetchall()
    finally:
        con.close()
    records = [json.loads(r) for (r,) in rows]
    return {Path(str(r["source"])).name: r for r in records}


@pytest.mark.kernel_cores
def test_json_numbers_of_thousands_of_digits_cost_nothing(
    kernel_cores: dict[str, CrashResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 5,000-digit number in a sidecar, in a journal line and in a stray .json beside the
    cores: each once ended the ingest in a traceback with nothing stored. Now every core is
    stored and each file's problem is one line naming it."""
    a, b, c = _cores(kernel_cores, tmp_path / "cores", ("null_deref", "abort", "sigfpe"))
    Path(f"{a}.json").write_text(f'{{"COREDUMP_HOSTNAME": "ha", "COREDUMP_PID": {BIG}}}')
    (tmp_path / "cores" / "stray.json").write_text(f"[{BIG}]")
    journal = tmp_path / "journal.json"
    good = {"COREDUMP_FILENAME": str(c), "COREDUMP_HOSTNAME": "hc"}
    journal.write_text(
        json.dumps({"COREDUMP_FILENAME": str(b), "COREDUMP_HOSTNAME": "hb"})[:-1]
        + f', "COREDUMP_PID": {BIG}}}\n'
        + json.dumps(good)
        + "\n"
    )
    db = tmp_path / "s.duckdb"
    args = ["ingest", "--no-symbols", "--json", "--db", str(db), "--journal", str(journal)]
    assert main([*args, str(tmp_path / "cores")]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    summary = json.loads(out.out)
    assert summary["ingested"] == 3, summary
    assert any(
        e.endswith("journal.json:1: not JSON: a number of 5000 digits (at most 4300 are read)")
        for e in summary["journal_errors"]
    ), summary["journal_errors"]
    assert any(
        "stray.json: not JSON we read: a number of 5000" in e for e in summary["screen_errors"]
    )
    records = _records(db)
    assert any(
        "core.null_deref.json: not JSON we read: a number of 5000 digits" in e
        for e in records["core.null_deref"]["errors"]  # type: ignore[union-attr]
    ), records["core.null_deref"]["errors"]
    # The journal's good line still applies; the bad line's core is stored without it.
    assert _meta(records["core.sigfpe"])["COREDUMP_HOSTNAME"] == "hc"
    assert "COREDUMP_HOSTNAME" not in _meta(records["core.abort"])


@pytest.mark.kernel_cores
def test_a_sidecar_with_a_byte_order_mark_is_read(
    kernel_cores: dict[str, CrashResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Notepad and PowerShell begin UTF-8 files with a BOM; RFC 8259 lets a parser ignore it.
    The sidecar was refused whole ("Unexpected UTF-8 BOM") and its host lost, while a journal
    export with one was read. A sidecar without one is read the same (the rule must not fire)."""
    a, b = _cores(kernel_cores, tmp_path / "cores", ("null_deref", "abort"))
    Path(f"{a}.json").write_bytes(b'\xef\xbb\xbf{"COREDUMP_HOSTNAME": "with-bom"}')
    Path(f"{b}.json").write_bytes(b'{"COREDUMP_HOSTNAME": "without"}')
    db = tmp_path / "s.duckdb"
    assert main(["ingest", "--no-symbols", "--json", "--db", str(db), str(tmp_path / "cores")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ingested"] == 2 and summary["screen_errors"] == [], summary
    records = _records(db)
    assert _meta(records["core.null_deref"]).get("COREDUMP_HOSTNAME") == "with-bom", records[
        "core.null_deref"
    ]["errors"]
    assert records["core.null_deref"]["errors"] == []
    assert _meta(records["core.abort"]).get("COREDUMP_HOSTNAME") == "without"


@pytest.mark.kernel_cores
def test_journal_values_dropped_as_malformed_are_on_the_record(
    kernel_cores: dict[str, CrashResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A sidecar's malformed value is a problem on its crash's record; the same value from a
    journal export was only in the batch summary, so the stored crash said nothing of it."""
    (a,) = _cores(kernel_cores, tmp_path / "cores", ("null_deref",))
    journal = tmp_path / "journal.json"
    entry = {"COREDUMP_FILENAME": str(a), "COREDUMP_HOSTNAME": "h", "CORECENSUS_CPU": "2147483647"}
    journal.write_text(json.dumps(entry) + "\n")
    db = tmp_path / "s.duckdb"
    args = ["ingest", "--no-symbols", "--json", "--db", str(db), "--journal", str(journal)]
    assert main([*args, str(tmp_path / "cores")]) == 0
    summary = json.loads(capsys.readouterr().out)
    rec = _records(db)["core.null_deref"]
    expected = "CORECENSUS_CPU: malformed value '2147483647' (out of range: 0 to 8191)"
    assert any(expected in e for e in summary["journal_errors"])
    assert any(expected in e for e in rec["errors"]), rec["errors"]  # type: ignore[union-attr]
    assert _meta(rec)["COREDUMP_HOSTNAME"] == "h" and "CORECENSUS_CPU" not in _meta(rec)


def _analyze(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object], str]:
    rc = main(["analyze", "--json", *args])
    out = capsys.readouterr()
    return rc, (json.loads(out.out) if rc == 0 else {}), out.err


def test_csv_files_with_a_byte_order_mark_and_crlf_are_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Excel's "CSV UTF-8" writes a BOM and CRLF: the first column was not found ("lacks
    column(s) host") in crash facts, exposure and deploys alike."""
    rows = [
        "h1,2024-06-01T00:00:00Z,1,0-3,4,1,s,1,sigA,,,m,,",
        "h2,2024-06-01T01:00:00Z,2,,,,s,1,sigA,,,m,,",
    ]
    crashes = tmp_path / "crashes.csv"
    crashes.write_text(BOM + "\r\n".join([CRASH_HEADER, *rows]) + "\r\n", newline="")
    exposure = tmp_path / "exposure.csv"
    exposure.write_text(
        BOM + "host,start,end,service,version,cpu_model\r\n"
        "h1,2024-05-31T00:00:00Z,2024-06-02T00:00:00Z,s,1,m\r\n"
        "h2,2024-05-31T00:00:00Z,2024-06-02T00:00:00Z,s,1,m\r\n",
        newline="",
    )
    deploys = tmp_path / "deploys.csv"
    deploys.write_text(BOM + "time,service,version\r\n2024-05-31T00:00:00Z,s,1\r\n", newline="")
    rc, doc, err = _analyze(
        capsys, "--crashes", str(crashes), "--exposure", str(exposure), "--deploys", str(deploys)
    )
    assert rc == 0, err
    populations = doc["populations"]
    assert isinstance(populations, list) and sum(p["crashes"] for p in populations) == 2
    # Each file's header was found (a BOM once hid the first column: an error, exit 2), and
    # the exposure is in use.
    assert doc["rates_available"] is True


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (f"h1,2024-06-01T00:00:00Z,{BIG},,,,s,1,sigA,,,m,,", "'cpu' out of range: '1111111"),
        ("h1,2024-06-01T00:00:00Z,\u0663,,,,s,1,sigA,,,m,,", "'cpu' is not a non-negative integer"),
        ("h1,2024-06-01T00:00:00Z,1,,,,s,1,sig" + "A" * (5 << 20) + ",,,m,,", "longer than"),
        ("h1," + "9" * 30 + ",1,,,,s,1,sigA,,,m,,", "'time' out of range: '999999"),
        ("h1,\u0661\u0667" + "\u0660" * 14 + ",1,,,,s,1,sigA,,,m,,", "neither ISO-8601 nor"),
    ],
    ids=["5000-digit cpu", "arabic-indic digit", "5 MiB line", "30-digit time", "arabic time"],
)
def test_hostile_crash_fact_values_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], row: str, message: str
) -> None:
    """A 5,000-digit cpu was a traceback (int() refuses past 4,300 digits), a 30-digit time
    another (an int64 overflow); "\u0663" passed str.isdigit() and was read as CPU 3, and
    Arabic-Indic digits as a time; a one-line file is refused before it is read whole."""
    crashes = tmp_path / "crashes.csv"
    crashes.write_text(f"{CRASH_HEADER}\n{row}\n")
    rc, _doc, err = _analyze(capsys, "--crashes", str(crashes))
    assert rc == 2
    assert message in err and "Traceback" not in err, err[:500]
    assert len(err.strip().splitlines()) == 1 and len(err) < 1100


def test_parquet_columns_of_the_wrong_type_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A list, struct or blob column read as its Python spelling: "[1, 2, 3]" became a
    population. Text and numbers are read (the rule must not fire on them)."""
    con = duckdb.connect()
    good = tmp_path / "good.parquet"
    con.execute(
        "COPY (SELECT 'h1' AS host, TIMESTAMP '2024-06-01 00:00:00' AS time, 3 AS cpu, "
        f"'s' AS service, '1' AS version, 'sigA' AS signature) TO '{good}'"
    )
    rc, doc, err = _analyze(capsys, "--crashes", str(good))
    assert rc == 0, err
    assert [p["signature"] for p in doc["populations"]] == ["sigA"]  # type: ignore[union-attr]
    for kind, sql in (("list", "[1, 2, 3]"), ("dict", "{'a': 1}"), ("bytes", "'x'::BLOB")):
        bad = tmp_path / f"{kind}.parquet"
        con.execute(
            "COPY (SELECT 'h1' AS host, TIMESTAMP '2024-06-01 00:00:00' AS time, 3 AS cpu, "
            f"'s' AS service, '1' AS version, {sql} AS signature) TO '{bad}'"
        )
        rc, _doc, err = _analyze(capsys, "--crashes", str(bad))
        assert rc == 2, kind
        assert f"{bad.name}:1: 'signature' holds a {kind}, not text or a number" in err, err


def test_exposure_processes_that_are_not_finite_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crashes = tmp_path / "crashes.csv"
    crashes.write_text(f"{CRASH_HEADER}\nh1,2024-06-01T00:00:00Z,1,,,,s,1,sigA,,,m,,\n")
    exposure = tmp_path / "exposure.csv"
    exposure.write_text(
        "host,start,end,service,version,cpu_model,processes\n"
        f"h1,2024-05-31T00:00:00Z,2024-06-02T00:00:00Z,s,1,m,{BIG}\n"
    )
    rc, _doc, err = _analyze(capsys, "--crashes", str(crashes), "--exposure", str(exposure))
    assert rc == 2
    assert "'processes' must be a finite number >= 0, not '1111" in err, err
    assert len(err) < 300


def test_an_error_quoting_megabytes_stays_one_readable_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 5,000-character time was quoted whole: one "line" of 80 terminal rows."""
    crashes = tmp_path / "crashes.csv"
    crashes.write_text(f"{CRASH_HEADER}\nh1,2024-06-01T00:00:00Z,1,,,,s,1,sigA,,,m,,\n")
    exposure = tmp_path / "exposure.csv"
    exposure.write_text(
        f"host,start,end,service,version,cpu_model\nh1,{'9' * 5000},2024-06-02T00:00:00Z,s,1,m\n"
    )
    rc, _doc, err = _analyze(capsys, "--crashes", str(crashes), "--exposure", str(exposure))
    assert rc == 2
    assert "exposure.csv:2: 'start' is not an ISO-8601 time" in err
    assert "characters in all)" in err and len(err) < 1100, len(err)


def test_golden_values_with_a_huge_number_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    golden = tmp_path / "golden.json"
    golden.write_text(f'{{"format": {BIG}}}')
    assert main(["screen", "--cpus", "0", "--rounds", "1", "--golden", str(golden)]) == 1
    err = capsys.readouterr().err
    assert "golden values are not JSON we read: a number of 5000 digits" in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.kernel_cores
def test_a_large_journal_export_is_indexed_lightly_and_matched_whole(
    kernel_cores: dict[str, CrashResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The index keeps what an entry is matched by and where its line is (an export of 200,000
    entries once held every field of every entry: 600 MB; bench/hostile_bench.py measures it);
    a match reads the entry's line again, every field. Bad lines past the first 1,000 are
    counted, not listed one by one, and the summary says how many it does not show."""
    from corecensus.ingest.journal import MAX_ERRORS_LISTED

    a, b = _cores(kernel_cores, tmp_path / "cores", ("null_deref", "abort"))
    journal = tmp_path / "journal.json"
    with journal.open("w") as f:
        f.write("not json\n" * (MAX_ERRORS_LISTED + 500))
        for i in range(3000):  # entries of other crashes, the haystack
            f.write(json.dumps({"COREDUMP_FILENAME": f"/x/core.{i}", "COREDUMP_PID": str(i)}))
            f.write("\n")
        f.write(
            json.dumps(
                {
                    "COREDUMP_FILENAME": str(a),
                    "COREDUMP_HOSTNAME": "ha",
                    "COREDUMP_CMDLINE": "svc --flag",
                    "COREDUMP_UNIT": "svc.service",
                }
            )
        )
        f.write("\n")
    Path(f"{b}.json").write_text('{"COREDUMP_PID": "1234", "COREDUMP_TIMESTAMP": "1000000"}')
    with journal.open("a") as f:  # matched by pid and time (the hints of b's sidecar)
        f.write(
            json.dumps(
                {"COREDUMP_PID": "1234", "COREDUMP_TIMESTAMP": "1000001", "COREDUMP_HOSTNAME": "hb"}
            )
            + "\n"
        )
    db = tmp_path / "s.duckdb"
    args = ["ingest", "--no-symbols", "--json", "--db", str(db), "--journal", str(journal)]
    assert main([*args, str(tmp_path / "cores")]) == 0
    summary = json.loads(capsys.readouterr().out)
    errors = summary["journal_errors"]
    # The summary shows 20, and says how many more (the index listed 1,000 and counted 500).
    assert len(errors) == 21 and "journal.json:1: not JSON: Expecting value" in errors[0]
    assert errors[-1] == f"... and {MAX_ERRORS_LISTED + 500 - 20} more not listed"
    records = _records(db)
    meta_a = _meta(records["core.null_deref"])
    assert meta_a["COREDUMP_HOSTNAME"] == "ha" and meta_a["COREDUMP_UNIT"] == "svc.service"
    assert meta_a["COREDUMP_CMDLINE"] == "svc --flag"
    assert _meta(records["core.abort"])["COREDUMP_HOSTNAME"] == "hb"


@pytest.mark.kernel_cores
def test_a_busy_hosts_journal_export_gives_each_core_its_own_entry(
    kernel_cores: dict[str, CrashResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A busy host's export (50,000 lines, most of them other services' log lines, one in 50 a
    coredump entry of another crash) and three real cores ingested by two workers, to which the
    index is handed: each core gets its entry, by file name (the latest of that name) or by pid
    and the nearest time, and none gets another crash's."""
    a, b, c = _cores(kernel_cores, tmp_path / "cores", ("null_deref", "abort", "sigfpe"))
    t0 = 1_700_000_000_000_000
    hint = t0 + 100_000_000  # b's sidecar: pid 4242 at t0 + 100 s
    Path(f"{b}.json").write_text(f'{{"COREDUMP_PID": "4242", "COREDUMP_TIMESTAMP": "{hint}"}}')
    special = {
        25_000: {"COREDUMP_FILENAME": str(a), "COREDUMP_HOSTNAME": "host-a"},
        30_001: {"COREDUMP_PID": "4242", "COREDUMP_TIMESTAMP": str(hint + 300_000)},
        30_002: {"COREDUMP_PID": "4242", "COREDUMP_TIMESTAMP": str(hint - 800_000)},
        40_001: {"COREDUMP_FILENAME": f"/elsewhere/{c.name}.lz4", "COREDUMP_HOSTNAME": "host-c"},
    }
    special[30_001]["COREDUMP_HOSTNAME"] = "host-b"
    special[30_002]["COREDUMP_HOSTNAME"] = "farther-from-b"
    journal = tmp_path / "journal.json"
    with journal.open("w") as f:
        for n in range(50_000):
            line: dict[str, str] = {"MESSAGE": f"GET /item/{n} 200", "_PID": "77"}
            if n in special:
                line = special[n]
            elif n % 50 == 0:  # other crashes, 500 s apart: pid 4242 too, and c's name early on
                name = f"{c.name}.zst" if n % 1000 == 0 and n < 40_000 else f"core.{n}"
                line = {
                    "COREDUMP_PID": "4242",
                    "COREDUMP_TIMESTAMP": str(t0 + n * 10_000_000),
                    "COREDUMP_HOSTNAME": f"other-{n}",
                    "COREDUMP_FILENAME": f"/var/lib/systemd/coredump/{name}",
                }
            f.write(json.dumps(line, separators=(",", ":")) + "\n")
    db = tmp_path / "s.duckdb"
    args = ["ingest", "--no-symbols", "--json", "--jobs", "2", "--db", str(db)]
    assert main([*args, "--journal", str(journal), str(tmp_path / "cores")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ingested"] == 3 and summary["journal_errors"] == []
    hosts = {name: _meta(r).get("COREDUMP_HOSTNAME") for name, r in _records(db).items()}
    assert hosts == {a.name: "host-a", b.name: "host-b", c.name: "host-c"}
