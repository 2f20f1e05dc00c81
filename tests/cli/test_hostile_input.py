"""Bad input never costs a batch (issue 10): invalid text, a full $TMPDIR, FIFOs, a stalled stdin,
terminal escapes in outside strings. Real kernel cores, real files, FIFOs and tmpfs mounts, a
real DuckDB file; each case asserts on what the user sees and on what is stored."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import zstandard

from corecensus.cli.main import main
from crashers import CrashResult

pytestmark = pytest.mark.kernel_cores

NAMES = ("null_deref", "abort", "sigfpe", "ret_sp_off_by_8")
# Safety net only, for a test whose subject is a hang: the command finishes in seconds, and a
# hang (the bug) fails the test instead of the whole suite. No assertion depends on speed.
HANG_GUARD_S = 120


def _cli(
    *args: str, stdin: int | None = subprocess.DEVNULL, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corecensus", *args],
        capture_output=True,
        text=True,
        stdin=stdin,
        timeout=HANG_GUARD_S,
        env={**os.environ, **(env or {})},
    )


def _copy_cores(
    kernel_cores: dict[str, CrashResult], into: Path, names: tuple[str, ...] = NAMES
) -> list[Path]:
    into.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        core = kernel_cores[name].core
        assert core is not None
        dst = into / f"core.{name}"
        shutil.copy(core, dst)
        out.append(dst)
    return out


def _rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


# -- invalid text ---------------------------------------------------------------------------


def test_lone_surrogates_in_sidecars_and_journal_cost_nothing(
    kernel_cores: dict[str, CrashResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ "x\\ud800y" in a sidecar and in a journal export, and a core whose file name is not
    UTF-8: every core is stored, the values are kept escaped with a note, and a re-run works
    (it once lost the whole batch, and every re-run failed the same way)."""
    cores = _copy_cores(kernel_cores, tmp_path / "cores")
    # Written as JSON text: the escape is what a hostile or broken writer produces.
    cores[0].with_name(cores[0].name + ".json").write_text(
        '{"COREDUMP_HOSTNAME": "x\\ud800y", "CORECENSUS_SERVICE": "svc\\udfff"}'
    )
    odd = cores[1].with_name(os.fsdecode(b"core.bad\xff\xfename"))
    cores[1].rename(odd)
    journal = tmp_path / "journal.json"
    entry = {
        "MESSAGE_ID": "fc2e22bc6ee647b6b90729ab34a250b1",
        "COREDUMP_FILENAME": str(cores[2]),
        "COREDUMP_PID": "4242",
        "COREDUMP_HOSTNAME": "j\\udc80k",
        "COREDUMP_COMM": "abort",
    }
    journal.write_text(json.dumps(entry).replace("j\\\\udc80k", "j\\udc80k") + "\n")
    db = tmp_path / "s.duckdb"
    args = ["ingest", str(tmp_path / "cores"), "--journal", str(journal), "--db", str(db), "--json"]
    assert main([*args, "--jobs", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["cores"] == 4 and summary["ingested"] == 4, summary
    hosts = {h for (h,) in _rows(db, "SELECT host FROM crashes")}
    assert "x\\ud800y" in hosts
    assert "j\\udc80k" in hosts
    records = [json.loads(r) for (r,) in _rows(db, "SELECT record_json FROM crashes")]
    sidecar_rec = next(r for r in records if r["metadata"].get("COREDUMP_HOSTNAME") == "x\\ud800y")
    assert sidecar_rec["metadata"]["CORECENSUS_SERVICE"] == "svc\\udfff"
    assert any("was not valid text" in e for e in sidecar_rec["errors"]), sidecar_rec["errors"]
    odd_rec = next(r for r in records if "bad" in (r["source"] or ""))
    assert odd_rec["source"].endswith("core.bad\\udcff\\udcfename")
    assert any("not valid Unicode" in e for e in odd_rec["errors"])
    # A re-run is idempotent, not a failure.
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["duplicates"] == 4 and again["ingested"] == 0
    assert _rows(db, "SELECT count(*) FROM crashes") == [(4,)]


def test_valid_text_is_left_alone(
    kernel_cores: dict[str, CrashResult], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rule must not fire on ordinary non-ASCII text."""
    cores = _copy_cores(kernel_cores, tmp_path / "cores", NAMES[:1])
    cores[0].with_name(cores[0].name + ".json").write_text(
        json.dumps({"COREDUMP_HOSTNAME": "hôte-ü-東京"}, ensure_ascii=False)
    )
    db = tmp_path / "s.duckdb"
    assert main(["ingest", str(cores[0]), "--db", str(db), "--json"]) == 0
    capsys.readouterr()
    (record_json,) = _rows(db, "SELECT record_json FROM crashes")[0]
    rec = json.loads(str(record_json))
    assert rec["metadata"]["COREDUMP_HOSTNAME"] == "hôte-ü-東京"
    assert not any("valid" in e for e in rec["errors"]), rec["errors"]


# -- a full $TMPDIR -------------------------------------------------------------------------


@contextlib.contextmanager
def _full_tmpfs(at: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs with two pages free, as $TMPDIR. Mounting needs root (CI runs as
    root); elsewhere the test skips with the reason."""
    at.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(at)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        filler = at / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as fh:
            while True:
                fh.write(bytes(4096))
                fh.flush()
        # Nearly full, not full: Python's tempfile skips a $TMPDIR where it cannot write a
        # probe file at all, so two pages stay free; a core's copy needs far more.
        os.truncate(filler, max(0, filler.stat().st_size - 8192))
        yield at
    finally:
        subprocess.run(["umount", "-l", str(at)], check=False)


def test_full_tmpdir_stores_compressed_cores_unsymbolized(
    kernel_cores: dict[str, CrashResult], tmp_path: Path
) -> None:
    """drgn reads a compressed core through a temporary copy; with $TMPDIR full (ENOSPC, a real
    full tmpfs) each core is stored unsymbolized with the reason, none is lost (0 of 73 before)."""
    cores_dir = tmp_path / "cores"
    for plain in _copy_cores(kernel_cores, cores_dir):
        zst = plain.with_name(plain.name + ".zst")
        zst.write_bytes(zstandard.ZstdCompressor(level=1).compress(plain.read_bytes()))
        plain.unlink()
    db = tmp_path / "s.duckdb"
    with _full_tmpfs(tmp_path / "tmp") as tmp:
        out = _cli(
            "ingest",
            str(cores_dir),
            "--db",
            str(db),
            "--json",
            # One worker: Python's tempfile probes $TMPDIR once per process and falls back to
            # /tmp if the probe finds no room, which a second worker's copy can briefly take.
            "--jobs",
            "1",
            env={"TMPDIR": str(tmp)},
        )
        piped = _cli(
            "inspect",
            "-",
            "--json",
            stdin=os.open(next(iter(cores_dir.iterdir())), os.O_RDONLY),
            env={"TMPDIR": str(tmp)},
        )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    summary = json.loads(out.stdout)
    assert summary["ingested"] == len(NAMES) and summary["partial"] == len(NAMES), summary
    rows = _rows(db, "SELECT status, record_json FROM crashes")
    assert len(rows) == len(NAMES)
    for status, blob in rows:
        rec = json.loads(str(blob))
        assert status == "partial"
        assert any("not symbolized" in e and "No space left on device" in e for e in rec["errors"])
        assert rec["registers"] and rec["frames"], rec["errors"]  # the register pass is whole
    # stdin is spooled to $TMPDIR: no room there is an unparsed record with the reason.
    assert piped.returncode == 1 and "Traceback" not in piped.stderr
    assert json.loads(piped.stdout)["status"] == "unparsed"
    assert "No space left on device" in piped.stderr and len(piped.stderr.splitlines()) == 1


# -- FIFOs and a stalled stdin ----------------------------------------------------------------


def test_fifos_are_refused_not_waited_on(
    kernel_cores: dict[str, CrashResult], tmp_path: Path
) -> None:
    """A FIFO where a file is expected: as the core of `inspect` and `ingest`, as a sidecar, as a
    `.json` in an ingested directory, as `analyze --db`, and as `--journal`. Each is a one-line
    reason; the real cores beside them are all stored."""
    cores = _copy_cores(kernel_cores, tmp_path / "cores", NAMES[:2])
    os.mkfifo(cores[0].with_name(cores[0].name + ".json"))  # FIFO sidecar
    os.mkfifo(tmp_path / "cores" / "screen.json")  # FIFO among the .json files
    fifo_core = tmp_path / "cores" / "core.fifo"
    os.mkfifo(fifo_core)
    lone = tmp_path / "core.lone-fifo"
    os.mkfifo(lone)

    seen = _cli("inspect", str(lone))
    assert seen.returncode == 1
    assert seen.stderr.strip().endswith("a FIFO, not a regular file"), seen.stderr
    assert len(seen.stderr.splitlines()) == 1

    db = tmp_path / "s.duckdb"
    out = _cli("ingest", str(tmp_path / "cores"), str(lone), "--db", str(db), "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    # The FIFO named on the command line is one unparsed record; the one inside the directory is
    # not a file and is not taken for a core at all.
    assert summary["cores"] == 3 and summary["ok"] == 2 and summary["unparsed"] == 1, summary
    assert any("FIFO" in r for r in summary["reasons"])
    assert any("screen.json" in e and "FIFO" in e for e in summary["screen_errors"])
    sidecar_rec = next(
        json.loads(str(b))
        for (b,) in _rows(db, "SELECT record_json FROM crashes")
        if str(json.loads(str(b))["source"]).endswith("core.null_deref")
    )
    assert any("cannot read sidecar" in e and "FIFO" in e for e in sidecar_rec["errors"])

    fifo_db = tmp_path / "fifo.duckdb"
    os.mkfifo(fifo_db)
    analyzed = _cli("analyze", "--db", str(fifo_db))
    assert analyzed.returncode == 2
    assert (
        "a FIFO, not a regular file" in analyzed.stderr and len(analyzed.stderr.splitlines()) == 1
    )

    fifo_journal = tmp_path / "journal.json"
    os.mkfifo(fifo_journal)
    journaled = _cli("ingest", str(cores[1]), "--journal", str(fifo_journal), "--db", str(db))
    assert journaled.returncode == 2
    assert "FIFO" in journaled.stderr and "Traceback" not in journaled.stderr


def test_stalled_stdin_gives_up_with_the_reason(tmp_path: Path) -> None:
    """`inspect -` on a pipe whose writer neither writes nor closes: unparsed, with the reason,
    after the budget (0.3 s here) instead of never."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"\x7fELF")  # a start, then nothing
        out = _cli("inspect", "-", "--json", "--stdin-timeout", "0.3", stdin=read_end)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert out.returncode == 1
    assert json.loads(out.stdout)["status"] == "unparsed"
    assert "stdin stalled: no data for 0.3 s" in out.stderr


def test_stdin_that_ends_is_read_as_a_core(kernel_cores: dict[str, CrashResult]) -> None:
    """The budget must not fire on a pipe that delivers the core and closes."""
    core = kernel_cores["null_deref"].core
    assert core is not None
    fd = os.open(core, os.O_RDONLY)
    try:
        out = _cli("inspect", "-", "--json", "--no-symbols", "--stdin-timeout", "5", stdin=fd)
    finally:
        os.close(fd)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["signal_name"] == "SIGSEGV"


# -- terminal escapes -------------------------------------------------------------------------


def test_escape_sequences_in_outside_strings_never_reach_the_terminal(
    kernel_cores: dict[str, CrashResult], tmp_path: Path
) -> None:
    """A core whose file name carries a window-title sequence, a clear-screen and a forged line:
    `inspect` shows them as visible escapes."""
    core = kernel_cores["null_deref"].core
    assert core is not None
    name = "core.\x1b]0;pwned\x07\x1b[2J\nerror: forged"
    hostile = tmp_path / name
    shutil.copy(core, hostile)
    out = _cli("inspect", str(hostile), "--no-symbols", env={"COLUMNS": "1000"})
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout and "\x07" not in out.stdout
    assert "core.\\x1b]0;pwned\\x07\\x1b[2J\\nerror: forged" in out.stdout
    assert not any(line.startswith("error: forged") for line in out.stdout.splitlines())


# -- screen options ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--budget", "inf"], "budget must be positive seconds up to 86400, not inf"),
        (["--budget", "1e7"], "budget must be positive seconds up to 86400, not 10000000.0"),
        (["--budget", "nan"], "budget must be positive seconds up to 86400, not nan"),
        (["--total-budget", "1e300"], "overall budget must be positive seconds up to 604800"),
        (["--checks", ","], "no check named (see --list-checks)"),
        (["--checks", " , ,"], "no check named (see --list-checks)"),
    ],
)
def test_screen_refuses_impossible_options_in_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each once ended in a traceback (an epoll timeout overflow) or ran nothing at all."""
    assert main(["screen", "--cpus", "0", "--rounds", "1", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_screen_golden_file_problems_are_one_line_and_create_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "golden.json"
    bad.write_bytes(b'\xff\xfe{"format": 1}')
    assert main(["screen", "--cpus", "0", "--rounds", "1", "--golden", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "golden values are not UTF-8 text (byte 0)" in err and "Traceback" not in err
    missing = tmp_path / "missing" / "dir" / "g.json"
    assert main(["screen", "--cpus", "0", "--rounds", "1", "--golden", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"directory {missing.parent} does not exist" in err
    assert not (tmp_path / "missing").exists()


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Missing argument 'CORE'."), err
    assert "inspect --help" in lines[0]


def test_inspect_of_an_unparsed_core_says_why_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "core.junk"
    junk.write_bytes(b"hello")
    assert main(["inspect", str(junk), "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["status"] == "unparsed"
    assert captured.err.startswith("error: ") and "not an ELF file" in captured.err
