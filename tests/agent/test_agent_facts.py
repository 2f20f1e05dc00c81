"""Crash-time facts: a fake two-socket SMT box (where this VM cannot be one) and the real /proc
of real processes pinned to real CPUs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from corecensus.agent.facts import (
    CPU,
    CPU_CORE,
    CPU_MODEL,
    CPUS_ALLOWED,
    HOST_CPUS,
    KERNEL,
    MICROCODE,
    cpu_count,
    crash_facts,
    host_microcode,
    read_identity,
    stat_processor,
)
from corecensus.cpulist import CpuListError

TOPOLOGY = Path(__file__).resolve().parents[1] / "data" / "topology" / "two_socket_smt"


def _stat_line(pid: int, comm: str, processor: int) -> str:
    # proc(5): fields 3..52 after "pid (comm)"; field 39 is processor.
    fields = ["S"] + ["0"] * 35 + [str(processor)] + ["0"] * 13
    return f"{pid} ({comm}) " + " ".join(fields) + "\n"


@pytest.fixture
def fake_host(tmp_path: Path) -> Path:
    """The two-socket tree plus /proc/4242 of a process whose thread 4243 last ran on CPU 5."""
    root = tmp_path / "host"
    shutil.copytree(TOPOLOGY, root)
    pid = root / "proc" / "4242"
    (pid / "task" / "4243").mkdir(parents=True)
    # A comm with spaces and parentheses: only the last ')' ends it.
    (pid / "stat").write_text(_stat_line(4242, "evil) (name", 0))
    (pid / "task" / "4243" / "stat").write_text(_stat_line(4243, "evil) (name", 5))
    (pid / "status").write_text(
        "Name:\tevil\nUid:\t1000\t1000\t1000\t1001\nGid:\t100\t100\t100\t101\n"
        "NSpid:\t4242\t17\nCpus_allowed:\t3f\nCpus_allowed_list:\t0-5\n"
    )
    (pid / "limits").write_text(
        "Limit                     Soft Limit           Hard Limit           Units\n"
        "Max core file size        8192                 unlimited            bytes\n"
    )
    return root


def test_fake_host_gives_every_sidecar_field(fake_host: Path) -> None:
    facts = crash_facts(4242, 4243, proc_root=fake_host / "proc", sys_root=fake_host / "sys")
    f = facts.fields
    assert f[CPU] == "5"  # the crashing thread's CPU, not the main thread's (0)
    assert f[CPUS_ALLOWED] == "0-5"
    assert f[CPU_MODEL] == "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"
    assert f[CPU_CORE] == "1"  # CPU 5's SMT sibling is CPU 1
    assert f[HOST_CPUS] == "7"  # 0-6 online, CPU 7 offline
    assert f[KERNEL] == "6.1.0-fake-amd64"
    cpuinfo = (fake_host / "proc" / "cpuinfo").read_text()
    block5 = cpuinfo.split("processor\t: 5\n")[1].split("\n\n")[0]
    assert f[MICROCODE] == block5.split("microcode\t: ")[1].splitlines()[0]
    assert facts.notes == []


def test_host_microcode_for_heartbeats(fake_host: Path) -> None:
    """What the agent's heartbeat reports (issue 9): sysfs's microcode version where the kernel
    has it, else CPU 0's /proc/cpuinfo block, else unknown (never an error)."""
    proc, sys_root = fake_host / "proc", fake_host / "sys"
    cpuinfo = (proc / "cpuinfo").read_text()
    block0 = cpuinfo.split("processor\t: 0\n")[1].split("\n\n")[0]
    assert (
        host_microcode(proc_root=proc, sys_root=sys_root)
        == (block0.split("microcode\t: ")[1].splitlines()[0])
    )
    version = sys_root / "devices" / "system" / "cpu" / "cpu0" / "microcode" / "version"
    version.parent.mkdir()
    version.write_text("0xd0003c1\n")  # sysfs first (a few bytes, not all of cpuinfo)
    assert host_microcode(proc_root=proc, sys_root=sys_root) == "0xd0003c1"
    assert host_microcode(proc_root=fake_host / "none", sys_root=fake_host / "none") is None


def test_main_thread_when_no_tid(fake_host: Path) -> None:
    facts = crash_facts(4242, None, proc_root=fake_host / "proc", sys_root=fake_host / "sys")
    assert facts.fields[CPU] == "0"
    assert facts.fields[CPU_CORE] == "0"


def test_identity_of_fake_process(fake_host: Path) -> None:
    ident = read_identity(4242, proc_root=fake_host / "proc")
    assert (ident.uid, ident.gid, ident.fsuid, ident.fsgid) == (1000, 100, 1001, 101)
    assert ident.core_limit == 8192
    assert ident.pid_ns == 17


def test_gone_process_leaves_fields_unknown_with_notes(fake_host: Path) -> None:
    facts = crash_facts(99999, None, proc_root=fake_host / "proc", sys_root=fake_host / "sys")
    assert CPU not in facts.fields and CPUS_ALLOWED not in facts.fields
    assert CPU_MODEL not in facts.fields
    assert any("stat" in n for n in facts.notes)
    assert facts.fields[HOST_CPUS] == "7"  # host facts do not need the process


@pytest.mark.parametrize(
    "line",
    ["", "123 (x", "123 (x) S 1 2", "123 (x) " + " ".join(["a"] * 50)],
)
def test_malformed_stat_is_unknown(line: str) -> None:
    assert stat_processor(line) is None


def test_cpu_count() -> None:
    assert cpu_count("0-3,8,10-11") == 7
    assert cpu_count("0") == 1
    # The agent counts with the one CPU-list parser: overlaps once, backwards ranges refused
    # (its own loop had counted "0-3,0-3" as 8 and "3-1" as -1).
    assert cpu_count("0-3,0-3") == 4
    for bad in ("", "3-1", "0-x"):
        with pytest.raises(CpuListError):
            cpu_count(bad)


@pytest.fixture
def pinned_sleeper() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    cpus = sorted(os.sched_getaffinity(0))
    cpu = cpus[-1]
    code = (
        "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])}); "
        "print('ready', flush=True); sys.stdin.read()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(cpu)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        yield proc, cpu
    finally:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.stdout.close()
        proc.wait()


def test_real_process_pinned_to_a_cpu(pinned_sleeper: tuple[subprocess.Popen[bytes], int]) -> None:
    proc, cpu = pinned_sleeper
    facts = crash_facts(proc.pid, proc.pid)
    assert facts.fields[CPU] == str(cpu)
    assert facts.fields[CPUS_ALLOWED] == str(cpu)
    online = Path("/sys/devices/system/cpu/online").read_text()
    assert facts.fields[HOST_CPUS] == str(cpu_count(online))
    assert facts.fields[KERNEL] == os.uname().release
    assert int(facts.fields[CPU_CORE]) <= cpu
    assert facts.fields["COREDUMP_EXE"] == os.path.realpath(sys.executable)


def test_real_unpinned_process_is_allowed_every_cpu() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        facts = crash_facts(proc.pid, None)
        allowed = os.sched_getaffinity(0)
        assert cpu_count(facts.fields[CPUS_ALLOWED]) == len(allowed)
        assert int(facts.fields[CPU]) in allowed
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()
