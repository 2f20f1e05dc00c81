"""`corecensus --help` lists every subcommand without importing any of them (speed as a
command: a user's first call should not pay for drgn, numpy, DuckDB or Rich)."""

from __future__ import annotations

import json
import subprocess
import sys

import click

from corecensus.cli.main import SUBCOMMANDS, SUMMARIES, cli

_PROBE = """
import json, sys
from corecensus.cli.main import main
main(["--help"])
print(json.dumps(sorted(sys.modules)))
"""
HEAVY = ("numpy", "drgn", "capstone", "duckdb", "rich", "corecensus.coredump", "corecensus.store")


def test_help_imports_no_subcommand() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    lines = done.stdout.strip().splitlines()
    modules = json.loads(lines[-1])
    help_text = "\n".join(lines[:-1])
    for name in SUBCOMMANDS:
        assert name in help_text
    commands = {target.split(":")[0] for target in SUBCOMMANDS.values()}
    assert commands.isdisjoint(modules)
    assert not [m for m in modules if m.startswith(HEAVY)]


def test_summaries_are_the_commands_own_short_help() -> None:
    ctx = click.Context(cli)
    assert set(SUMMARIES) == set(SUBCOMMANDS)
    for name in SUBCOMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None
        assert command.get_short_help_str(limit=500) == SUMMARIES[name], name
