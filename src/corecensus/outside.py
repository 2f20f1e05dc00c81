"""What comes from outside, made safe to keep: files that are regular files, text that is valid.

Two rules every reader of outside data follows (issue 10):

* **Only regular files are read.** Opening a FIFO for reading blocks until a writer appears,
  forever if none does; a character device (``/dev/zero``, ``/dev/urandom``) never ends. So a
  file is opened non-blocking, checked with ``fstat``, and refused unless it is a regular file
  (:func:`open_regular`, :func:`require_regular`).
* **Text is valid Unicode.** JSON may spell a lone UTF-16 surrogate (``"x\\ud800y"``) and a
  file name with bytes that are not UTF-8 becomes a string with surrogate escapes; neither can
  be encoded as UTF-8, so a database (DuckDB) or a JSON writer rejects it, and with it a whole
  batch. :func:`valid_text` spells such code points as ``\\udXXX`` escapes instead, so the value
  is kept, readable and still tells what was there.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Mapping
from typing import IO, BinaryIO

__all__ = [
    "MAX_JSON_INT_DIGITS",
    "LineTooLongError",
    "NotRegularFileError",
    "bounded_lines",
    "clean_json_value",
    "file_kind",
    "is_valid_text",
    "json_int",
    "open_regular",
    "open_regular_fd",
    "require_regular",
    "strip_bom",
    "valid_text",
]

# CPython converts no decimal integer of more than 4,300 digits (sys.int_info
# .default_max_str_digits; CVE-2020-10735), and json.loads then raises a bare ValueError, not a
# JSONDecodeError: one such number in a sidecar, a journal line or any .json beside the cores
# once ended an ingest with a traceback and nothing stored. Parsers of outside JSON pass
# ``parse_int=json_int`` and catch ValueError.
MAX_JSON_INT_DIGITS = 4300


def json_int(text: str) -> int:
    """``parse_int`` for :func:`json.loads`: the integer, or a ValueError that says what."""
    digits = len(text) - text.startswith("-")
    if digits > MAX_JSON_INT_DIGITS:
        raise ValueError(f"a number of {digits} digits (at most {MAX_JSON_INT_DIGITS} are read)")
    return int(text)


def strip_bom(text: str) -> str:
    """``text`` without a leading byte order mark. Windows editors and Excel's "CSV UTF-8"
    begin files with one; RFC 8259 lets a JSON parser ignore it, and a CSV header that kept
    it would not have its first column (``\ufeffhost``)."""
    return text[1:] if text.startswith("\ufeff") else text


class LineTooLongError(ValueError):
    """A line of a text file is longer than its reader reads (see :func:`bounded_lines`)."""


def bounded_lines(stream: IO[str], limit: int, name: str) -> Iterator[str]:
    """The lines of ``stream`` (a text stream opened with ``newline=""``, for :mod:`csv`), each
    read with at most ``limit + 1`` characters in memory: a file that is one 1 GB line would
    otherwise be read whole before the csv module's field limit could refuse it. Raises
    :class:`LineTooLongError` naming the line."""
    lineno = 0
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        lineno += 1
        if len(line) > limit:
            raise LineTooLongError(f"{name}:{lineno}: a line longer than {limit} characters")
        yield line


def is_valid_text(text: str) -> bool:
    """True if ``text`` encodes as UTF-8 (it holds no surrogate code point)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def valid_text(text: str) -> str:
    """``text`` with every surrogate code point spelled as a ``\\udXXX`` escape."""
    if is_valid_text(text):
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def clean_json_value(value: object) -> tuple[object, int]:
    """A JSON-like value (dicts, lists, strings, numbers) with every string and key made valid
    text; and how many strings had to be changed."""
    changed = 0

    def walk(v: object) -> object:
        nonlocal changed
        if isinstance(v, str):
            if is_valid_text(v):
                return v
            changed += 1
            return valid_text(v)
        if isinstance(v, Mapping):
            return {walk(k): walk(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [walk(x) for x in v]
        return v

    return walk(value), changed


class NotRegularFileError(OSError):
    """The path names a FIFO, a device, a socket or a directory, not a regular file."""


def file_kind(mode: int) -> str:
    """A short name for a file type (for messages)."""
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _not_regular(path: str | os.PathLike[str], mode: int) -> NotRegularFileError:
    return NotRegularFileError(
        errno.EINVAL, f"{file_kind(mode)}, not a regular file", os.fspath(path)
    )


def open_regular_fd(path: str | os.PathLike[str]) -> int:
    """A read-only descriptor on ``path``, which must be a regular file (after symlinks).

    Opened with ``O_NONBLOCK`` so that a FIFO cannot block the open itself; the flag is
    cleared again once ``fstat`` has shown a regular file (where it has no effect anyway).
    Raises :class:`NotRegularFileError` (an ``OSError``) for anything else.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """:func:`open_regular_fd` as a binary file object."""
    return os.fdopen(open_regular_fd(path), "rb")


def require_regular(path: str | os.PathLike[str]) -> None:
    """Raise :class:`NotRegularFileError` unless ``path`` is a regular file (``stat``, which
    never blocks); ``FileNotFoundError`` and other ``OSError`` pass through."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
