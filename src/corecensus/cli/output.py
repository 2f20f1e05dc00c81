"""How commands write: one JSON writer to stdout, renderables to a console, errors as one line.

Every command prints through these three, so escaping (see :mod:`corecensus.cli.render`) and
the ``error: ...`` format hold everywhere.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from corecensus.cli.escape import escape_control

if TYPE_CHECKING:
    # Rich is imported when something is shown, not with this module: `inspect --json` and
    # the other JSON writers never load it.
    from rich.console import Console, RenderableType

__all__ = ["console", "error", "print_json", "quiet_libraries", "show"]


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def show(renderable: RenderableType) -> None:
    """Print a renderable from :mod:`corecensus.cli.render` to stdout."""
    console().print(renderable)


def print_json(obj: Any) -> None:
    """The one JSON writer: plain ``json``, indented, nothing else loaded."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str))
    sys.stdout.write("\n")


# An error quotes outside values (a field, a file name); one of megabytes would bury the line.
MAX_ERROR_CHARS = 1000


def _cut(message: str) -> str:
    if len(message) <= MAX_ERROR_CHARS:
        return message
    return f"{message[: MAX_ERROR_CHARS - 40]}... ({len(message)} characters in all)"


def error(message: str) -> None:
    """``error: message`` on stderr, one line (greppable, whatever the terminal width)."""
    from rich.text import Text

    line = escape_control(_cut(message))
    console(stderr=True).print(Text.assemble(("error: ", "bold red"), line), soft_wrap=True)


def quiet_libraries() -> None:
    """drgn logs every module it finds no debug info for; corecensus reports that itself."""
    import logging

    logging.getLogger("drgn").setLevel(logging.ERROR)
