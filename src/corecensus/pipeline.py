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
import multiprocessing
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.queues import SimpleQueue
from pathlib import Path
from typing import Any

from corecensus.coredump import inspect_core, unparsed_core_id
from corecensus.errors import MetadataError
from corecensus.ingest.documents import read_json_document
from corecensus.ingest.fields import CPU, HOSTNAME
from corecensus.ingest.journal import JournalIndex
from corecensus.ingest.metadata import collect_metadata
from corecensus.model import CrashRecord, ParseStatus, Problem, ProblemKind
from corecensus.outside import clean_json_value, valid_text
from corecensus.signing import Signer, crash_row, sign_records, signature_columns, valid_record
from corecensus.store import ScreenResultRow

__all__ = [
    "Signer",
    "completeness",
    "crash_row",
    "find_cores",
    "find_screen_records",
    "keep_best",
    "parse_cores",
    "process_core",
    "screen_row",
    "sign_records",
    "signature_columns",
    "valid_record",
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


_STATUS_RANK = {ParseStatus.UNPARSED: 0, ParseStatus.PARTIAL: 1, ParseStatus.OK: 2}


def completeness(record: CrashRecord) -> tuple[int, int, int, int]:
    """How complete a record of a crash is: ok > partial > unparsed, then more named frames (a
    symbolized record beats a --no-symbols one), more frames, more metadata fields."""
    named = sum(1 for f in record.frames if f.function)
    return (_STATUS_RANK[record.status], named, len(record.frames), len(record.metadata))


def keep_best(stored: CrashRecord, incoming: CrashRecord) -> CrashRecord:
    """One record per crash: the more complete of two records of it (``stored`` on a tie, so a
    re-ingest changes nothing), with metadata fields only the other has filled in. A truncated
    copy ingested first no longer shadows the whole core, and a sidecar added after an ingest
    is applied where it adds fields (issue 10)."""
    best, other = (
        (incoming, stored) if completeness(incoming) > completeness(stored) else (stored, incoming)
    )
    gaps = {k: v for k, v in other.metadata.items() if k not in best.metadata}
    if not gaps:
        return best
    metadata = {**best.metadata, **gaps}
    cpu = best.cpu
    if cpu is None and CPU in gaps and gaps[CPU].isdigit():
        cpu = int(gaps[CPU])
    return dataclasses.replace(best, metadata=metadata, cpu=cpu)


_WORKER: dict[str, object] = {}
# prctl(2) option, include/uapi/linux/prctl.h
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the process that started this worker dies.

    A worker blocks reading its task queue, and under fork it holds the queue's write end
    itself, so it never sees end-of-file: `kill -9` of an ingest left its workers asleep for
    good (issue 10). Linux only (prctl(2), PR_SET_PDEATHSIG); the signal follows the death of
    the thread that forked the worker, which is the thread that runs the whole batch."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request was in place
        os._exit(1)


def _init_worker(
    journal: JournalIndex | None,
    binaries: Sequence[Path],
    symbolize: bool,
    started: SimpleQueue[Path] | None = None,
) -> None:
    _die_with_parent()
    _WORKER.update(journal=journal, binaries=binaries, symbolize=symbolize, started=started)


def _work(path: Path) -> CrashRecord:
    started = _WORKER.get("started")
    if started is not None:
        # Said before the parse, synchronously (a SimpleQueue writes to its pipe in put, with
        # no feeder thread to lose the message when a native crash kills this process): after
        # a worker dies, the cores that were started and not finished are the only suspects.
        started.put(path)  # type: ignore[attr-defined]
    journal = _WORKER.get("journal")
    binaries = _WORKER.get("binaries", ())
    return process_core(
        path,
        journal if isinstance(journal, JournalIndex) else None,
        binaries if isinstance(binaries, (list, tuple)) else (),
        bool(_WORKER.get("symbolize", True)),
    )


def _crashed_record(path: Path, journal: JournalIndex | None = None) -> CrashRecord:
    meta = collect_metadata(path, journal).fields
    return valid_record(
        CrashRecord(
            core_id=unparsed_core_id(str(path), meta.get(HOSTNAME)),
            status=ParseStatus.UNPARSED,
            metadata=meta,
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
    pending = list(cores)
    blind = 0  # pool deaths in a row with no core started: then run the rest alone
    while pending:
        if blind >= 2:
            for path in pending:
                if events is not None:
                    events["retried_alone"] += 1
                yield _isolated(path, journal, binaries, symbolize)
                if on_done:
                    on_done(path)
            return
        # A dead worker breaks the whole pool. Only the cores a worker had started and not
        # finished can have killed it: those run again one at a time, each alone, so the
        # culprit is named; the cores no worker had started go back to a new parallel pool
        # (one death once made every remaining core of a batch run alone: 73 s for 2,073
        # files instead of 7.9 s, issue 10).
        started: SimpleQueue[Path] = multiprocessing.SimpleQueue()
        done: set[Path] = set()
        try:
            with ProcessPoolExecutor(
                max_workers=jobs,
                initializer=_init_worker,
                initargs=(journal, list(binaries), symbolize, started),
            ) as pool:
                futures = {pool.submit(_work, p): p for p in pending}
                for fut in as_completed(futures):
                    rec = fut.result()
                    done.add(futures[fut])
                    yield rec
                    if on_done:
                        on_done(futures[fut])
            pending = []
        except BrokenProcessPool:
            if events is not None:
                events["worker_died"] += 1
            begun: set[Path] = set()
            while not started.empty():
                begun.add(started.get())
            suspects = [p for p in pending if p in begun and p not in done]
            blind = 0 if suspects else blind + 1
            for path in suspects:
                if events is not None:
                    events["retried_alone"] += 1
                yield _isolated(path, journal, binaries, symbolize)
                done.add(path)
                if on_done:
                    on_done(path)
            pending = [p for p in pending if p not in done]
        finally:
            started.close()


def _isolated(
    path: Path, journal: JournalIndex | None, binaries: Sequence[Path], symbolize: bool
) -> CrashRecord:
    try:
        with ProcessPoolExecutor(
            max_workers=1, initializer=_init_worker, initargs=(journal, list(binaries), symbolize)
        ) as pool:
            return pool.submit(_work, path).result()
    except BrokenProcessPool:
        return _crashed_record(path, journal)


SCREEN_KIND = "sdc_screen"


def screen_row(record: Mapping[str, Any]) -> ScreenResultRow:
    """A screen record (``corecensus screen --json``/``--out``) as a store row."""
    decision = record.get("decision") or {}
    try:
        return ScreenResultRow.of(
            host=valid_text(str(record["host"])),
            time_us=int(record["started_at"]),
            mode=str(record["mode"]),
            decision=str(decision.get("verdict", "unknown")),
            result=_valid_mapping(record),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MetadataError(f"screen record without a valid {exc}") from exc


def _valid_mapping(record: Mapping[str, Any]) -> dict[str, Any]:
    cleaned, _changed = clean_json_value(record)
    assert isinstance(cleaned, dict)
    return cleaned


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
