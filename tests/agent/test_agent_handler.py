"""``agent handle-core`` run as the kernel runs it: a separate process, a real kernel core on its
stdin, the pattern's arguments, and a live process (pinned to a real CPU) in the crasher's place
so /proc holds the facts -- the kernel keeps the dying process there in the same way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard
from agent_cli import agent_argv, clean_env

from corecensus.agent.chain import CrashArgs
from corecensus.agent.config import AgentConfig
from corecensus.agent.corepattern import KernelFiles, install
from corecensus.agent.handler import handle_core
from corecensus.agent.spool import Spool
from corecensus.ingest.metadata import collect_metadata
from crashers import CrashResult

# The stand-in pins itself and sets its own core limit, then says so: the handler must not read
# /proc before that (no preexec_fn: it is unsafe in a threaded test process).
_STAND = (
    "import os, resource, sys\n"
    "cpu, limit = int(sys.argv[1]), int(sys.argv[2])\n"
    "os.sched_setaffinity(0, {cpu})\n"
    "hard = resource.getrlimit(resource.RLIMIT_CORE)[1]\n"
    "soft = limit if hard == resource.RLIM_INFINITY or 0 <= limit <= hard else hard\n"
    "resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"
)


class Stand:
    """A live process standing in for the dying one (pinned to the last allowed CPU, allowed
    core files of ``core_limit`` bytes, -1 unlimited as the crashers are)."""

    def __init__(self, cwd: Path, core_limit: int = -1) -> None:
        self.cpu = sorted(os.sched_getaffinity(0))[-1]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _STAND, str(self.cpu), str(core_limit)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=cwd,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == b"ready\n"
        self.pid = self.proc.pid

    def stop(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.proc.wait()


@pytest.fixture
def stand(tmp_path: Path) -> Iterator[Stand]:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    s = Stand(cwd)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def core(kernel_cores: Any) -> CrashResult:
    result: CrashResult = kernel_cores["null_deref"]
    return result


def run_handler(
    state: Path, pid: int, stdin: bytes, env: dict[str, str] | None = None, comm: str = "null_deref"
) -> dict[str, Any]:
    args = [str(pid), str(pid), str(pid), "11", "1700000000", "host-a", comm]
    out = subprocess.run(
        agent_argv(state, "handle-core", *args, "--json"),
        input=stdin,
        capture_output=True,
        env=clean_env(env),
        timeout=300,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def unzstd(path: Path) -> bytes:
    with path.open("rb") as fh:
        return zstandard.ZstdDecompressor().stream_reader(fh).read()


def spooled(state: Path) -> list[dict[str, Any]]:
    spool = Spool(state / "spool", 1 << 30)
    return [r.body for r in spool.peek(1000, 1 << 30)]


def test_handler_captures_facts_core_and_record(
    tmp_path: Path, stand: Stand, core: CrashResult
) -> None:
    assert core.core is not None
    data = core.core.read_bytes()
    state = tmp_path / "state"
    result = run_handler(state, stand.pid, data)
    record = result["record"]
    assert record["status"] == "ok"
    assert record["signal_name"] == "SIGSEGV"
    assert record["pid"] == core.pid  # from the core itself
    meta = record["metadata"]
    assert meta["CORECENSUS_CPU"] == str(stand.cpu)
    assert meta["CORECENSUS_CPUS_ALLOWED"] == str(stand.cpu)
    assert meta["CORECENSUS_KERNEL"] == os.uname().release
    assert int(meta["CORECENSUS_HOST_CPUS"]) >= len(os.sched_getaffinity(0))
    assert "CORECENSUS_CPU_CORE" in meta and "CORECENSUS_CPU_MODEL" in meta
    assert meta["COREDUMP_PID"] == str(stand.pid)
    assert meta["COREDUMP_TIMESTAMP"] == "1700000000000000"
    assert record["cpu"] == stand.cpu
    # The stored core is the very core, compressed, and reads back with its metadata.
    stored = Path(result["core"])
    assert stored.suffix == ".zst" and stored.parent == state / "cores"
    assert unzstd(stored) == data
    assert stored.stat().st_mode & 0o077 == 0  # memory contents: owner only
    again = collect_metadata(stored)
    assert again.fields["CORECENSUS_CPU"] == str(stand.cpu)
    assert again.fields["COREDUMP_PID"] == str(stand.pid)
    assert [r["core_id"] for r in spooled(state)] == [record["core_id"]]
    assert result["timed_out"] is False and result["problems"] == [] and result["notes"] == []


def test_garbage_on_stdin_still_spools_an_unparsed_record(tmp_path: Path, stand: Stand) -> None:
    result = run_handler(tmp_path / "state", stand.pid, b"this is no core\n" * 1000)
    assert result["record"]["status"] == "unparsed"
    assert result["record"]["errors"]
    assert result["record"]["metadata"]["CORECENSUS_CPU"] == str(stand.cpu)
    assert len(spooled(tmp_path / "state")) == 1


def test_size_cap_keeps_the_head_and_says_so(
    tmp_path: Path, stand: Stand, core: CrashResult
) -> None:
    assert core.core is not None
    result = run_handler(
        tmp_path / "state",
        stand.pid,
        core.core.read_bytes(),
        {"CORECENSUS_AGENT_CORE_MAX_BYTES": "8192"},
    )
    stored = Path(result["core"])
    assert len(unzstd(stored)) == 8192
    assert any("core cut at 8192" in e for e in result["record"]["errors"])
    assert result["record"]["status"] in ("partial", "unparsed")
    assert len(spooled(tmp_path / "state")) == 1


def test_core_not_storable_gives_minimal_record(
    tmp_path: Path, stand: Stand, core: CrashResult
) -> None:
    assert core.core is not None
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the core directory should be")
    result = run_handler(
        tmp_path / "state",
        stand.pid,
        core.core.read_bytes(),
        {"CORECENSUS_AGENT_CORE_DIR": str(blocker / "x")},
    )
    record = result["record"]
    assert record["status"] == "unparsed"
    assert any("cannot store the core" in e for e in record["errors"])
    assert record["metadata"]["CORECENSUS_CPU"] == str(stand.cpu)
    assert spooled(tmp_path / "state")[0]["core_id"] == record["core_id"]


def test_budget_releases_the_process_and_records_timed_out(
    tmp_path: Path, stand: Stand, core: CrashResult
) -> None:
    """The kernel never sends EOF here: half a core, then silence. The handler must let go after
    its budget (1 s) with a record that says so -- a hang would fail on the 300 s timeout."""
    assert core.core is not None
    data = core.core.read_bytes()
    args = [str(stand.pid)] * 3 + ["11", "1700000000", "host-a", "null_deref"]
    proc = subprocess.Popen(
        agent_argv(tmp_path / "state", "handle-core", *args, "--json"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=clean_env({"CORECENSUS_AGENT_HANDLER_BUDGET_S": "1"}),
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(data[: len(data) // 2])
    proc.stdin.flush()
    out = proc.stdout.read()  # returns when the handler exits, with stdin still open
    assert proc.wait(timeout=300) == 0
    proc.stdin.close()
    proc.stdout.close()
    result = json.loads(out)
    assert result["timed_out"] is True
    assert result["core_bytes"] == len(data) // 2
    assert any(e.startswith("timed_out:") for e in result["record"]["errors"])
    assert {"kind": "timed_out", "detail": result["record"]["errors"][-1]} in result["record"][
        "problems"
    ]
    assert result["record"]["status"] in ("partial", "unparsed")
    assert len(spooled(tmp_path / "state")) == 1


def test_chains_to_a_plain_core_pattern_like_the_kernel(
    tmp_path: Path, stand: Stand, core: CrashResult
) -> None:
    assert core.core is not None
    data = core.core.read_bytes()
    state = tmp_path / "state"
    fake = tmp_path / "fakeproc" / "sys" / "kernel"
    fake.mkdir(parents=True)
    (fake / "core_pattern").write_text("core.%e\n")
    (fake / "core_pipe_limit").write_text("0\n")
    install(
        ["/x/corecensus", "handle-core"],
        state,
        kernel=KernelFiles(tmp_path / "fakeproc"),
        geteuid=lambda: 0,
    )
    result = run_handler(state, stand.pid, data)
    chained = tmp_path / "cwd" / "core.null_deref"
    assert chained.read_bytes() == data  # in the process's cwd, as the kernel would write it
    assert chained.stat().st_mode & 0o777 == 0o600
    assert result["record"]["status"] == "ok"


def test_chained_core_file_obeys_rlimit_core(tmp_path: Path, core: CrashResult) -> None:
    """Must not fire: a process whose RLIMIT_CORE is 0 gets no file from the kernel, so none
    from the chain either (a pipe handler is called whatever the limit: core(5))."""
    assert core.core is not None
    state = tmp_path / "state"
    fake = tmp_path / "fakeproc" / "sys" / "kernel"
    fake.mkdir(parents=True)
    (fake / "core_pattern").write_text("core\n")
    (fake / "core_pipe_limit").write_text("16\n")
    install(
        ["/x/corecensus", "handle-core"],
        state,
        kernel=KernelFiles(tmp_path / "fakeproc"),
        geteuid=lambda: 0,
    )
    cwd = tmp_path / "cwd0"
    cwd.mkdir()
    stand = Stand(cwd, core_limit=0)
    try:
        result = run_handler(state, stand.pid, core.core.read_bytes())
    finally:
        stand.stop()
    assert list(cwd.iterdir()) == []
    assert any("RLIMIT_CORE 0" in n for n in result["notes"])
    assert result["record"]["status"] == "ok"  # the agent's own capture is not limited


def test_chains_to_a_previous_pipe_handler(tmp_path: Path, stand: Stand, core: CrashResult) -> None:
    assert core.core is not None
    data = core.core.read_bytes()
    state = tmp_path / "state"
    out = tmp_path / "previous"
    script = tmp_path / "previous.sh"
    script.write_text(
        f'#!/bin/sh\necho "$@" > {out}.args\ncat > {out}.tmp\nmv {out}.tmp {out}.core\n'
    )
    script.chmod(0o755)
    fake = tmp_path / "fakeproc" / "sys" / "kernel"
    fake.mkdir(parents=True)
    (fake / "core_pattern").write_text(f"|{script} %P %s %e %h\n")
    (fake / "core_pipe_limit").write_text("16\n")
    install(
        ["/x/corecensus", "handle-core"],
        state,
        kernel=KernelFiles(tmp_path / "fakeproc"),
        geteuid=lambda: 0,
    )
    run_handler(state, stand.pid, data)
    # The previous handler runs on by itself (as under the kernel); wait for it to finish.
    done = Path(f"{out}.core")
    for _ in range(3000):
        if done.exists():
            break
        os.sched_yield()
        subprocess.run(["sleep", "0.05"], check=True)
    assert done.read_bytes() == data
    assert Path(f"{out}.args").read_text().split() == [str(stand.pid), "11", "null_deref", "host-a"]


def test_kill_switch_does_no_work_but_keeps_the_host_chain(
    tmp_path: Path, stand: Stand, core: CrashResult
) -> None:
    assert core.core is not None
    data = core.core.read_bytes()
    state = tmp_path / "state"
    fake = tmp_path / "fakeproc" / "sys" / "kernel"
    fake.mkdir(parents=True)
    (fake / "core_pattern").write_text("core\n")
    (fake / "core_pipe_limit").write_text("16\n")
    install(
        ["/x/corecensus", "handle-core"],
        state,
        kernel=KernelFiles(tmp_path / "fakeproc"),
        geteuid=lambda: 0,
    )
    result = run_handler(state, stand.pid, data, {"CORECENSUS_DISABLED": "1"})
    assert result["disabled"] == "CORECENSUS_DISABLED=1"
    assert result["record"] is None and result["spooled"] is None
    assert not (state / "cores").exists() and not (state / "spool").exists()
    assert (tmp_path / "cwd" / "core").read_bytes() == data


def test_kill_switch_file_in_process(tmp_path: Path, stand: Stand) -> None:
    flag = tmp_path / "disabled"
    flag.write_text("")
    r, w = os.pipe()
    os.write(w, b"x" * 100)
    os.close(w)
    try:
        result = handle_core(
            CrashArgs(stand.pid, stand.pid, stand.pid, 11, 1, "h", "c"),
            r,
            AgentConfig(state_dir=tmp_path / "state"),
            env={},
            disable_file=flag,
        )
    finally:
        os.close(r)
    assert result.disabled == f"{flag} exists"
    assert not (tmp_path / "state").exists()
    # Must not fire: without the file (and with CORECENSUS_DISABLED=0) the handler works.
    flag.unlink()
    r, w = os.pipe()
    os.write(w, b"x" * 100)
    os.close(w)
    try:
        result = handle_core(
            CrashArgs(stand.pid, stand.pid, stand.pid, 11, 1, "h", "c"),
            r,
            AgentConfig(state_dir=tmp_path / "state"),
            env={"CORECENSUS_DISABLED": "0"},
            disable_file=flag,
        )
    finally:
        os.close(r)
    assert result.disabled is None and result.spooled is not None


def test_handler_never_loads_drgn_or_duckdb(
    tmp_path: Path, stand: Stand, core: CrashResult
) -> None:
    """The import-linter contract allows coredump's lazy drgn import; this checks that the
    handler's path (no-symbols parse) really never runs it."""
    assert core.core is not None
    code = (
        "import json, sys\n"
        "from corecensus.cli.main import main\n"
        "rc = main(sys.argv[1:])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'drgn', '_drgn', 'duckdb'})\n"
        "print(json.dumps(heavy), file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORECENSUS_")}
    args = [str(stand.pid)] * 3 + ["11", "1700000000", "h", "null_deref"]
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "agent",
            "--config",
            os.devnull,
            "-s",
            str(tmp_path / "s"),
            "handle-core",
            *args,
            "--json",
        ],
        input=core.core.read_bytes(),
        capture_output=True,
        env=env,
        timeout=300,
        check=True,
    )
    assert json.loads(out.stdout)["record"]["status"] == "ok"  # the parse did run
    assert json.loads(out.stderr.decode().strip().splitlines()[-1]) == []


