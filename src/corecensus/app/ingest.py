"""Use case: crashes (core files, or records already parsed) and screen records into the store.

The one records -> store loop: ``ingest``, the demo, the collector and backfill all come here.
Records are signed by the pipeline and written in batches, so memory stays flat and a failure
loses at most the batch in flight.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corecensus.coredump import unparsed_core_id
from corecensus.ingest.journal import JournalIndex, load_journal
from corecensus.model import CrashRecord, ParseStatus
from corecensus.pipeline import (
    find_cores,
    find_screen_records,
    keep_best,
    parse_cores,
    sign_records,
)
from corecensus.store import SCREEN_RESULTS, ScreenResultRow, Store

__all__ = [
    "BATCH",
    "IngestOptions",
    "IngestSummary",
    "ingest_paths",
    "store_records",
    "store_screens",
]

# Records per store call: bounds memory and what one failure can cost.
BATCH = 200

Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class IngestOptions:
    """How cores are parsed: worker processes (``None``: one per CPU, at most one per core),
    ``journalctl -o json`` exports, ``--binaries`` directories, and whether to symbolize."""

    jobs: int | None = None
    journals: Sequence[Path] = ()
    binaries: Sequence[Path] = ()
    symbolize: bool = True


@dataclass
class IngestSummary:
    """What an ingest did. ``reasons`` counts why cores were not fully parsed (by the detail of
    each record's worst problem, file names stripped); ``kinds`` counts them by problem kind."""

    location: str
    cores: int = 0
    ingested: int = 0
    duplicates: int = 0
    replaced: int = 0  # stored records replaced by a more complete record of the same crash
    removed_unparsed: int = 0  # unparsed records of files that now parsed
    status: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    screens: int = 0
    worker_died: int = 0
    retried_alone: int = 0
    screen_errors: list[str] = field(default_factory=list)
    journal_errors: list[str] = field(default_factory=list)
    # Bad journal lines past the index's list (JournalIndex.MAX_ERRORS_LISTED), counted only.
    journal_errors_not_listed: int = 0

    def count(self, record: CrashRecord) -> None:
        self.status[str(record.status)] += 1
        if record.status is ParseStatus.OK or not record.problems:
            return
        worst = max(record.problems, key=lambda p: p.kind.severity)
        self.kinds[str(worst.kind)] += 1
        self.reasons[_reason(worst.detail)] += 1

    def to_json(self) -> dict[str, Any]:
        """The ``ingest --json`` summary (a stable contract)."""
        return {
            "db": self.location,
            "cores": self.cores,
            "ingested": self.ingested,
            "duplicates": self.duplicates,
            "replaced": self.replaced,
            "removed_unparsed": self.removed_unparsed,
            "ok": self.status["ok"],
            "partial": self.status["partial"],
            "unparsed": self.status["unparsed"],
            "reasons": dict(self.reasons.most_common()),
            "kinds": dict(self.kinds.most_common()),
            "screens": self.screens,
            "worker_died": self.worker_died,
            "retried_alone": self.retried_alone,
            "screen_errors": _listed(self.screen_errors, 0),
            "journal_errors": _listed(self.journal_errors, self.journal_errors_not_listed),
        }


def _listed(errors: list[str], not_listed: int, shown: int = 20) -> list[str]:
    """The first ``shown`` errors, and how many more there were (they were once cut off with
    no word of them)."""
    more = len(errors) - min(len(errors), shown) + not_listed
    return errors[:shown] + ([f"... and {more} more not listed"] if more else [])


def _reason(message: str) -> str:
    """The reason without the file name, so identical problems are counted together."""
    head, sep, tail = message.partition(": ")
    return tail if sep and ("/" in head or head.startswith("<")) else message


def store_records(
    store: Store,
    records: Iterable[CrashRecord],
    summary: IngestSummary | None = None,
    *,
    batch: int = BATCH,
) -> IngestSummary:
    """Sign ``records`` and store them in batches; the summary counts what happened (a summary
    passed in is added to). Used for records parsed elsewhere (the agent, backfill workers)."""
    out = summary if summary is not None else IngestSummary(store.location)
    pending: list[CrashRecord] = []
    next_snapshot = 0.0  # the first batch stored leaves one at once

    def flush() -> None:
        # One record per crash, the best kept (see keep_best): records of one crash within
        # the batch are merged first, then each with what the store holds.
        batch: dict[str, CrashRecord] = {}
        for record in pending:
            seen = batch.get(record.core_id)
            if seen is not None:
                out.duplicates += 1
            batch[record.core_id] = record if seen is None else keep_best(seen, record)
        pending.clear()
        # An unparsed record of a file that now parses is the same crash: it goes.
        stale = {
            sid
            for r in batch.values()
            if r.status is not ParseStatus.UNPARSED and r.source
            for sid in _unparsed_ids(r)
            if sid not in batch
        }
        stored = store.get_crashes([*batch, *stale])
        fresh = [r for cid, r in batch.items() if cid not in stored]
        better = []
        for cid, r in batch.items():
            if cid in stored:
                merged = keep_best(stored[cid], r)
                if merged == stored[cid]:
                    out.duplicates += 1
                else:
                    better.append(merged)
        gone = [sid for sid in stale if sid in stored]
        result = store.add_crashes(sign_records(fresh))
        out.ingested += result.new
        out.duplicates += result.duplicate
        if better or gone:
            store.replace_crashes(sign_records(better), remove=gone)
            out.replaced += len(better)
            out.removed_unparsed += len(gone)
        nonlocal next_snapshot
        started = time.monotonic()
        if started >= next_snapshot:
            # Readers (analyze) cannot open a store a writer holds; they read this copy. A
            # large store takes a while to copy: never more than a tenth of the time.
            store.write_snapshot()
            took = time.monotonic() - started
            next_snapshot = started + max(SNAPSHOT_EVERY_S, 10 * took)

    for record in records:
        out.count(record)
        pending.append(record)
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    return out


# How often a long ingest refreshes the snapshot readers use (seconds); it also writes one as
# soon as it has stored its first batch, and at its end.
SNAPSHOT_EVERY_S = 30.0


def _unparsed_ids(record: CrashRecord) -> tuple[str, str]:
    """The identities an unparsed record of this record's file would have had (with and without
    its host: a worker that died knew the sidecar's, a core that could not be opened may not)."""
    source = record.source or ""
    return (
        unparsed_core_id(source, record.metadata.get("COREDUMP_HOSTNAME")),
        unparsed_core_id(source),
    )


def store_screens(store: Store, rows: Sequence[ScreenResultRow]) -> int:
    """Screen records into the store; returns how many were new."""
    return store.add(SCREEN_RESULTS, rows).new if rows else 0


def ingest_paths(
    store: Store,
    paths: Iterable[str | os.PathLike[str]],
    options: IngestOptions = IngestOptions(),
    *,
    progress: Progress | None = None,
) -> IngestSummary:
    """Core files and directories (with their metadata) and screen records into ``store``.

    ``progress(done, total)`` is called as each core finishes. Raises
    :class:`~corecensus.errors.CorecensusError` (a journal that cannot be read, a store that
    fails); records stored before a store failure stay stored."""
    given = [Path(p) for p in paths]
    journal: JournalIndex | None = None
    for j in options.journals:
        journal = load_journal(j, journal)
    cores = find_cores(p for p in given if p.suffix != ".json")
    screens, screen_problems = find_screen_records(given)
    summary = IngestSummary(
        store.location,
        cores=len(cores),
        screen_errors=list(screen_problems),
        journal_errors=[str(e) for e in (journal.errors if journal else [])],
        journal_errors_not_listed=journal.errors_not_listed if journal else 0,
    )
    jobs = options.jobs or max(1, min(len(cores), os.cpu_count() or 1))
    events: Counter[str] = Counter()
    done = 0

    def advanced(_path: Path) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, len(cores))

    records = parse_cores(
        cores,
        jobs=jobs,
        journal=journal,
        binaries=list(options.binaries),
        symbolize=options.symbolize,
        on_done=advanced,
        events=events,
    )
    try:
        store_records(store, records, summary)
    finally:
        summary.worker_died = events["worker_died"]
        summary.retried_alone = events["retried_alone"]
    summary.screens = store_screens(store, screens)
    store.write_snapshot()
    return summary
