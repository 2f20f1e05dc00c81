"""install-handler / uninstall-handler against a fake /proc/sys/kernel (the real one is used by
test_agent_kernel_handler.py, which restores it), and the previous pattern's expansion."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from corecensus.agent.chain import CrashArgs, expand
from corecensus.agent.corepattern import (
    MAX_PATTERN_BYTES,
    InstallError,
    KernelFiles,
    handler_pattern,
    install,
    load_state,
    uninstall,
)
from corecensus.agent.facts import ProcessIdentity
from corecensus.cli.main import main

CMD = ["/opt/cc/bin/corecensus", "agent", "handle-core"]


def _kernel(tmp_path: Path, pattern: str, pipe_limit: str = "0") -> KernelFiles:
    k = tmp_path / "proc" / "sys" / "kernel"
    k.mkdir(parents=True)
    # The kernel returns the pattern with one trailing newline.
    (k / "core_pattern").write_text(pattern + "\n")
    (k / "core_pipe_limit").write_text(pipe_limit + "\n")
    (k / "core_uses_pid").write_text("0\n")
    return KernelFiles(tmp_path / "proc")


def _root() -> int:
    return 0


@pytest.mark.parametrize(
    "previous",
    [
        "core",
        "|/usr/lib/systemd/systemd-coredump %P %u %g %s %t %c %h %d %F",
        "/var/crash/core.%e.%p  with  spaces ",
        "",
    ],
)
def test_install_then_uninstall_restores_exactly(tmp_path: Path, previous: str) -> None:
    kernel = _kernel(tmp_path, previous, "0")
    state = install(CMD, tmp_path / "state", kernel=kernel, geteuid=_root)
    assert kernel.read(kernel.core_pattern) == state.pattern == handler_pattern(CMD)
    assert state.pattern == "|/opt/cc/bin/corecensus agent handle-core %P %i %I %s %t %h %e"
    assert state.previous_pattern == previous
    assert kernel.read(kernel.core_pipe_limit) == "16"  # 0 would let /proc/<pid> vanish
    restored = uninstall(tmp_path / "state", kernel=kernel, geteuid=_root)
    assert restored is not None
    assert kernel.read(kernel.core_pattern) == previous
    assert kernel.read(kernel.core_pipe_limit) == "0"
    assert load_state(tmp_path / "state") is None


def test_pipe_limit_already_set_is_left_alone(tmp_path: Path) -> None:
    kernel = _kernel(tmp_path, "core", "4")
    install(CMD, tmp_path / "state", kernel=kernel, geteuid=_root)
    assert kernel.read(kernel.core_pipe_limit) == "4"
    uninstall(tmp_path / "state", kernel=kernel, geteuid=_root)
    assert kernel.read(kernel.core_pipe_limit) == "4"


def test_second_install_keeps_the_first_memory(tmp_path: Path) -> None:
    kernel = _kernel(tmp_path, "core")
    install(CMD, tmp_path / "state", kernel=kernel, geteuid=_root)
    again = install(CMD, tmp_path / "state", kernel=kernel, geteuid=_root)
    assert again.previous_pattern == "core"  # not the handler's own pattern
    moved = install(
        ["/new/corecensus", "agent", "handle-core"],
        tmp_path / "state",
        kernel=kernel,
        geteuid=_root,
    )
    assert moved.previous_pattern == "core"
    uninstall(tmp_path / "state", kernel=kernel, geteuid=_root)
    assert kernel.read(kernel.core_pattern) == "core"


def test_not_root_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    kernel = _kernel(tmp_path, "core")
    with pytest.raises(InstallError, match="must run as root"):
        install(CMD, tmp_path / "state", kernel=kernel, geteuid=lambda: 1000)
    assert kernel.read(kernel.core_pattern) == "core"
    assert load_state(tmp_path / "state") is None
    with pytest.raises(InstallError, match="must run as root"):
        uninstall(tmp_path / "state", kernel=kernel, geteuid=lambda: 1000)


def test_too_long_or_unsafe_commands_are_refused(tmp_path: Path) -> None:
    kernel = _kernel(tmp_path, "core")
    long = ["/" + "x" * MAX_PATTERN_BYTES, "handle-core"]
    with pytest.raises(InstallError, match="too long"):
        install(long, tmp_path / "state", kernel=kernel, geteuid=_root)
    with pytest.raises(InstallError, match="whitespace"):
        handler_pattern(["/opt/my dir/corecensus"])
    with pytest.raises(InstallError, match="absolute"):
        handler_pattern(["corecensus"])
    assert kernel.read(kernel.core_pattern) == "core"


def test_uninstall_leaves_a_pattern_someone_else_set(tmp_path: Path) -> None:
    kernel = _kernel(tmp_path, "core")
    install(CMD, tmp_path / "state", kernel=kernel, geteuid=_root)
    kernel.write(kernel.core_pattern, "|/usr/share/apport/apport %p")
    with pytest.raises(InstallError, match="left as it is"):
        uninstall(tmp_path / "state", kernel=kernel, geteuid=_root)
    assert kernel.read(kernel.core_pattern) == "|/usr/share/apport/apport %p"


def test_uninstall_without_install_is_a_no_op(tmp_path: Path) -> None:
    kernel = _kernel(tmp_path, "core")
    assert uninstall(tmp_path / "state", kernel=kernel, geteuid=_root) is None
    assert kernel.read(kernel.core_pattern) == "core"


def test_cli_install_and_uninstall(
    tmp_path: Path, short_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = _kernel(tmp_path, "core")
    state = short_dir
    base = ["agent", "--config", str(tmp_path / "none.toml"), "-s", str(state)]
    (tmp_path / "none.toml").write_text("")
    assert main([*base, "install-handler", "--proc-root", str(tmp_path / "proc")]) == 0
    pattern = kernel.read(kernel.core_pattern)
    # The kernel runs the lean launcher in the state directory, with the pattern's arguments.
    launcher = state.resolve() / "handle-core"
    assert pattern == f"|{launcher} %P %i %I %s %t %h %e"
    assert launcher.stat().st_mode & 0o777 == 0o755
    first_line = launcher.read_text().splitlines()[0]
    assert first_line == f"#!{sys.executable} -IS"
    assert "chains to: core" in capsys.readouterr().out
    assert main([*base, "uninstall-handler", "--proc-root", str(tmp_path / "proc")]) == 0
    assert kernel.read(kernel.core_pattern) == "core"
    assert not launcher.exists()


def test_cli_refuses_a_state_dir_too_long_for_the_kernel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = _kernel(tmp_path, "core")
    long_state = tmp_path / ("s" * 80)
    args = [
        "agent",
        "-s",
        str(long_state),
        "install-handler",
        "--proc-root",
        str(tmp_path / "proc"),
    ]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "too long for core_pattern" in err and len(err.strip().splitlines()) == 1
    assert kernel.read(kernel.core_pattern) == "core"
    assert not (long_state / "handle-core").exists()


ARGS = CrashArgs(
    pid=4242,
    tid_ns=7,
    tid=4243,
    signal=11,
    time_s=1700000000,
    hostname="web/1",
    comm="a/b",
    pid_ns=17,
    uid=1000,
    gid=100,
    exe="/usr/bin/svc",
)


def test_expand_follows_format_corename() -> None:
    ident = ProcessIdentity(core_limit=None)
    assert expand("core.%p.%P.%i.%I", ARGS, ident) == "core.17.4242.7.4243"
    assert expand("%u:%g:%s:%t:%d", ARGS, ident) == "1000:100:11:1700000000:1"
    # '/' in %e %E %h becomes '!'; an unknown specifier and a trailing % are dropped.
    assert expand("%e-%E-%h-%z-%%-%", ARGS, ident) == "a!b-!usr!bin!svc-web!1--%-"
    assert expand("%c", ARGS, ProcessIdentity(core_limit=8192)) == "8192"
    assert expand("%c", ARGS, ident) == str(2**64 - 1)
    empty = CrashArgs(1, 1, 1, 6, 0, "", "")
    assert expand("%e.%h", empty, ident) == "!.!"
