"""Making a file system change durable: what a crash or power loss must not undo.

``fsync`` of a file makes its contents durable, not its name: a file just created, renamed
into place or removed is durable only once its directory is synced too (Linux ``fsync(2)``,
"Calling fsync() does not necessarily ensure that the entry in the directory containing the
file has also reached disk"). The agent's spool and core-pattern state and the collector's
journal all rely on it.
"""

from __future__ import annotations

import os

__all__ = ["fsync_dir"]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make the entries of directory ``path`` durable (files created, renamed or removed in
    it). Raises :class:`OSError`."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
