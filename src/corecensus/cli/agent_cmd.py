"""``corecensus agent ...``: the per-host agent (thin: the work is in :mod:`corecensus.agent`).

The settings come from ``--config FILE`` (default ``/etc/corecensus/agent.toml`` when it exists)
then ``CORECENSUS_AGENT_<NAME>`` variables, then ``--state-dir``; this module is the only reader
of the environment and config files (STYLE.md).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import click

from corecensus.agent.config import DEFAULT_CONFIG_FILE, AgentConfig
from corecensus.agent.corehold import read_settings
from corecensus.cli.numbers import FiniteFloatRange
from corecensus.cli.output import error, print_json
from corecensus.errors import ConfigError, CorecensusError

__all__ = ["agent", "load_config"]


def load_config(
    config_file: Path | None, env: Mapping[str, str], state_dir: Path | None = None
) -> AgentConfig:
    """File, then environment, then the command line; ConfigError names the bad key."""
    values, origin, problem = read_settings(config_file, env)
    if problem is not None:
        raise ConfigError(problem)
    if state_dir is not None:
        values["state_dir"] = str(state_dir)
    return AgentConfig.from_mapping(values, origin)


def _config(ctx: click.Context) -> AgentConfig:
    """The settings of this invocation; raises ConfigError (callers print it as one line)."""
    params = ctx.parent.params if ctx.parent is not None else {}
    return load_config(params.get("config_file"), os.environ, params.get("state_dir"))


@click.group()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Agent settings (TOML; default {DEFAULT_CONFIG_FILE} when it exists).",
)
@click.option(
    "-s",
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Spool, stored cores and handler memory (default /var/lib/corecensus).",
)
def agent(config_file: Path | None, state_dir: Path | None) -> None:
    """The per-host agent: core handler, watcher, heartbeats, screens, spool and upload."""


@agent.command("handle-core", context_settings={"ignore_unknown_options": True})
@click.argument("words", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def handle_core_cmd(ctx: click.Context, words: tuple[str, ...]) -> int:
    """Kernel core_pattern handler: ``%P %i %I %s %t %h %e``, the core on stdin. Always exits 0.

    The kernel runs the lean launcher that ``install-handler`` writes; this is the same code
    (:func:`corecensus.agent.corehold.main`) for a person or a test. ``--json`` prints what was
    captured."""
    from corecensus.agent.corehold import main as hold_main

    params = ctx.parent.params if ctx.parent is not None else {}
    argv: list[str] = []
    if params.get("config_file") is not None:
        argv += ["--config", str(params["config_file"])]
    if params.get("state_dir") is not None:
        argv += ["--state-dir", str(params["state_dir"])]
    return hold_main([*argv, *words])


def _handler_command(state_dir: Path) -> list[str]:
    """The launcher core_pattern runs, written into the state directory."""
    from corecensus.agent import corehold
    from corecensus.agent.corepattern import LAUNCHER, handler_pattern, write_launcher

    handler_pattern([str(state_dir.resolve() / LAUNCHER)])  # too long: refuse before writing
    module_dir = str(Path(corehold.__file__).resolve().parent)
    return [str(write_launcher(state_dir.resolve(), sys.executable, module_dir))]


@agent.command("install-handler")
@click.option("--proc-root", type=click.Path(path_type=Path), default=Path("/proc"), hidden=True)
@click.pass_context
def install_handler(ctx: click.Context, proc_root: Path) -> int:
    """Make the kernel pipe cores to this agent; remembers the pattern it replaces."""
    from corecensus.agent.corepattern import KernelFiles, install, require_root

    try:
        config = _config(ctx)
        require_root(os.geteuid, "install-handler")  # before the launcher is written
        state = install(
            _handler_command(config.state_dir), config.state_dir, kernel=KernelFiles(proc_root)
        )
    except CorecensusError as exc:
        error(str(exc))
        return 1
    except OSError as exc:
        error(f"cannot install the handler: {exc.strerror} ({exc.filename})")
        return 1
    click.echo(f"core_pattern: {state.pattern}")
    click.echo(f"chains to: {state.previous_pattern or '(nothing)'}")
    return 0


@agent.command("uninstall-handler")
@click.option("--proc-root", type=click.Path(path_type=Path), default=Path("/proc"), hidden=True)
@click.pass_context
def uninstall_handler(ctx: click.Context, proc_root: Path) -> int:
    """Give the kernel back the core_pattern (and core_pipe_limit) the install replaced."""
    from corecensus.agent.corepattern import KernelFiles, uninstall

    try:
        config = _config(ctx)
        state = uninstall(config.state_dir, kernel=KernelFiles(proc_root))
    except CorecensusError as exc:
        error(str(exc))
        return 1
    except OSError as exc:
        error(f"cannot uninstall the handler: {exc.strerror} ({exc.filename})")
        return 1
    if state is None:
        click.echo("the handler was not installed from this state directory; nothing to do")
    else:
        click.echo(f"core_pattern restored: {state.previous_pattern}")
    return 0


@agent.command("run")
@click.option("--once", is_flag=True, help="One step of the loop, then exit (for checks).")
@click.pass_context
def run_cmd(ctx: click.Context, once: bool) -> int:
    """The daemon: watch core directories, heartbeats, scheduled screens, upload."""
    import signal

    from corecensus.agent.daemon import Daemon

    try:
        config = _config(ctx)
        daemon = Daemon(config, env=os.environ)
    except CorecensusError as exc:
        error(str(exc))
        return 2
    except OSError as exc:
        error(f"cannot start the agent: {exc.strerror} ({exc.filename})")
        return 1
    stop: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if once:
        daemon.step()
    else:
        daemon.run(lambda: bool(stop))
    return 0


@agent.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
@click.option("--proc-root", type=click.Path(path_type=Path), default=Path("/proc"), hidden=True)
@click.pass_context
def status_cmd(ctx: click.Context, as_json: bool, proc_root: Path) -> int:
    """Spool depth, losses, last upload, errors, handler and kill switch, in one screen."""
    from corecensus.agent.corepattern import KernelFiles
    from corecensus.agent.status import gather_status

    try:
        config = _config(ctx)
    except CorecensusError as exc:
        error(str(exc))
        return 2
    status = gather_status(config, env=os.environ, kernel=KernelFiles(proc_root))
    if as_json:
        print_json(status)
    else:
        from corecensus.cli.output import show
        from corecensus.cli.render import agent_status_view

        show(agent_status_view(status))
    return 0


@agent.command("gate")
@click.option(
    "--budget",
    type=FiniteFloatRange(min=1.0, max=86_400),
    required=True,
    metavar="S",
    help="Hard limit in seconds.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option("--cpus", "cpus_text", metavar="LIST", help="CPUs to screen (default: all online).")
def gate_cmd(budget: float, as_json: bool, cpus_text: str | None) -> int:
    """Bounded screen before the host takes work: passed (0), failed (3, with CPUs to exclude)
    or unscreened (0: out of time; never blocks the node)."""
    from corecensus.agent.gate import run_gate

    result = run_gate(budget, extra_args=("--cpus", cpus_text) if cpus_text else ())
    if as_json:
        print_json(result.to_json())
    else:
        excluded = ",".join(map(str, result.exclude_cpus)) or "none"
        click.echo(f"gate: {result.outcome} in {result.seconds:.1f} s; exclude CPUs: {excluded}")
        if result.detail:
            click.echo(f"  {result.detail}")
    return result.exit_code
