"""Shared output helpers for subcommands: JSON to stdout, Rich to a console, errors as one line."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from rich.console import Console
from rich.text import Text

__all__ = ["console", "error", "print_json", "quiet_libraries"]


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str))
    sys.stdout.write("\n")


def error(message: str) -> None:
    # soft_wrap: an error line stays one line (greppable), whatever the terminal width.
    console(stderr=True).print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)


def quiet_libraries() -> None:
    """drgn logs every module it finds no debug info for; corecensus reports that itself."""
    logging.getLogger("drgn").setLevel(logging.ERROR)
