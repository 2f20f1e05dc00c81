"""Cores kept on the host: zstd-compressed, cut at a size cap, pruned by age and total bytes.

Memory contents stay on the host (DESIGN.md, "Privacy"): these files are for an engineer on the
host, never uploaded. A core is written to a hidden temporary name and renamed when complete, so
a reader (or ``corecensus ingest`` of the directory) never sees half a core.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import zstandard

__all__ = ["CoreWriter", "PruneResult", "prune_cores"]


class CoreWriter:
    """Streams one core into ``<directory>/<name>.zst``, keeping at most ``max_bytes`` of it
    (uncompressed). Bytes past the cap are counted, not kept."""

    def __init__(self, directory: Path, name: str, max_bytes: int, level: int = 3) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = directory / f"{name}.zst"
        self._tmp = directory / f".{name}.zst.{os.getpid()}.tmp"
        # Owner only: a core holds the process's memory (DESIGN.md, "Privacy").
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self._fh = os.fdopen(fd, "wb")
        self._zst = zstandard.ZstdCompressor(level=level).stream_writer(self._fh, closefd=False)
        self._max = max_bytes
        self.kept = 0
        self.seen = 0

    @property
    def full(self) -> bool:
        return self.kept >= self._max

    def write(self, data: bytes) -> None:
        self.seen += len(data)
        room = self._max - self.kept
        if room <= 0:
            return
        part = data[:room]
        self._zst.write(part)
        self.kept += len(part)

    def finish(self) -> Path:
        """Complete the file (fsync, rename) and return its path."""
        self._zst.flush(zstandard.FLUSH_FRAME)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._fh.close()
        finally:
            self._tmp.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class PruneResult:
    removed_for_age: int
    removed_for_space: int
    kept_bytes: int


def prune_cores(
    directory: Path, *, max_total_bytes: int, max_age_s: float, now: float, keep: Path | None = None
) -> PruneResult:
    """Delete stored cores (and their ``.json`` sidecars) older than ``max_age_s``, then the
    oldest until the rest fit in ``max_total_bytes``; ``keep`` (the core just written) is never
    deleted for space. Temporary files of live writers are left alone."""
    cores: list[tuple[float, Path, int]] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return PruneResult(0, 0, 0)
    for entry in entries:
        if entry.name.startswith(".") or not entry.name.endswith(".zst"):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        cores.append((st.st_mtime, Path(entry.path), st.st_size))
    cores.sort()
    by_age = by_space = 0
    remaining: list[tuple[float, Path, int]] = []
    for mtime, path, size in cores:
        if now - mtime > max_age_s and path != keep:
            _remove(path)
            by_age += 1
        else:
            remaining.append((mtime, path, size))
    total = sum(size for _, _, size in remaining)
    for _mtime, path, size in remaining:
        if total <= max_total_bytes:
            break
        if path == keep:
            continue
        _remove(path)
        total -= size
        by_space += 1
    return PruneResult(by_age, by_space, total)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    Path(f"{path}.json").unlink(missing_ok=True)
