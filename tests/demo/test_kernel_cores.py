"""The shared crash harness (corecensus.demo.kernel_cores) on its own: how it fails, and the
limits it sets.  The crashers in tests/data/crashers exercise its happy path
(tests/test_crashers.py); here small programs written on the spot."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from corecensus.demo.kernel_cores import (
    CrasherError,
    build_program,
    crash,
    is_core_file,
    kernel_core_problem,
)


def _program(tmp_path: Path, name: str, body: str) -> Path:
    src = tmp_path / "src" / f"{name}.c"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text(
        "#include <signal.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <unistd.h>\n"
        f"int main(void) {{ {body} }}\n"
    )
    return build_program(name, [src], tmp_path / "build")


def _fake_proc(tmp_path: Path, pattern: str) -> Path:
    (tmp_path / "proc/sys/kernel").mkdir(parents=True)
    (tmp_path / "proc/sys/kernel/core_pattern").write_text(pattern)
    return tmp_path / "proc"


def test_a_program_that_exits_is_no_crash(tmp_path: Path) -> None:
    exe = _program(tmp_path, "exits", 'fputs("nothing to crash on", stderr); return 3;')
    run = crash([exe], tmp_path / "run")
    assert (run.signal, run.exit_code, run.core, run.core_dumped) == (None, 3, None, False)
    with pytest.raises(CrasherError, match="exits exited with 3 instead of crashing: nothing"):
        run.require_core("exits")


def test_the_wrong_signal_is_named(tmp_path: Path) -> None:
    exe = _program(tmp_path, "aborts", "abort();")
    run = crash([exe], tmp_path / "run")
    assert run.signal == signal.SIGABRT
    with pytest.raises(CrasherError, match="aborts died of SIGABRT, expected SIGSEGV"):
        run.require_core("aborts", signal.SIGSEGV)


@pytest.mark.kernel_cores
def test_the_core_is_found_by_content_and_the_soft_limit_is_raised(tmp_path: Path) -> None:
    """The caller's soft RLIMIT_CORE of 0 (a common shell default) does not stop the core: the
    child raises its own soft limit to the hard one."""
    exe = _program(tmp_path, "segv", "*(volatile int *)0 = 1; return 0;")
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    try:
        run = crash([exe, "arg"], tmp_path / "run")
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))
    core = run.require_core("segv", signal.SIGSEGV)
    assert run.core_dumped and is_core_file(core)
    assert core.parent == tmp_path / "run"
    assert core.name in ("core", f"core.{run.pid}")
    assert run.argv == (str(exe), "arg")


def test_a_directory_that_already_holds_a_core_is_refused(tmp_path: Path) -> None:
    exe = _program(tmp_path, "exits", "return 0;")
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "core.old").write_bytes(b"\x7fELF" + bytes(12) + b"\x04\x00" + bytes(2))
    (workdir / "notes").write_bytes(b"\x7fELF" + bytes(12) + b"\x02\x00" + bytes(2))  # ET_EXEC
    with pytest.raises(CrasherError, match=r"already holds a core \(core.old\)"):
        crash([exe], workdir)


def test_a_program_that_hangs_is_killed_and_reaped(tmp_path: Path) -> None:
    """Not a timing test: the program waits forever, so any deadline passes."""
    exe = _program(tmp_path, "hangs", "pause(); return 0;")
    with pytest.raises(CrasherError, match=r"hangs \(pid \d+\) still running after 0.2 s") as err:
        crash([exe], tmp_path / "run", timeout_s=0.2)
    pid = int(str(err.value).split("(pid ")[1].split(")")[0])
    with pytest.raises(ProcessLookupError):  # neither running nor left a zombie
        os.kill(pid, 0)


def test_the_stack_limit_is_pinned_in_the_child_only(tmp_path: Path) -> None:
    before = resource.getrlimit(resource.RLIMIT_STACK)
    run = crash(
        ["/bin/sh", "-c", "ulimit -S -s >&2; exit 5"], tmp_path / "run", stack_limit_bytes=1 << 20
    )
    assert run.exit_code == 5
    hard = before[1]
    expect = 1024 if hard == resource.RLIM_INFINITY else min(1024, hard // 1024)
    assert run.stderr.strip() == str(expect)
    assert resource.getrlimit(resource.RLIMIT_STACK) == before


def test_env_replaces_the_environment_and_none_inherits_it(tmp_path: Path) -> None:
    def names(run_env: dict[str, str] | None, workdir: Path) -> set[str]:
        seen = crash(["/bin/sh", "-c", "env >&2"], workdir, env=run_env)
        return {line.split("=", 1)[0] for line in seen.stderr.splitlines()}

    replaced = names({"PATH": "/usr/bin:/bin", "ONLY": "x"}, tmp_path / "replaced")
    assert "ONLY" in replaced and "PYTEST_CURRENT_TEST" not in replaced
    assert "PYTEST_CURRENT_TEST" in names(None, tmp_path / "inherited")


def test_builds_are_cached_by_flags_and_sources(tmp_path: Path) -> None:
    src = tmp_path / "p.c"
    src.write_text("int main(void) { return 0; }\n")
    first = build_program("p", [src], tmp_path / "build")
    mtime = first.stat().st_mtime_ns
    assert build_program("p", [src], tmp_path / "build") == first
    assert first.stat().st_mtime_ns == mtime
    assert build_program("p", [src], tmp_path / "build", flags=("-O2",)) != first
    src.write_text("int main(void) { return 1; }\n")
    assert build_program("p", [src], tmp_path / "build") != first
    assert first.name == "p"


def test_a_build_failure_carries_the_compiler_message(tmp_path: Path) -> None:
    src = tmp_path / "broken.c"
    src.write_text("int main(void) { return undeclared_thing; }\n")
    with pytest.raises(CrasherError, match=r"building broken failed(?s:.*)undeclared_thing"):
        build_program("broken", [src], tmp_path / "build")


def test_no_compiler_is_one_clear_error(tmp_path: Path) -> None:
    src = tmp_path / "p.c"
    src.write_text("int main(void) { return 0; }\n")
    with pytest.raises(CrasherError, match=r"no compiler \(no-such-cc\) on PATH"):
        build_program("p", [src], tmp_path / "build", compilers=("no-such-cc",))


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("core\n", None),
        ("core.%e.%p\n", None),
        (
            "|/usr/lib/systemd/systemd-coredump %P %u\n",
            "pipes cores to a program (/usr/lib/systemd/systemd-coredump)",
        ),
        ("|/usr/share/apport/apport -p%p\n", "(/usr/share/apport/apport)"),
        ("/var/crash/core.%e\n", "fixed place (/var/crash/core.%e)"),
        ("\n", "is empty"),
    ],
)
def test_kernel_core_problem(tmp_path: Path, pattern: str, problem: str | None) -> None:
    if resource.getrlimit(resource.RLIMIT_CORE)[1] == 0 and problem is None:
        problem = "hard RLIMIT_CORE is 0"
    got = kernel_core_problem(_fake_proc(tmp_path, pattern))
    if problem is None:
        assert got is None
    else:
        assert got is not None and problem in got


def test_kernel_core_problem_with_a_hard_core_limit_of_zero(tmp_path: Path) -> None:
    """In a child process: a hard limit once lowered cannot be raised again."""
    proc = _fake_proc(tmp_path, "core\n")
    code = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from corecensus.demo.kernel_cores import kernel_core_problem\n"
        "resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
        "print(kernel_core_problem(Path(sys.argv[1])))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(proc)], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "hard RLIMIT_CORE is 0: no process here may write a core file"