def _launcher(state: Path) -> Path:
    from corecensus.agent import corehold
    from corecensus.agent.corepattern import write_launcher

    return write_launcher(state, sys.executable, str(Path(corehold.__file__).parent))


def test_the_installed_launcher_runs_as_the_kernel_runs_it(
    tmp_path: Path, stand: Stand, core: CrashResult
) -> None:
    """What install-handler puts in core_pattern: its launcher, executed by path (the shebang's
    ``python -IS``), the pattern's seven arguments, the core on stdin, the kernel's helper
    environment (no PATH to the venv, no CORECENSUS_ variables)."""
    assert core.core is not None
    data = core.core.read_bytes()
    state = tmp_path / "state"
    launcher = _launcher(state)
    args = [str(stand.pid)] * 3 + ["11", "1700000000", "host-a", "null_deref"]
    out = subprocess.run(
        [str(launcher), *args, "--json"],
        input=data,
        capture_output=True,
        env={"HOME": "/", "PATH": "/sbin:/bin:/usr/sbin:/usr/bin"},
        timeout=300,
        check=True,
    )
    result = json.loads(out.stdout)
    record = result["record"]
    assert record["status"] == "ok" and record["signal_name"] == "SIGSEGV"
    assert record["metadata"]["CORECENSUS_CPU"] == str(stand.cpu)
    assert "CORECENSUS_CPU_MODEL" in record["metadata"]  # read after the release
    assert unzstd(Path(result["core"])) == data
    assert [r["core_id"] for r in spooled(state)] == [record["core_id"]]
    # The raw spill is gone once the core is stored compressed.
    assert [p.name for p in (state / "cores").iterdir() if p.name.startswith(".")] == []
    # An older kernel splits a comm with a space into two words: still one crash, one comm.
    out = subprocess.run(
        [str(launcher), *args[:6], "null", "deref", "--json"],
        input=data,
        capture_output=True,
        env={"HOME": "/", "PATH": "/sbin:/bin:/usr/sbin:/usr/bin"},
        timeout=300,
        check=True,
    )
    assert json.loads(out.stdout)["record"]["metadata"]["COREDUMP_COMM"] == "null deref"


