"""``corecensus`` entry point: a Click group whose subcommands are imported only when used, so
``corecensus screen`` never pays for drgn and ``corecensus --help`` stays fast."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

import click

from corecensus import __version__

# name -> "module:attribute"; one line per subcommand, each in a module of its own.
SUBCOMMANDS: dict[str, str] = {
    "agent": "corecensus.cli.agent_cmd:agent",
    "analyze": "corecensus.cli.analyze_cmd:analyze",
    "collector": "corecensus.cli.collector_cmd:collector",
    "demo": "corecensus.cli.demo_cmd:demo",
    "ingest": "corecensus.cli.ingest_cmd:ingest",
    "inspect": "corecensus.cli.inspect_cmd:inspect",
    "reprocess": "corecensus.cli.reprocess_cmd:reprocess",
    "screen": "corecensus.cli.screen_cmd:screen",
}


# What `corecensus --help` lists for each subcommand: its docstring's first sentence, kept here
# so listing them imports none (tests/cli/test_cli_help.py checks that they agree).
SUMMARIES: dict[str, str] = {
    "agent": "The per-host agent: core handler, watcher, heartbeats, screens, spool and upload.",
    "analyze": (
        "Find crash populations and say what causes each: a bad host/CPU, a bug, or a deploy."
    ),
    "collector": (
        "The collector: HTTP ingest for the fleet's agents, the store, /metrics, the analysis API."
    ),
    "demo": "Crash a small simulated fleet for real, ingest the cores, analyze, report.",
    "ingest": "Parse core dumps (files or directories) with their metadata into the store.",
    "inspect": "Read one core dump (plain, .zst, .lz4, .xz, or - for stdin) into a crash record.",
    "reprocess": "Recompute every crash's signatures with the current rules.",
    "screen": "Screen this host's CPUs for silent data corruption.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's default imports every subcommand to ask for its short help.
        rows = [(name, SUMMARIES.get(name, "")) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="corecensus")
def cli() -> None:
    """Find the causes of rare crashes across a fleet's core dumps; screen CPUs for SDC."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status instead of exiting (testable)."""
    try:
        rv = cli.main(args=list(argv) if argv is not None else sys.argv[1:], standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.UsageError as exc:
        # One line, like every other error (Click's own takes four: usage, hint, blank, error).
        from corecensus.cli.output import error

        where = exc.ctx.command_path if exc.ctx is not None else "corecensus"
        error(f"{exc.format_message()} (see `{where} --help`)")
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 130
    return rv if isinstance(rv, int) else 0


def entry() -> None:
    """Console-script entry point."""
    raise SystemExit(main())
