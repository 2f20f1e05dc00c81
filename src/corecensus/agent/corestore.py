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

__all__ = ["PruneResult", "prune_cores", "store_core"]


def store_core(raw: Path, directory: Path, name: str, level: int = 3) -> Path:
    """Compress the raw core the hold spilled into ``<directory>/<name>.zst`` (fsynced, renamed
    when complete) and remove the raw file. Runs after the process was released: the zstd work
    is not the crash's to wait for."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{name}.zst"
    tmp = directory / f".{name}.zst.{os.getpid()}.tmp"
    # Owner only: a core holds the process's memory (DESIGN.md, "Privacy").
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out, raw.open("rb") as src:
            zstandard.ZstdCompressor(level=level).copy_stream(src, out, size=raw.stat().st_size)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    raw.unlink(missing_ok=True)
    return path


@dataclass(frozen=True, slots=True)
class PruneResult:
    removed_for_age: int
    removed_for_space: int
    kept_bytes: int


def prune_cores(
    directory: Path,
    *,
    max_total_bytes: int,
    max_age_s: float,
    now: float,
    keep: Path | None = None,
    stale_s: float = 86400.0,
) -> PruneResult:
    """Delete stored cores (and their ``.json`` sidecars) older than ``max_age_s``, then the
    oldest until the rest fit in ``max_total_bytes``; ``keep`` (the core just written) is never
    deleted for space. Temporary files of live writers are left alone; those a killed handler
    left behind (older than ``stale_s``) are removed."""
    cores: list[tuple[float, Path, int]] = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return PruneResult(0, 0, 0)
    for entry in entries:
        if entry.name.startswith("."):
            _remove_stale(entry, now - stale_s)
            continue
        if not entry.name.endswith(".zst"):
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


def _remove_stale(entry: os.DirEntry[str], before: float) -> None:
    try:
        if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < before:
            os.unlink(entry.path)
    except OSError:
        pass
