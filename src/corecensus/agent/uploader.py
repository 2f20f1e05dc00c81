"""Spool -> collector, over httpx, under the collector's rules (docs/collector.md).

One call of :meth:`Uploader.upload_once` sends at most one batch: the oldest spooled records of
one kind, zstd-compressed, with a deadline header so the collector can shed it at the door. The
answer decides what happens to the batch:

| answer | the batch | counted as lost |
|---|---|---|
| 200 / 422 ack | removed; refused records never retried | ``rejected:<reason>`` per refused record |
| 400, 411, 415, 422 error, 403 | removed (retrying cannot help) | ``refused:<error>`` per record |
| 413 | kept; next batches half the size; a single record is removed | ``too_large`` |
| 401 | kept; uploads stop until the token is fixed (a long wait) | -- |
| 408, 429, 503, other 5xx, network errors | kept; retried after backoff (Retry-After honoured) | -- |

Every request first takes a token from the rate cap, and the first one after start-up waits a
random part of ``first_contact_window_s``. Nothing here sleeps: the caller (the daemon) asks
:meth:`Uploader.ready_in` how long to wait, so tests run the real logic with an injected clock.
"""

from __future__ import annotations

import enum
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

import corecensus
from corecensus.agent.backoff import (
    TokenBucket,
    first_contact_delay,
    parse_retry_after,
    retry_delay,
)
from corecensus.agent.config import AgentConfig
from corecensus.agent.exposure import AGENT_SERVICE
from corecensus.agent.spool import LossReason, Spool, SpooledRecord
from corecensus.ingest.wire import (
    AGENT_HEADER,
    CONTENT_TYPE,
    DEADLINE_HEADER,
    PATHS,
    SCHEMA_VERSION,
    BatchAck,
    ContentEncoding,
    RecordKind,
    WireError,
    compress,
)

__all__ = ["SPOOL_KINDS", "UploadOutcome", "UploadResult", "UploadStats", "Uploader", "loss_report"]

# Spool kind -> wire kind.
SPOOL_KINDS: Mapping[str, RecordKind] = {
    "crash": RecordKind.CRASHES,
    "heartbeat": RecordKind.HEARTBEATS,
    "screening": RecordKind.SCREENINGS,
}
_DROP_STATUSES = frozenset({400, 403, 411, 415})
_RETRY_STATUSES = frozenset({408, 429})
_UNAUTHORIZED_WAIT_S = 3600.0


class UploadOutcome(enum.StrEnum):
    SENT = "sent"  # acknowledged: stored (some records may have been refused)
    IDLE = "idle"  # nothing to send
    WAIT = "wait"  # not yet allowed (first contact, backoff, rate cap)
    RETRY = "retry"  # the collector could not take it now; kept for later
    DROPPED = "dropped"  # the collector refused the batch as such; removed and counted
    UNAUTHORIZED = "unauthorized"  # token refused; kept, uploads paused


@dataclass(slots=True)
class UploadResult:
    outcome: UploadOutcome
    records: int = 0
    status: int | None = None
    detail: str = ""
    wait_s: float = 0.0


@dataclass(slots=True)
class UploadStats:
    """What ``agent status`` shows about uploads."""

    last_success_wall: float | None = None
    last_attempt_wall: float | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    sent_records: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    lost_reported: Counter[str] = field(default_factory=Counter)


class _Raw:
    """A spooled record body as the wire encoder wants it (``to_json``)."""

    def __init__(self, body: dict[str, Any]) -> None:
        self._body = body

    def to_json(self) -> dict[str, Any]:
        return self._body


