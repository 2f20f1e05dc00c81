"""Core file → crash record with its metadata → signed crash row: the one path the application
layer (``ingest``, ``reprocess``, the demo, the collector, backfill) uses. The pipeline signs; the
store persists the rows it is given.

Parallel ingest runs :func:`process_core` in worker processes and writes to the store from the
parent only (one writer per embedded database). A worker that dies (a hostile core that crashes
a C library) costs only its core: the rest of the batch is retried in fresh workers and the
culprit is recorded as ``unparsed`` with the reason.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from corecensus.coredump import inspect_core
from corecensus.errors import MetadataError
from corecensus.ingest.documents import read_json_document
from corecensus.ingest.journal import JournalIndex
from corecensus.ingest.metadata import collect_metadata
from corecensus.model import CrashRecord, ParseStatus, Problem, ProblemKind
from corecensus.outside import clean_json_value
from corecensus.signing import Signer, crash_row, sign_records, signature_columns
from corecensus.store import ScreenResultRow

__all__ = [
    "Signer",
    "crash_row",
    "find_cores",
    "find_screen_records",
    "parse_cores",
    "process_core",
    "screen_row",
    "sign_records",
    "signature_columns",
]


_CORE_MAGIC = (b"\x7fELF", b"\x28\xb5\x2f\xfd", b"\x04\x22\x4d\x18", b"\xfd7zXZ\x00")
# Files beside cores that are never cores themselves.
_SKIP_SUFFIXES = (".json", ".txt", ".md", ".csv", ".log")


def _looks_like_core(path: Path) -> bool:
    if path.name.startswith("core"):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(18)
    except OSError:
        return False
    if head.startswith(b"\x7fELF"):
        # An ELF file in a directory of cores may be an executable; only ET_CORE (4) counts.
        return len(head) >= 18 and head[16] == 4
    return head.startswith(_CORE_MAGIC[1:])


def find_cores(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files named on the command line as they are; directories searched for core files."""
    out: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for root, _dirs, files in os.walk(p):
                for name in sorted(files):
                    f = Path(root) / name
                    if f.suffix in _SKIP_SUFFIXES or not f.is_file():
                        continue
                    if _looks_like_core(f) and f not in seen:
                        seen.add(f)
                        out.append(f)
        elif p not in seen:
            seen.add(p)
            out.append(p)
    return out


def process_core(
    path: Path,
    journal: JournalIndex | None = None,
    binaries: Sequence[Path] = (),
    symbolize: bool = True,
) -> CrashRecord:
    """Metadata (sidecar, xattrs, journal, file name) plus the parsed core; never raises."""
    meta = collect_metadata(path, journal)
    record = inspect_core(path, binaries=binaries, symbolize=symbolize, metadata=meta.fields)
    extra = [Problem(ProblemKind.METADATA, f"metadata: {e}") for e in meta.errors]
    extra += [Problem(ProblemKind.METADATA, f"metadata: {n}") for n in meta.notes]
    if extra:
        record = dataclasses.replace(record, problems=(*record.problems, *extra))
    return valid_record(record)


def valid_record(record: CrashRecord) -> CrashRecord:
    """``record`` with every string made valid text (see :mod:`corecensus.outside`), and a note
    saying how many were not: a path with bytes that are not UTF-8, or a lone surrogate from a
    JSON source, must never reach the store as it is (it cost whole batches, issue 10)."""
    cleaned, changed = clean_json_value(record.to_json())
    if not changed:
        return record
    assert isinstance(cleaned, dict)
    fixed = CrashRecord.from_json(cleaned)
    note = Problem(
        ProblemKind.METADATA,
        f"{changed} text value(s) were not valid Unicode; kept with \\u escapes",
    )
    return dataclasses.replace(fixed, problems=(*fixed.problems, note))


_WORKER: dict[str, object] = {}


def _init_worker(journal: JournalIndex | None, binaries: Sequence[Path], symbolize: bool) -> None:
    _WORKER.update(journal=journal, binaries=binaries, symbolize=symbolize)