_HOLD_IMPORTS = """
import sys
sys.path.insert(0, sys.argv[1])
import corehold
before = set(sys.modules)
values, origin, problem = corehold.read_settings(None, {})
values["state_dir"] = sys.argv[2]
pid = int(sys.argv[3])
held = corehold.capture(
    corehold.CrashArgs(pid, pid, pid, 11, 1700000000, "h", "null_deref"),
    0,
    corehold.HoldSettings.from_values(values),
    env={},
)
during = sorted(set(sys.modules) - before)
held_modules = sorted(sys.modules)
sys.path.pop(0)
import site
site.main()
import corecensus.agent.handler
import json
print(json.dumps({
    "modules": held_modules,
    "during": during,
    "after": sorted(sys.modules),
    "cpu": corehold.stat_processor(held.stat),
    "kept": held.kept,
}))
"""

# What the hold must not load: the CLI, the terminal UI, the numeric and database stacks, the
# core parser, the compressor -- and the corecensus package itself, whose __init__ loads the
# record types (dataclasses, enum, typing, inspect).
_HEAVY = {
    "click", "rich", "numpy", "duckdb", "drgn", "_drgn", "capstone", "zstandard", "httpx",
    "corecensus", "dataclasses", "typing", "inspect", "pathlib", "subprocess", "tomllib", "json",
}  # fmt: skip


