"""The collector's Prometheus metrics, in a registry of their own (injected, never the global
default: two collectors in one process, as in tests, must not share counters)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from corecensus.app.uploads import UploadCounts
from corecensus.ingest.wire import RecordKind

__all__ = ["CollectorMetrics", "render_shared_metrics", "share_metrics_between_processes"]

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def share_metrics_between_processes(directory: Path) -> None:
    """From now on, metrics of this process and of the processes it starts (which inherit the
    environment) keep their values in files under ``directory``, summed by
    :func:`render_shared_metrics`: prometheus-client's multiprocess mode, for a collector of
    several front-end processes and one writer. Process-wide by prometheus-client's design
    (it reads the variable when it is imported; metrics made after this call use the files)."""
    from prometheus_client import values

    os.environ[_MULTIPROC_ENV] = str(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def render_shared_metrics(directory: Path) -> bytes:
    """The text format of every process's metrics under ``directory``, summed."""
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return generate_latest(registry)


_PREFIX = "corecensus_collector"


@dataclass(frozen=True, slots=True)
class CollectorMetrics:
    registry: CollectorRegistry
    received: Counter
    stored: Counter
    duplicate: Counter
    rejected: Counter
    requests: Counter
    shed: Counter
    queue_records: Gauge
    queue_requests: Gauge
    admission_records: Gauge
    commit_seconds: Histogram
    commit_batch_records: Histogram
    checkpoint_seconds: Histogram
    journal_bytes: Gauge
    load_seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> CollectorMetrics:
        reg = registry if registry is not None else CollectorRegistry()
        return cls(
            registry=reg,
            received=Counter(
                f"{_PREFIX}_records_received",
                "Records received in upload bodies",
                ["kind"],
                registry=reg,
            ),
            stored=Counter(
                f"{_PREFIX}_records_stored", "Records newly committed", ["kind"], registry=reg
            ),
            duplicate=Counter(
                f"{_PREFIX}_records_duplicate",
                "Records already in the store",
                ["kind"],
                registry=reg,
            ),
            rejected=Counter(
                f"{_PREFIX}_records_rejected",
                "Records refused, by reason",
                ["kind", "reason"],
                registry=reg,
            ),
            requests=Counter(
                f"{_PREFIX}_requests", "HTTP requests answered", ["path", "status"], registry=reg
            ),
            shed=Counter(
                f"{_PREFIX}_requests_shed",
                "Upload requests refused at the door (429/503), by reason",
                ["reason"],
                registry=reg,
            ),
            # Set by the writer alone; with several processes, the live ones' values summed.
            queue_records=Gauge(
                f"{_PREFIX}_queue_records",
                "Records waiting for the writer",
                registry=reg,
                multiprocess_mode="livesum",
            ),
            queue_requests=Gauge(
                f"{_PREFIX}_queue_requests",
                "Requests waiting for the writer",
                registry=reg,
                multiprocess_mode="livesum",
            ),
            # Each front end's own (a pid label with several processes).
            admission_records=Gauge(
                f"{_PREFIX}_admission_records",
                "Records a new upload finds ahead of it, as this process's admission counts "
                "them (its own admitted and queued work, and the other front ends' as the "
                "writer last said)",
                registry=reg,
                multiprocess_mode="liveall",
            ),
            commit_seconds=Histogram(
                f"{_PREFIX}_commit_seconds",
                "Seconds per group commit",
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                registry=reg,
            ),
            commit_batch_records=Histogram(
                f"{_PREFIX}_commit_batch_records",
                "Records per group commit",
                buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000),
                registry=reg,
            ),
            checkpoint_seconds=Histogram(
                f"{_PREFIX}_checkpoint_seconds",
                "Seconds per checkpoint of the store's write-ahead log (by the journal's "
                "loader, off the acknowledgement path)",
                buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                registry=reg,
            ),
            journal_bytes=Gauge(
                f"{_PREFIX}_journal_bytes",
                "Bytes of the journal not yet applied to the store (acknowledged, durable, "
                "not yet readable by the analysis)",
                registry=reg,
                multiprocess_mode="livesum",
            ),
            load_seconds=Histogram(
                f"{_PREFIX}_load_seconds",
                "Seconds per load of journal frames into the store (one transaction)",
                buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                registry=reg,
            ),
        )

    def count_stored(self, counts: UploadCounts, *, new: bool = True) -> None:
        """Add what storing a group did, per kind: its rows already there to
        ``records_duplicate`` and, with ``new``, its new rows to ``records_stored``. The writer
        counts both when it journals a group; the loader only the duplicates the store's keys
        find (its new rows were counted as stored when journaled)."""
        for kind, result in (
            (RecordKind.CRASHES, counts.crashes),
            (RecordKind.HEARTBEATS, counts.heartbeats),
            (RecordKind.SCREENINGS, counts.screens),
        ):
            if new and result.new:
                self.stored.labels(kind=str(kind)).inc(result.new)
            if result.duplicate:
                self.duplicate.labels(kind=str(kind)).inc(result.duplicate)
