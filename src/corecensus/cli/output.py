"""How commands write: one JSON writer to stdout, renderables to a console, errors as one line.

Every command prints through these three, so escaping (see :mod:`corecensus.cli.render`) and
the ``error: ...`` format hold everywhere.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _quote
from typing import TYPE_CHECKING, Any

from corecensus.cli.escape import escape_control

if TYPE_CHECKING:
    # Rich is imported when something is shown, not with this module: `inspect --json` and
    # the other JSON writers never load it.
    from rich.console import Console, RenderableType

__all__ = ["console", "error", "json_text", "print_json", "quiet_libraries", "show"]


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def show(renderable: RenderableType) -> None:
    """Print a renderable from :mod:`corecensus.cli.render` to stdout."""
    console().print(renderable)


def print_json(obj: Any) -> None:
    """The one JSON writer: plain ``json``, indented, nothing else loaded."""
    sys.stdout.write(json_text(obj))
    sys.stdout.write("\n")


def json_text(obj: Any) -> str:
    """``json.dumps(obj, indent=2, default=str)``, the same text: documents of plain dicts,
    lists, strings, ints, finite floats, booleans and None are written by :func:`_plain`
    (the ``json`` module indents in pure Python, generator by generator: 0.1 s for the 2.4 MB
    of ``analyze --json`` on a million crashes, twice :func:`_plain`'s time); anything else
    (an enum, a NumPy scalar, NaN, a key that is not a string) goes to ``json`` as before."""
    parts: list[str] = []
    try:
        _plain(obj, "", parts.append)
    except _NotPlain:
        return json.dumps(obj, indent=2, sort_keys=False, default=str)
    return "".join(parts)


class _NotPlain(Exception):
    """A value :func:`_plain` leaves to the ``json`` module."""


def _plain(obj: Any, indent: str, out: Callable[[str], object]) -> None:
    """Append ``obj``'s text at ``indent`` as ``json.dumps(indent=2)`` writes it: strings by
    the module's own C escaper (``ensure_ascii``), numbers by ``int.__repr__`` and
    ``float.__repr__`` (what ``json`` calls for exact ints and floats)."""
    kind = type(obj)
    if kind is str:
        out(_quote(obj))
    elif kind is float:
        if not math.isfinite(obj):
            raise _NotPlain
        out(float.__repr__(obj))
    elif kind is int:
        out(int.__repr__(obj))
    elif obj is None:
        out("null")
    elif obj is True:
        out("true")
    elif obj is False:
        out("false")
    elif kind is dict:
        if not obj:
            out("{}")
            return
        inner = indent + "  "
        out("{\n" + inner)
        first = True
        for key, value in obj.items():
            if type(key) is not str:
                raise _NotPlain
            if not first:
                out(",\n" + inner)
            first = False
            out(_quote(key))
            out(": ")
            _plain(value, inner, out)
        out("\n" + indent + "}")
    elif kind is list or kind is tuple:
        if not obj:
            out("[]")
            return
        inner = indent + "  "
        out("[\n" + inner)
        first = True
        for value in obj:
            if not first:
                out(",\n" + inner)
            first = False
            _plain(value, inner, out)
        out("\n" + indent + "]")
    else:
        raise _NotPlain


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
