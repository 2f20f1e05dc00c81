"""The watcher over an emulated systemd-coredump directory (a real zstd core, systemd's file
name and its xattrs set on a real file, as systemd-coredump's fix_xattr() would; systemd-coredump
itself is never installed here), the child parser with its budget, and exposure from real /proc."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import zstandard

from corecensus.agent.config import ServiceSpec
from corecensus.agent.exposure import AGENT_SERVICE, heartbeats, running_services
from corecensus.agent.watch import Watcher, _run, inspect_in_child
from corecensus.model import ParseStatus, ProblemKind
from crashers import CrashResult

BOOT = "0123456789abcdef0123456789abcdef"


def systemd_core(directory: Path, crash: CrashResult) -> Path:
    """A core as systemd-coredump stores it: zstd, its naming convention, its xattrs."""
    assert crash.core is not None
    directory.mkdir(parents=True, exist_ok=True)
    name = f"core.{crash.name}.0.{BOOT}.{crash.pid}.1700000000000000.zst"
    path = directory / name
    path.write_bytes(zstandard.ZstdCompressor().compress(crash.core.read_bytes()))
    for key, value in {
        "user.coredump.pid": str(crash.pid),
        "user.coredump.signal": str(int(crash.signal or 0)),
        "user.coredump.timestamp": "1700000000000000",
        "user.coredump.comm": crash.name,
        "user.coredump.exe": str(crash.exe),
        "user.coredump.hostname": "original-host",
    }.items():
        os.setxattr(path, key, value.encode())
    return path


@pytest.fixture
def crash(kernel_cores: Any) -> CrashResult:
    result: CrashResult = kernel_cores["null_deref"]
    return result


def test_systemd_coredump_core_is_found_once_settled_and_read_with_its_xattrs(
    tmp_path: Path, crash: CrashResult
) -> None:
    sd = tmp_path / "coredump"
    core = systemd_core(sd, crash)
    (sd / "notes.txt").write_text("not a core")
    watcher = Watcher([sd], tmp_path / "watch.json")
    assert watcher.scan() == []  # first sight: not yet known to be settled
    assert watcher.scan() == [core]
    record = inspect_in_child(core, 120.0, {"COREDUMP_HOSTNAME": "web-1", "CORECENSUS_KERNEL": "k"})
    assert record.status is ParseStatus.OK and record.signal == 11
    assert record.metadata["COREDUMP_PID"] == str(crash.pid)  # from the xattrs
    assert record.metadata["COREDUMP_EXE"] == str(crash.exe)
    assert record.metadata["COREDUMP_HOSTNAME"] == "web-1"  # the agent's name for its host
    assert record.metadata["CORECENSUS_KERNEL"] == "k"
    watcher.taken(core)
    assert watcher.scan() == []
    # A restart remembers what was taken.
    again = Watcher([sd], tmp_path / "watch.json")
    assert again.scan() == [] and again.scan() == []


def test_growing_file_waits_until_settled(tmp_path: Path, crash: CrashResult) -> None:
    assert crash.core is not None
    d = tmp_path / "cores"
    d.mkdir()
    path = d / "core.app.1"
    data = crash.core.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    watcher = Watcher([d], tmp_path / "watch.json")
    assert watcher.scan() == []
    with path.open("ab") as fh:
        fh.write(data[len(data) // 2 :])
    assert watcher.scan() == []  # it grew since the last scan
    assert watcher.scan() == [path]


def test_hostile_core_costs_only_its_child(tmp_path: Path) -> None:
    bad = tmp_path / "core.bad.zst"
    bad.write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(4096))
    record = inspect_in_child(bad, 120.0, {"COREDUMP_HOSTNAME": "web-1"})
    assert record.status is ParseStatus.UNPARSED and record.problems
    assert record.metadata["COREDUMP_HOSTNAME"] == "web-1"


def test_a_parse_that_hangs_is_killed_at_its_budget(tmp_path: Path) -> None:
    """A child that really hangs (``sleep 600`` in the parser's place: the parser itself now
    refuses what used to hang it, such as a FIFO) is killed at the budget and recorded."""
    core = tmp_path / "core.hang"
    core.write_bytes(b"\x7fELF")

    def hanging(argv: Sequence[str], timeout_s: float) -> tuple[int, bytes]:
        assert "inspect" in argv and str(core) in argv
        return _run(["sleep", "600"], timeout_s)

    record = inspect_in_child(core, 2.0, {"COREDUMP_HOSTNAME": "web-1"}, hanging)
    assert record.status is ParseStatus.UNPARSED
    assert record.problems[0].kind is ProblemKind.TIMED_OUT
    assert record.metadata["COREDUMP_FILENAME"] == str(core)


def test_exposure_counts_real_processes_of_configured_services(tmp_path: Path) -> None:
    exe = tmp_path / "ccsvc-probe"
    shutil.copy("/bin/sleep", exe)
    procs = [subprocess.Popen([str(exe), "300"]) for _ in range(2)]
    try:
        services = (
            ServiceSpec("probe", "2.1", exe=str(exe)),
            ServiceSpec("absent", "1.0", comm="no-such-comm-x"),
        )
        running = running_services(services)
        assert running["probe"] == 2
        assert running["absent"] == 0  # must not fire: nothing runs it
        beats = heartbeats("web-1", 5, services, running)
        assert [(b.service, b.version) for b in beats][1:] == [("probe", "2.1")]
        assert beats[0].service == AGENT_SERVICE
    finally:
        for p in procs:
            p.kill()
            p.wait()


JOURNAL_REMOTE = next(
    (
        p
        for p in ("/usr/lib/systemd/systemd-journal-remote", "/lib/systemd/systemd-journal-remote")
        if Path(p).exists()
    ),
    None,
)


def _stand_in_journalctl(tmp_path: Path, entries: list[dict[str, str]]) -> Path:
    """A real journal file (systemd-journal-remote from export format) and a ``journalctl``
    that reads it. A stand-in for the system journal only: systemd does not run here, so the
    wrapper adds ``--file``; the journalctl that answers is the real one."""
    if JOURNAL_REMOTE is None or shutil.which("journalctl") is None:
        pytest.skip("needs journalctl and systemd-journal-remote (apt: systemd-journal-remote)")
    export = tmp_path / "coredump.export"
    with export.open("wb") as fh:
        for i, entry in enumerate(entries):
            fields = {
                "__REALTIME_TIMESTAMP": str(1_700_000_000_000_000 + i),
                "__MONOTONIC_TIMESTAMP": "1000",
                "_BOOT_ID": BOOT,
                "MESSAGE_ID": "fc2e22bc6ee647b6b90729ab34a250b1",  # systemd-coredump's
                **entry,
            }
            for name, value in fields.items():
                raw = value.encode()
                if b"\n" in raw:  # Journal Export Format: binary-safe form for multi-line values
                    fh.write(name.encode() + b"\n" + struct.pack("<Q", len(raw)) + raw + b"\n")
                else:
                    fh.write(name.encode() + b"=" + raw + b"\n")
            fh.write(b"\n")
    journal = tmp_path / "system.journal"
    subprocess.run(
        [JOURNAL_REMOTE, "-o", str(journal), str(export)], check=True, capture_output=True
    )
    script = tmp_path / "journalctl"
    script.write_text(f'#!/bin/sh\nexec journalctl --file={journal} "$@"\n')
    script.chmod(0o755)
    return script


def _entry(core: Path, crash: CrashResult) -> dict[str, str]:
    return {
        "MESSAGE": f"Process {crash.pid} ({crash.name}) of user 0 dumped core.",
        "COREDUMP_FILENAME": str(core),
        "COREDUMP_PID": str(crash.pid),
        "COREDUMP_SIGNAL": "11",
        "COREDUMP_TIMESTAMP": "1700000000000000",
        "COREDUMP_UNIT": "ledger.service",
        "COREDUMP_CMDLINE": f"{crash.name} --serve",
        "COREDUMP_PROC_STATUS": "Name:\tledger\nCpus_allowed_list:\t2-3\n",
    }


@pytest.mark.parametrize("journal", ["entry", "no entry", "no journalctl"])
def test_daemon_reads_systemd_coredump_metadata_from_the_journal_else_the_xattrs(
    tmp_path: Path, crash: CrashResult, journal: str
) -> None:
    from corecensus.agent.config import AgentConfig
    from corecensus.agent.daemon import Daemon
    from corecensus.agent.spool import Spool

    sd = tmp_path / "coredump"
    core = systemd_core(sd, crash)
    if journal == "no journalctl":
        journalctl = str(tmp_path / "absent" / "journalctl")
    else:
        other = sd / f"core.other.0.{BOOT}.1.1700000000000000.zst"
        entries = [_entry(other, crash)]
        if journal == "entry":
            entries.append(_entry(core, crash))
        journalctl = str(_stand_in_journalctl(tmp_path, entries))
    config = AgentConfig(
        state_dir=tmp_path / "state",
        systemd_coredump_dir=sd,
        journalctl=journalctl,
        screen_mode=None,
        hostname="web-1",
    )
    daemon = Daemon(config, env={})
    daemon.step()
    daemon.next_scan = daemon.clock()  # a second scan now: the file has settled
    daemon.step()
    records = [r.body for r in Spool(config.spool_dir, 1 << 30).peek(100, 1 << 30)]
    (record,) = [r for r in records if "core_id" in r]
    meta = record["metadata"]
    assert record["status"] == "ok"
    assert meta["COREDUMP_PID"] == str(crash.pid) and meta["COREDUMP_EXE"] == str(crash.exe)
    if journal == "entry":
        assert meta["COREDUMP_UNIT"] == "ledger.service"
        assert meta["COREDUMP_CMDLINE"] == f"{crash.name} --serve"
        assert "Cpus_allowed_list:\t2-3" in meta["COREDUMP_PROC_STATUS"]
    else:  # must not fire: the xattrs alone, nothing from another core's entry
        assert "COREDUMP_UNIT" not in meta and "COREDUMP_PROC_STATUS" not in meta
    assert not list((tmp_path / "state").glob(".journal.*"))  # the hand-over file is gone
