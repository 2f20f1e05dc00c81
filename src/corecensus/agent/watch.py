"""Cores written by others: systemd-coredump's directory (its metadata in the files' xattrs) and
configured directories, found by polling and parsed each in its own process.

A file is taken once its size has been the same at two scans (a writer that is still writing
changes it; systemd-coredump writes under a temporary name and renames, so its files are whole
at once). Each core is read by ``corecensus inspect --json --no-symbols`` in a child process
with a time budget: a hostile core that hangs or crashes the parser costs only that child, and
the record says so (DESIGN.md: bad input never crashes the agent). What was taken is remembered
in ``watch.json`` (path -> size and mtime), so a restart does not upload a core twice.

For a core in systemd-coredump's directory the journal knows more than the file's xattrs (the
unit, the command line, ``/proc/<pid>/status`` with the allowed CPUs, the cgroup, ...):
:func:`journal_entry` asks ``journalctl -o json COREDUMP_FILENAME=<path>`` within the parse
budget, and the child reads the answer with ``inspect --journal``, so the usual order of
metadata sources holds (sidecar > xattrs > journal > file name). When journalctl is absent, out
of time or has no entry for the file, the xattrs alone describe the core.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corecensus.agent.handler import minimal_record
from corecensus.model import CrashRecord, Problem, ProblemKind

__all__ = ["Watcher", "inspect_in_child", "journal_entry"]

_SKIP_SUFFIXES = (".json", ".tmp", ".txt", ".log")
_MAGIC = (b"\x7fELF", b"\x28\xb5\x2f\xfd", b"\x04\x22\x4d\x18", b"\xfd7zXZ\x00")
_MAX_REMEMBERED = 100_000


def _looks_like_core(path: Path) -> bool:
    if path.name.startswith(".") or path.name.endswith(_SKIP_SUFFIXES):
        return False
    try:
        with path.open("rb") as fh:
            head = fh.read(18)
    except OSError:
        return False
    if head.startswith(b"\x7fELF"):
        return len(head) >= 18 and head[16] == 4  # ET_CORE, not an executable beside the cores
    return head.startswith(_MAGIC[1:])


Runner = Callable[[Sequence[str], float], tuple[int, bytes]]


def _run(argv: Sequence[str], timeout_s: float) -> tuple[int, bytes]:
    """Run a child; (-1, b"") when it outlives its budget (it is killed)."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return -1, b""
    return done.returncode, done.stdout


def journal_entry(path: Path, journalctl: str, budget_s: float, run: Runner = _run) -> bytes | None:
    """systemd-coredump's journal entry for the core file ``path`` (``journalctl -o json``
    lines), or None: no journalctl, out of time, an error, or no entry."""
    argv = [journalctl, "-o", "json", "--no-pager", "-q", f"COREDUMP_FILENAME={path}"]
    try:
        rc, out = run(argv, budget_s)
    except OSError:
        return None  # no journalctl on this host (or not executable): the xattrs alone
    return out if rc == 0 and out.strip() else None


def inspect_in_child(
    path: Path,
    budget_s: float,
    extra_metadata: Mapping[str, str],
    run: Runner = _run,
    journal: Path | None = None,
) -> CrashRecord:
    """The crash record of one core file, parsed in a child process within ``budget_s``;
    ``journal``: a ``journalctl -o json`` export with its entry."""
    argv = [sys.executable, "-m", "corecensus", "inspect", "--json", "--no-symbols", str(path)]
    if journal is not None:
        argv[-1:-1] = ["--journal", str(journal)]
    rc, out = run(argv, budget_s)
    meta = dict(extra_metadata)
    if rc == -1:
        return minimal_record(
            meta | {"COREDUMP_FILENAME": str(path)},
            [
                Problem(
                    ProblemKind.TIMED_OUT,
                    f"timed_out: parsing {path} took longer than {budget_s:g} s",
                )
            ],
        )
    try:
        record = CrashRecord.from_json(json.loads(out))
    except (ValueError, KeyError, TypeError):
        return minimal_record(
            meta | {"COREDUMP_FILENAME": str(path)},
            [Problem(ProblemKind.WORKER_DIED, f"the parser process failed on {path} (exit {rc})")],
        )
    merged = {**meta, **dict(record.metadata)}  # the file's own metadata wins
    for key in ("COREDUMP_HOSTNAME",):
        if key in meta:
            merged[key] = meta[key]  # the agent names its host the same way for every record
    return CrashRecord.from_json({**record.to_json(), "metadata": merged})


@dataclass
class Watcher:
    """Polls ``dirs`` for new core files; ``state_file`` remembers what was taken."""

    dirs: Sequence[Path]
    state_file: Path
    seen: dict[str, list[int]] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            obj: Any = json.loads(self.state_file.read_text())
            if isinstance(obj, dict):
                self.seen = {str(k): list(v) for k, v in obj.items()}
        except (OSError, ValueError):
            self.seen = {}

    def scan(self) -> list[Path]:
        """Core files that are new and settled since the last scan."""
        ready: list[Path] = []
        present: set[str] = set()
        for d in self.dirs:
            try:
                entries = sorted(os.scandir(d), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                if not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                key = entry.path
                present.add(key)
                if self.seen.get(key) == [st.st_size, st.st_mtime_ns]:
                    continue
                if self.pending.get(key) == st.st_size and _looks_like_core(Path(key)):
                    ready.append(Path(key))
                    del self.pending[key]
                else:
                    self.pending[key] = st.st_size
        # Forget files that are gone, so the memory stays as small as the directories.
        self.seen = {k: v for k, v in self.seen.items() if k in present}
        return ready

    def taken(self, path: Path) -> None:
        try:
            st = path.stat()
        except OSError:
            return
        self.seen[str(path)] = [st.st_size, st.st_mtime_ns]
        if len(self.seen) > _MAX_REMEMBERED:
            for key in list(self.seen)[: len(self.seen) - _MAX_REMEMBERED]:
                del self.seen[key]
        tmp = self.state_file.with_name(f".{self.state_file.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.seen))
        os.replace(tmp, self.state_file)