def test_the_hold_imports_only_what_capture_needs(
    tmp_path: Path, stand: Stand, core: CrashResult
) -> None:
    """Not timed: which modules are loaded while the process is held, in the interpreter the
    launcher starts (``-I -S``). Then the same check after the release, where they must appear
    (the check can see them)."""
    from corecensus.agent import corehold

    assert core.core is not None
    data = core.core.read_bytes()
    out = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            _HOLD_IMPORTS,
            str(Path(corehold.__file__).parent),
            str(tmp_path / "state"),
            str(stand.pid),
        ],
        input=data,
        capture_output=True,
        timeout=300,
        check=True,
    )
    result = json.loads(out.stdout)
    held = {m.split(".")[0] for m in result["modules"]}
    assert held & _HEAVY == set(), result["during"]
    assert result["cpu"] == stand.cpu and result["kept"] == len(data)
    # Must not pass vacuously: after the release the agent's modules are there.
    after = {m.split(".")[0] for m in result["after"]}
    assert {"corecensus", "dataclasses", "pathlib", "zstandard"} <= after


def test_prune_removes_spills_a_killed_handler_left_but_not_a_live_one(tmp_path: Path) -> None:
    from corecensus.agent.corestore import prune_cores

    cores = tmp_path / "cores"
    cores.mkdir()
    stale = cores / ".incoming.1.1.raw"
    live = cores / ".incoming.2.2.raw"
    kept = cores / "core.a.0.b.1.1.zst"
    for p in (stale, live, kept):
        p.write_bytes(b"x" * 10)
    now = 1_800_000_000.0
    os.utime(stale, (now - 2 * 86400, now - 2 * 86400))
    os.utime(live, (now - 5, now - 5))  # a handler draining right now
    os.utime(kept, (now - 5, now - 5))
    prune_cores(cores, max_total_bytes=1 << 20, max_age_s=86400, now=now)
    assert sorted(p.name for p in cores.iterdir()) == [live.name, kept.name]