def _work(path: Path) -> CrashRecord:
    journal = _WORKER.get("journal")
    binaries = _WORKER.get("binaries", ())
    return process_core(
        path,
        journal if isinstance(journal, JournalIndex) else None,
        binaries if isinstance(binaries, (list, tuple)) else (),
        bool(_WORKER.get("symbolize", True)),
    )


def _crashed_record(path: Path) -> CrashRecord:
    import hashlib

    return valid_record(
        CrashRecord(
            core_id=hashlib.sha256(os.fsencode(path)).hexdigest()[:32],
            status=ParseStatus.UNPARSED,
            problems=(
                Problem(
                    ProblemKind.WORKER_DIED,
                    "the parser process died on this core (a crash in a native library); skipped",
                ),
            ),
            source=str(path),
        )
    )


def parse_cores(
    cores: Sequence[Path],
    *,
    jobs: int = 1,
    journal: JournalIndex | None = None,
    binaries: Sequence[Path] = (),
    symbolize: bool = True,
    on_done: Callable[[Path], None] | None = None,
    events: Counter[str] | None = None,
) -> Iterator[CrashRecord]:
    """Parse ``cores`` in ``jobs`` worker processes, yielding records as they complete.

    ``events`` counts what went wrong on the way (``worker_died``, ``retried_alone``)."""
    if jobs <= 1:
        for path in cores:
            yield process_core(path, journal, binaries, symbolize)
            if on_done:
                on_done(path)
        return
    done: set[Path] = set()
    try:
        with ProcessPoolExecutor(
            max_workers=jobs,
            initializer=_init_worker,
            initargs=(journal, list(binaries), symbolize),
        ) as pool:
            futures: dict[Future[CrashRecord], Path] = {pool.submit(_work, p): p for p in cores}
            for fut in as_completed(futures):
                rec = fut.result()
                done.add(futures[fut])
                yield rec
                if on_done:
                    on_done(futures[fut])
    except BrokenProcessPool:
        # Which core killed the worker is unknown: run the unfinished ones one by one, each
        # alone in a pool of one, so the culprit can be named and nothing else is lost.
        if events is not None:
            events["worker_died"] += 1
        for path in (p for p in cores if p not in done):
            if events is not None:
                events["retried_alone"] += 1
            yield _isolated(path, journal, binaries, symbolize)
            if on_done:
                on_done(path)


def _isolated(
    path: Path, journal: JournalIndex | None, binaries: Sequence[Path], symbolize: bool
) -> CrashRecord:
    try:
        with ProcessPoolExecutor(
            max_workers=1, initializer=_init_worker, initargs=(journal, list(binaries), symbolize)
        ) as pool:
            return pool.submit(_work, path).result()
    except BrokenProcessPool:
        return _crashed_record(path)


SCREEN_KIND = "sdc_screen"


def screen_row(record: Mapping[str, Any]) -> ScreenResultRow:
    """A screen record (``corecensus screen --json``/``--out``) as a store row."""
    decision = record.get("decision") or {}
    try:
        return ScreenResultRow.of(
            host=str(record["host"]),
            time_us=int(record["started_at"]),
            mode=str(record["mode"]),
            decision=str(decision.get("verdict", "unknown")),
            result=dict(record),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MetadataError(f"screen record without a valid {exc}") from exc


def find_screen_records(
    paths: Iterable[str | os.PathLike[str]],
) -> tuple[list[ScreenResultRow], list[str]]:
    """Screen records among the ``.json`` files named or found under ``paths`` (sidecars and other
    JSON files are not screen records and are left alone); problems as messages."""
    rows: list[ScreenResultRow] = []
    problems: list[str] = []
    candidates: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            candidates.extend(sorted(p.rglob("*.json")))
        elif p.suffix == ".json":
            candidates.append(p)
    for path in candidates:
        try:
            obj = read_json_document(path)
        except MetadataError as exc:
            problems.append(str(exc))
            continue
        if not isinstance(obj, dict) or obj.get("kind") != SCREEN_KIND:
            continue
        try:
            rows.append(screen_row(obj))
        except MetadataError as exc:
            problems.append(f"{path}: {exc}")
    return rows, problems