class Uploader:
    def __init__(
        self,
        config: AgentConfig,
        spool: Spool,
        client: httpx.Client,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        agent_info: Callable[[], str] | None = None,
    ) -> None:
        if not config.collector_url:
            raise ValueError("no collector_url configured")
        self.config = config
        self.spool = spool
        self.client = client
        self.rng = rng or random.Random()
        self.clock = clock
        self.wall_clock = wall_clock
        self.agent_info = agent_info or (lambda: f"corecensus-agent/{corecensus.__version__}")
        self.bucket = TokenBucket(config.requests_per_s, config.request_burst, clock)
        self.not_before = clock() + first_contact_delay(config.first_contact_window_s, self.rng)
        self.batch_records = config.batch_records
        self.stats = UploadStats()

    def ready_in(self) -> float:
        """Seconds until a request may be made (first contact, backoff, rate cap)."""
        return max(0.0, self.not_before - self.clock(), self.bucket.wait_s())

    def _batch(self) -> tuple[RecordKind, list[SpooledRecord]]:
        peeked = self.spool.peek(self.batch_records * 4, self.config.batch_max_bytes)
        unknown = [r for r in peeked if r.kind not in SPOOL_KINDS]
        if unknown:  # written by a newer agent, or damaged: never sendable
            self.spool.ack([r.name for r in unknown])
            self.spool.count_lost(LossReason.CORRUPT, len(unknown))
            peeked = [r for r in peeked if r.kind in SPOOL_KINDS]
        if not peeked:
            return RecordKind.CRASHES, []
        kind = peeked[0].kind
        return SPOOL_KINDS[kind], [r for r in peeked if r.kind == kind][: self.batch_records]

    def _backoff(self, retry_after: float | None) -> float:
        self.stats.consecutive_failures += 1
        wait = retry_delay(
            self.stats.consecutive_failures - 1,
            self.config.backoff_base_s,
            self.config.backoff_max_s,
            self.rng,
            retry_after,
        )
        self.not_before = self.clock() + wait
        return wait

    def _drop(self, batch: list[SpooledRecord], reason: str) -> None:
        self.spool.ack([r.name for r in batch])
        self.spool.count_lost(reason, len(batch))

    def upload_once(self) -> UploadResult:
        """Send the oldest batch if allowed now; see the module docstring for what follows.

        A batch of heartbeats that holds the agent's own heartbeat also reports the records lost
        since the last report, by reason: in that record's ``lost`` field (the newest one's, if
        the batch holds several), which the collector stores, and in the agent header, which an
        older collector logs. The counts are cleared only when that batch is acknowledged."""
        wait = self.ready_in()
        if wait > 0:
            return UploadResult(UploadOutcome.WAIT, wait_s=wait)
        kind, batch = self._batch()
        if not batch:
            return UploadResult(UploadOutcome.IDLE)
        records = [dict(_Raw(r.body).to_json()) for r in batch]
        lost: dict[str, int] = {}
        if kind is RecordKind.HEARTBEATS:
            own = [i for i, b in enumerate(records) if b.get("service") == AGENT_SERVICE]
            if own:  # else: reported with a later batch that carries the agent's heartbeat
                lost = dict(self.spool.lost())
                records[own[-1]]["lost"] = dict(sorted(lost.items()))
        body = {"schema_version": SCHEMA_VERSION, "kind": str(kind), "records": records}
        payload = compress(json.dumps(body, separators=(",", ":")).encode(), ContentEncoding.ZSTD)
        extra_agent_info = loss_report(lost)
        headers = {
            "Content-Type": CONTENT_TYPE,
            "Content-Encoding": str(ContentEncoding.ZSTD),
            DEADLINE_HEADER: str(int(self.config.request_timeout_s * 1000)),
            AGENT_HEADER: (
                self.agent_info() + (" " + extra_agent_info if extra_agent_info else "")
            )[:512],
        }
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token}"
        url = self.config.collector_url.rstrip("/") + PATHS[kind]  # type: ignore[union-attr]
        self.bucket.take()
        self.stats.last_attempt_wall = self.wall_clock()
        try:
            response = self.client.post(
                url, content=payload, headers=headers, timeout=self.config.request_timeout_s
            )
        except httpx.HTTPError as exc:
            self.stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
            return UploadResult(
                UploadOutcome.RETRY, len(batch), None, self.stats.last_error, self._backoff(None)
            )
        status = response.status_code
        self.stats.statuses[status] += 1
        error = _error_reason(response)
        if status in (200, 422) and error is None:
            try:
                ack = BatchAck.from_json(response.json())
            except (WireError, ValueError) as exc:
                self.stats.last_error = f"{status}: unreadable ack ({exc})"
                return UploadResult(
                    UploadOutcome.RETRY,
                    len(batch),
                    status,
                    self.stats.last_error,
                    self._backoff(None),
                )
            self.spool.ack([r.name for r in batch])
            refused = Counter(f"{LossReason.REJECTED}:{p.reason}" for p in ack.rejected)
            for reason, n in refused.items():
                self.spool.count_lost(reason, n)
            self.stats.consecutive_failures = 0
            self.stats.last_success_wall = self.wall_clock()
            self.stats.sent_records += len(batch) - len(ack.rejected)
            self.batch_records = min(self.config.batch_records, self.batch_records * 2)
            if lost:
                self.spool.take_lost(lost)
                self.stats.lost_reported.update(lost)
            return UploadResult(UploadOutcome.SENT, len(batch), status)
        self.stats.last_error = f"{status} {error or ''}".strip()
        if status in _DROP_STATUSES or status == 422:
            self._drop(batch, f"refused:{error or status}")
            return UploadResult(UploadOutcome.DROPPED, len(batch), status, self.stats.last_error)
        if status == 413:
            if len(batch) == 1:
                self._drop(batch, LossReason.TOO_LARGE)
                return UploadResult(UploadOutcome.DROPPED, 1, status, self.stats.last_error)
            self.batch_records = max(1, len(batch) // 2)
            return UploadResult(UploadOutcome.RETRY, len(batch), status, self.stats.last_error)
        if status == 401:
            self.stats.consecutive_failures += 1
            self.not_before = self.clock() + _UNAUTHORIZED_WAIT_S
            return UploadResult(
                UploadOutcome.UNAUTHORIZED,
                len(batch),
                status,
                self.stats.last_error,
                _UNAUTHORIZED_WAIT_S,
            )
        retry_after = parse_retry_after(response.headers.get("Retry-After"), self.wall_clock())
        if status not in _RETRY_STATUSES and status < 500:
            retry_after = None  # an unexpected answer: back off, keep the batch
        wait = self._backoff(retry_after)
        return UploadResult(UploadOutcome.RETRY, len(batch), status, self.stats.last_error, wait)


def loss_report(lost: Mapping[str, int]) -> str:
    """``lost=reason:n,...`` for the agent header (empty when nothing was lost)."""
    if not lost:
        return ""
    return "lost=" + ",".join(f"{k}:{v}" for k, v in sorted(lost.items()))


def _error_reason(response: httpx.Response) -> str | None:
    """The ``error`` of an error body, or None for an ack (or an unreadable body)."""
    try:
        obj = response.json()
    except ValueError:
        return None if response.status_code == 200 else f"http_{response.status_code}"
    if isinstance(obj, dict) and isinstance(obj.get("error"), str):
        return str(obj["error"])[:64]
    return None
