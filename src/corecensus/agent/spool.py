"""The local spool: records waiting for the collector, durable and bounded.

One file per record, written to a temporary name, fsynced, renamed, and the directory fsynced
(STYLE.md habit 8), so after a crash or ``kill -9`` a record is either whole or absent. Names
sort by arrival, so the oldest is sent first and dropped first. The spool never holds more than
``max_bytes``: a new record that does not fit pushes out the oldest, and every drop is counted by
reason in ``lost.json`` until a heartbeat reports it (:meth:`Spool.take_lost`).

Several processes write at once (one handler per crash, the daemon): changes happen under an
``flock`` on ``.lock``; readers need no lock because files only ever appear whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corecensus.durable import fsync_dir

__all__ = ["LossReason", "Spool", "SpooledRecord"]


class LossReason:
    """Why a record never reached the collector (the keys of the loss counters)."""

    SPOOL_FULL = "spool_full"  # pushed out by newer records
    TOO_LARGE = "too_large"  # bigger than the whole spool
    CORRUPT = "corrupt"  # unreadable on disk
    REJECTED = "rejected"  # the collector refused it as invalid (4xx other than 429)
    WRITE_FAILED = "write_failed"  # the spool could not be written (disk full, ...)
    DISABLED = "disabled"  # kill switch on while a crash happened


@dataclass(frozen=True, slots=True)
class SpooledRecord:
    name: str
    kind: str
    body: dict[str, Any]
    size: int


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


class Spool:
    """Records (``kind`` + JSON body) on disk, oldest first, at most ``max_bytes`` of them."""

    def __init__(self, directory: Path, max_bytes: int, *, clock: Any = time.time_ns) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self._clock = clock
        self._seq = itertools.count()
        directory.mkdir(parents=True, exist_ok=True)

    # -- locking and counters ---------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read_lost(self) -> Counter[str]:
        try:
            obj = json.loads((self.dir / "lost.json").read_bytes())
        except (FileNotFoundError, ValueError):
            return Counter()
        return Counter({str(k): int(v) for k, v in obj.items() if isinstance(v, int)})

    def _add_lost(self, lost: Mapping[str, int]) -> None:
        if not lost:
            return
        total = self._read_lost()
        total.update(lost)
        _write_atomic(self.dir / "lost.json", json.dumps(dict(total), sort_keys=True).encode())

    def count_lost(self, reason: str, n: int = 1) -> None:
        """Count records lost outside the spool (rejected by the collector, ...)."""
        with self._locked():
            self._add_lost({reason: n})

    def lost(self) -> dict[str, int]:
        """Records lost since the last :meth:`take_lost`, by reason."""
        return dict(self._read_lost())

    def take_lost(self, reported: Mapping[str, int]) -> None:
        """Subtract counts a heartbeat delivered (newer losses stay counted)."""
        with self._locked():
            total = self._read_lost()
            total.subtract(reported)
            kept = {k: v for k, v in total.items() if v > 0}
            _write_atomic(self.dir / "lost.json", json.dumps(kept, sort_keys=True).encode())

    # -- records ----------------------------------------------------------------------------

    def _entries(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for entry in os.scandir(self.dir):
            if entry.name.endswith(".rec"):
                try:
                    out.append((entry.name, entry.stat().st_size))
                except FileNotFoundError:
                    continue  # acknowledged by another process meanwhile
        out.sort()
        return out

    def put(self, kind: str, body: Mapping[str, Any]) -> str | None:
        """Add a record; its name, or None if it was dropped (counted)."""
        data = json.dumps({"kind": kind, "body": body}, separators=(",", ":")).encode()
        name = f"{self._clock():020d}-{os.getpid()}-{next(self._seq):06d}-{kind}.rec"
        with self._locked():
            if len(data) > self.max_bytes:
                self._add_lost({LossReason.TOO_LARGE: 1})
                return None
            entries = self._entries()
            total = sum(size for _, size in entries)
            dropped = 0
            for old, size in entries:
                if total + len(data) <= self.max_bytes:
                    break
                (self.dir / old).unlink(missing_ok=True)
                total -= size
                dropped += 1
            try:
                _write_atomic(self.dir / name, data)
            except OSError:
                self._add_lost({LossReason.WRITE_FAILED: 1, LossReason.SPOOL_FULL: dropped})
                return None
            self._add_lost({LossReason.SPOOL_FULL: dropped} if dropped else {})
        return name

    def peek(self, max_records: int, max_bytes: int) -> list[SpooledRecord]:
        """The oldest records, at most ``max_records`` and about ``max_bytes`` (always at least
        one); unreadable ones are removed and counted as corrupt."""
        out: list[SpooledRecord] = []
        used = 0
        corrupt = 0
        for name, size in self._entries():
            if len(out) >= max_records or (out and used + size > max_bytes):
                break
            try:
                obj = json.loads((self.dir / name).read_bytes())
                kind, body = str(obj["kind"]), dict(obj["body"])
            except FileNotFoundError:
                continue
            except (ValueError, KeyError, TypeError):
                (self.dir / name).unlink(missing_ok=True)
                corrupt += 1
                continue
            out.append(SpooledRecord(name, kind, body, size))
            used += size
        if corrupt:
            self.count_lost(LossReason.CORRUPT, corrupt)
        return out

    def ack(self, names: list[str]) -> None:
        """Remove records the collector has durably stored."""
        for name in names:
            (self.dir / name).unlink(missing_ok=True)
        fsync_dir(self.dir)

    def depth(self) -> tuple[int, int]:
        """(records, bytes) waiting."""
        entries = self._entries()
        return len(entries), sum(size for _, size in entries)

    def clean_temporaries(self, older_than_s: float = 60.0) -> int:
        """Remove temporary files a killed writer left (younger ones may be a live writer's)."""
        removed = 0
        now = time.time()
        for entry in os.scandir(self.dir):
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    if now - entry.stat().st_mtime > older_than_s:
                        os.unlink(entry.path)
                        removed += 1
        return removed
