"""JSON documents found beside cores (screen records and other ``.json`` files), read safely.

A directory handed to ``ingest`` may hold any ``.json``: a FIFO named ``x.json`` (reading it
blocks forever), a 2 GB sparse file (reading it whole cost 4.3 GB), or ``[[[[...]]]]`` nested
deeper than Python's recursion limit (``json.loads`` raises RecursionError). Each is refused here
with a one-line reason; nothing else in the batch is affected (issue 10).
"""

from __future__ import annotations

import json
import os

from corecensus.errors import MetadataError
from corecensus.outside import clean_json_value, json_int, open_regular, strip_bom

__all__ = ["MAX_DOCUMENT_BYTES", "MAX_DOCUMENT_DEPTH", "read_json_document"]

# A screen record of a 384-CPU host with every check's detail is a few hundred KiB.
MAX_DOCUMENT_BYTES = 16 << 20
# Screen records nest five or six levels; anything far deeper is not one of ours.
MAX_DOCUMENT_DEPTH = 64


def _depth(text: str, limit: int) -> int:
    """Nesting depth of brackets outside strings, counted up to ``limit + 1`` (a linear scan,
    so a hostile document costs no recursion at all)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def read_json_document(
    path: str | os.PathLike[str],
    *,
    max_bytes: int = MAX_DOCUMENT_BYTES,
    max_depth: int = MAX_DOCUMENT_DEPTH,
) -> object:
    """The JSON value in ``path``, every string valid text. Raises :class:`MetadataError` with
    the reason for anything but a regular file of at most ``max_bytes`` bytes holding UTF-8 JSON
    nested at most ``max_depth`` levels."""
    where = os.fspath(path)
    try:
        with open_regular(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise MetadataError(f"{where}: {size} bytes, more than the {max_bytes} read")
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise MetadataError(f"{where}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:  # grew while being read
        raise MetadataError(f"{where}: more than the {max_bytes} bytes read")
    try:
        text = strip_bom(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MetadataError(f"{where}: not UTF-8 text (byte {exc.start})") from exc
    if _depth(text, max_depth) > max_depth:
        raise MetadataError(f"{where}: JSON nested more than {max_depth} levels")
    try:
        value = json.loads(text, parse_int=json_int)
    except json.JSONDecodeError as exc:
        raise MetadataError(f"{where}:{exc.lineno}: not JSON: {exc.msg}") from exc
    except ValueError as exc:  # json_int's refusal
        raise MetadataError(f"{where}: not JSON we read: {exc}") from exc
    except RecursionError as exc:  # cannot happen after the depth check; kept as a backstop
        raise MetadataError(f"{where}: JSON nested too deeply") from exc
    cleaned, _changed = clean_json_value(value)
    return cleaned
