"""The collector's HTTP endpoints (Starlette); ``docs/collector.md`` is their contract.

An upload passes, in order: stopping? -> token -> rate -> headers (type, encoding, length,
deadline) -> backlog vs the client's deadline -> body (with a time limit) -> decode and check
(off the event loop) -> host binding -> the writer's group commit -> ack. Everything before the
body costs a few dictionary look-ups, so an overloaded collector still answers at once.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from corecensus.app.uploads import UploadGroup, upload_rows
from corecensus.collector.admission import Backlog, RateLimiter, retry_after_s
from corecensus.collector.arrival import ARRIVED_SCOPE_KEY
from corecensus.collector.backend import Backend
from corecensus.collector.config import CollectorConfig, connection_limit
from corecensus.collector.journal import JournalRows, journal_rows
from corecensus.collector.logs import JsonLog
from corecensus.collector.metrics import CollectorMetrics
from corecensus.collector.protocol import OVER_LIMIT_SCOPE_KEY
from corecensus.collector.tokens import Agent, Scope, TokenTable
from corecensus.collector.turns import LoopTurns
from corecensus.collector.writer import QueueFull, WriterStopped
from corecensus.errors import ConfigError, CorecensusError
from corecensus.ingest.wire import (
    AGENT_HEADER,
    CONTENT_TYPE,
    DEADLINE_HEADER,
    PATHS,
    BatchAck,
    ContentEncoding,
    DecodedBatch,
    RecordKind,
    RecordProblem,
    WireError,
    WireErrorReason,
    decompress,
    valid_host,
)
from corecensus.ingest.wire_typed import decode_upload
from corecensus.model import CrashRecord
from corecensus.signing import TypedSigner

__all__ = ["Collector", "TokenSource"]

_WIRE_STATUS: Mapping[WireErrorReason, int] = {
    WireErrorReason.UNSUPPORTED_ENCODING: 415,
    WireErrorReason.CORRUPT_BODY: 400,
    WireErrorReason.BODY_TOO_LARGE: 413,
    WireErrorReason.NOT_JSON: 400,
    WireErrorReason.BAD_ENVELOPE: 422,
    WireErrorReason.SCHEMA_VERSION: 422,
    WireErrorReason.WRONG_KIND: 422,
    WireErrorReason.TOO_MANY_RECORDS: 413,
}
# Routes whose path may appear in logs and metrics labels (anything else is "other").
_KNOWN_PATHS = {
    "/v1/crashes",
    "/v1/heartbeats",
    "/v1/screenings",
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/analysis",
}
# Of the client's deadline, the share the expected wait may use. The rest is for the transfer,
# the answer's way back and the spread around the expectation (a commit slowed by a neighbour
# on the CPU, a snapshot): measured at 5x overload on a loaded 2-core machine, admitted
# requests' p99 was 1.4x the expectation. Goodput does not suffer: half a deadline of queued
# work keeps the writer as busy as a whole one.
_DEADLINE_SHARE = 0.5
# Answered even past the connection limit (protocol.py): the probes and the metrics.
_ALWAYS_ANSWERED = frozenset({"/healthz", "/readyz", "/metrics"})
# The upload routes' paths, answered by Collector's own ASGI handler (POST only).
_UPLOAD_PATHS: Mapping[str, RecordKind] = {path: kind for kind, path in PATHS.items()}
_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class TokenSource:
    """The tokens in force: a file (re-read by :meth:`reload`, on SIGHUP), or none at all (a
    loopback-only collector that accepts any host)."""

    def __init__(self, path: Path | None, read: Callable[[Path], str]) -> None:
        self.path = path
        self._read = read
        self.table: TokenTable | None = None
        if path is not None:
            self.table = TokenTable.parse(read(path), str(path))

    def reload(self) -> int:
        """Re-read the file; a file that does not parse raises and leaves the old tokens."""
        if self.path is None:
            return 0
        table = TokenTable.parse(self._read(self.path), str(self.path))
        self.table = table
        return len(table)

    def authenticate(self, header: str | None) -> Agent | None:
        if self.table is None:
            return _OPEN_AGENT
        return self.table.authenticate(header)


_OPEN_AGENT = Agent("anonymous", frozenset({"*"}), frozenset(Scope))


@dataclass(slots=True)
class _Outcome:
    """What one request's log line says."""

    status: int = 200
    agent: str | None = None
    reason: str | None = None
    records: int | None = None
    accepted: int | None = None
    rejected: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _Refusal(Exception):
    def __init__(
        self,
        status: int,
        reason: str,
        detail: str,
        retry_after: float | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after
        self.extra = extra

    def _parts(self) -> tuple[dict[str, Any], dict[str, str]]:
        body: dict[str, Any] = {"error": self.reason, "detail": self.detail, **self.extra}
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            seconds = retry_after_s(self.retry_after)
            body["retry_after_s"] = seconds
            headers["Retry-After"] = str(seconds)
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="corecensus"'
        return body, headers

    def response(self) -> JSONResponse:
        body, headers = self._parts()
        return JSONResponse(body, status_code=self.status, headers=headers)

    def answer(self) -> _Answer:
        body, headers = self._parts()
        return _Answer.json(self.status, body, headers)


_JSON_TYPE = (b"content-type", b"application/json")
_ENCODE_JSON = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class _Answer:
    """An upload's HTTP answer, as the ASGI messages that send it: the bytes and headers
    Starlette's ``JSONResponse`` makes of the same document (the reading routes still use it)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    @classmethod
    def json(cls, status: int, doc: Any, headers: Mapping[str, str] | None = None) -> _Answer:
        # JSONResponse.render's bytes (json.dumps, ensure_ascii=False, compact: msgspec writes
        # every code point in a string as it does, a test holds them to it, in a twentieth of
        # the time; an answer holds text and integers, never a float), and its headers in its
        # order: the given ones, content-length, content-type.
        data = _ENCODE_JSON(doc)
        raw = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()
        ]
        raw += [(b"content-length", str(len(data)).encode("latin-1")), _JSON_TYPE]
        return cls(status, raw, data)

    async def send(self, send: _Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


class Collector:
    """The collector's state and its ASGI application (:attr:`app`): the uploads' own handler
    in front of a Starlette application for everything else."""

    def __init__(
        self,
        config: CollectorConfig,
        backend: Backend,
        tokens: TokenSource,
        *,
        backlog: Backlog,
        metrics: CollectorMetrics,
        log: JsonLog | None = None,
        render_metrics: Callable[[], bytes] | None = None,
        rate_share: float = 1.0,
    ) -> None:
        """``backend`` owns the store (:class:`~corecensus.collector.backend.LocalBackend` in
        this process); ``backlog`` is the one it reports commits to. ``render_metrics`` makes
        ``/metrics``'s text (default: ``metrics``' registry); ``rate_share`` is this process's
        share of each agent's rate (one of several front ends: 1/N)."""
        self.config = config
        self.backend = backend
        self.tokens = tokens
        self.metrics = metrics
        self.log = log or JsonLog()
        self.backlog = backlog
        self._render_metrics = render_metrics or partial(generate_latest, metrics.registry)
        self.limiter = RateLimiter(
            config.agent_rate_per_s * rate_share, max(1, round(config.agent_burst * rate_share))
        )
        # One signer per decode thread: its cache is not shared between threads.
        self._signers = threading.local()
        self._decoders = ThreadPoolExecutor(
            max_workers=config.decode_threads, thread_name_prefix="corecensus-decode"
        )
        self.stopping = False
        self.inflight = 0
        # One body decoded on the loop per turn of it, in arrival order.
        self._turns = LoopTurns()
        # The uploads' counters' children by their label values: labels() checks and looks up
        # its arguments on every call.
        self._children: dict[tuple[Counter, tuple[str, ...]], Any] = {}
        # Other methods on the upload paths (405 with Allow) are Starlette's, as before.
        routes = [
            Route(path, _UploadRoute(self, kind), methods=["POST"])
            for path, kind in _UPLOAD_PATHS.items()
        ]
        routes += [
            Route("/healthz", self._healthz, methods=["GET"]),
            Route("/readyz", self._readyz, methods=["GET"]),
            Route("/metrics", self._metrics, methods=["GET"]),
            Route("/api/v1/analysis", self._analysis, methods=["GET"]),
            Route("/api/v1/hosts/{host}", self._host, methods=["GET"]),
        ]
        self._starlette = Starlette(routes=routes, lifespan=self._lifespan)
        self.app = _CollectorApp(self)

    # -- lifecycle ---------------------------------------------------------------------------

    def _lifespan(self, _app: Starlette) -> Any:
        import contextlib

        @contextlib.asynccontextmanager
        async def span() -> Any:
            self.backend.start()
            lag = asyncio.create_task(self._watch_loop_lag())
            self.log.event("started", db=str(self.config.db), tokens=len(self.tokens.table or ()))
            try:
                yield
            finally:
                # uvicorn has stopped accepting and finished its requests; commit what is left.
                self.stopping = True
                lag.cancel()
                await self.backend.stop()
                self._decoders.shutdown(wait=True)
                self.log.event("stopped")

        return span()

    async def _watch_loop_lag(self, period_s: float = 0.05) -> None:
        """Measure how late the loop wakes up: when the CPU is saturated, requests wait unread
        in their sockets, and that wait counts against their deadlines too."""
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(period_s)
            self.backlog.lagged(max(0.0, loop.time() - start - period_s))

    def begin_stop(self) -> None:
        """SIGTERM: refuse new uploads from now on (503 stopping); uvicorn drains the rest."""
        self.stopping = True

    def reload_tokens(self) -> None:
        try:
            count = self.tokens.reload()
        except (ConfigError, OSError) as exc:
            self.log.event("tokens_reload_failed", detail=str(exc))
        else:
            self.log.event("tokens_reloaded", agents=count)

    # -- uploads -----------------------------------------------------------------------------

    async def _upload(
        self, kind: RecordKind, scope: _Scope, receive: _Receive, send: _Send
    ) -> None:
        """One upload, answered by this plain ASGI handler: Starlette's middleware, routing,
        Request and Response were 8 % of a front end's CPU at capacity and most of a refusal's
        (py-spy, bench/collector_bench.py's 20-record uploads). Same answers, same headers."""
        start = time.perf_counter()
        outcome = _Outcome()
        path = PATHS[kind]
        headers = _Headers(scope["headers"])
        try:
            answer = await self._admit_and_store(kind, scope, headers, receive, outcome)
        except _Refusal as refusal:
            outcome.status, outcome.reason = refusal.status, refusal.reason
            if refusal.reason == "overloaded" and refusal.retry_after is not None:
                outcome.extra["expected_ms"] = _ms(refusal.retry_after)
            if refusal.status in (429, 503):
                self._count(self.metrics.shed, refusal.reason)
            answer = refusal.answer()
        self._count(self.metrics.requests, path, str(outcome.status))
        self.log.event(
            "upload",
            path=path,
            status=outcome.status,
            agent=outcome.agent,
            reason=outcome.reason,
            records=outcome.records,
            accepted=outcome.accepted,
            rejected=outcome.rejected,
            ms=round((time.perf_counter() - start) * 1000, 3),
            **outcome.extra,
        )
        await answer.send(send)

    async def refuse_over_limit(self, scope: _Scope, send: _Send) -> None:
        """503 ``connections_full`` for a request that came past uvicorn's connection limit
        (protocol.py), with ``Retry-After``, counted and logged as the door's refusals are."""
        path = scope["path"]
        upload = scope["method"] == "POST" and path in _UPLOAD_PATHS
        label = _path_label("/api/v1/hosts" if path.startswith("/api/v1/hosts/") else path)
        refusal = _Refusal(
            503,
            "connections_full",
            f"more than {connection_limit(self.config)} connections open",
            self.backlog.expected_wait_s(),
        )
        self._count(self.metrics.shed, refusal.reason)
        self._count(self.metrics.requests, label, "503")
        self.log.event(
            "upload" if upload else "request",
            path=label,
            status=503,
            reason=refusal.reason,
        )
        await refusal.answer().send(send)

    def _count(self, counter: Counter, *labels: str, amount: float = 1.0) -> None:
        """``counter.labels(*labels).inc(amount)``, its child looked up once."""
        child = self._children.get((counter, labels))
        if child is None:
            child = self._children[(counter, labels)] = counter.labels(*labels)
        child.inc(amount)

    def _deadline_s(self, headers: _Headers) -> float:
        raw = headers.get(_DEADLINE)
        if raw is None:
            return self.config.default_deadline_ms / 1000
        try:
            ms = int(raw.strip())
        except ValueError:
            raise _Refusal(400, "bad_deadline", f"{DEADLINE_HEADER} is not an integer") from None
        if not 1 <= ms <= self.config.max_deadline_ms:
            raise _Refusal(
                400, "bad_deadline", f"{DEADLINE_HEADER} not in 1..{self.config.max_deadline_ms}"
            )
        return ms / 1000

    def _check_headers(self, headers: _Headers) -> int:
        ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype != CONTENT_TYPE:
            raise _Refusal(415, "unsupported_media_type", f"Content-Type must be {CONTENT_TYPE}")
        encoding = headers.get("content-encoding", "identity").strip().lower() or "identity"
        if encoding not in set(ContentEncoding):
            raise _Refusal(
                415, "unsupported_encoding", "Content-Encoding must be identity, gzip or zstd"
            )
        length = headers.get("content-length")
        if length is None:
            raise _Refusal(411, "length_required", "Content-Length is required")
        try:
            size = int(length)
        except ValueError:
            raise _Refusal(400, "bad_length", "Content-Length is not an integer") from None
        if size > self.config.limits.max_body_bytes:
            raise _Refusal(
                413,
                "body_too_large",
                f"{size} bytes (limit {self.config.limits.max_body_bytes})",
            )
        return size

    def show_backlog(self) -> None:
        """Set the admission gauge from the backlog (at each decision, and in a front end
        when the writer's view of the others arrives)."""
        self.metrics.admission_records.set(self.backlog.records_ahead())

    def _admit(self, deadline_s: float, waited_s: float) -> float:
        """Refuse (503) a request whose deadline the queued work would miss, counting what it
        has waited already (``waited_s``: in the kernel, then for the event loop); else the
        wait it is expected to have."""
        self.show_backlog()
        if self.inflight >= self.config.max_inflight_requests:
            raise _Refusal(
                503, "queue_full", "too many uploads in progress", self.backlog.expected_wait_s()
            )
        wait = self.backlog.expected_wait_s()
        # The reason names the cause: the queued work, which the whole deadline could not
        # cover either (overloaded), or the time the request spent waiting to be read (late).
        if wait > deadline_s * _DEADLINE_SHARE:
            raise _Refusal(
                503,
                "overloaded",
                f"queued work needs about {wait:.1f} s, more than the deadline allows",
                wait,
                records_ahead=round(self.backlog.records_ahead()),
            )
        if wait > (deadline_s - waited_s) * _DEADLINE_SHARE:
            raise _Refusal(
                503,
                "late",
                f"{waited_s:.2f} s of the {deadline_s:.2f} s deadline spent waiting to be read; "
                f"the queued work needs about {wait:.2f} s more",
                wait,
            )
        return wait

    async def _admit_and_store(
        self,
        kind: RecordKind,
        scope: _Scope,
        headers: _Headers,
        receive: _Receive,
        outcome: _Outcome,
    ) -> _Answer:
        if self.stopping:
            raise _Refusal(503, "stopping", "the collector is stopping", 5.0)
        agent = self.tokens.authenticate(headers.get("authorization"))
        if agent is None:
            raise _Refusal(401, "unauthenticated", "a valid bearer token is required")
        outcome.agent = agent.name
        client = headers.get(_AGENT)
        if client:
            # Logged as data (JSON-escaped), cut short: it is the client's own word.
            outcome.extra["client"] = client[:80]
        if not agent.may(Scope.UPLOAD):
            raise _Refusal(403, "forbidden_scope", "this token may not upload")
        size = self._check_headers(headers)
        deadline_s = self._deadline_s(headers)
        wait = self.limiter.take(agent.name)
        if wait > 0:
            raise _Refusal(429, "rate_limited", "this agent is over its request rate", wait)
        # The request's clock runs from its arrival (arrival.py): the time it spent in the
        # kernel and waiting for this handler to run is its client's time too.
        now = time.perf_counter()
        arrived = min(now, scope.get(ARRIVED_SCOPE_KEY, now))
        outcome.extra["waited_ms"] = _ms(now - arrived)
        expected = self._admit(deadline_s, now - arrived)
        deadline_at = arrived + deadline_s
        self.inflight += 1
        self.backlog.admitted()
        counted = True
        # Where an admitted request's time goes, in its log line: how long it had waited to be
        # read, what admission expected, then the body, the decode (with its wait for a
        # thread) and the commit (with the wait in the writer's queue), each in ms of wall time.
        stages = outcome.extra
        stages["expected_ms"] = round(expected * 1000, 1)
        try:
            t0 = time.perf_counter()
            body = await self._read_body(receive, size)
            t1 = time.perf_counter()
            stages["body_ms"] = _ms(t1 - t0)
            self._in_time(deadline_at, deadline_s)
            decoded = await self._decode(kind, body, headers.get("content-encoding"))
            t2 = time.perf_counter()
            stages["decode_ms"] = _ms(t2 - t1)
            self._in_time(deadline_at, deadline_s)
            rows, problems = self._accepted(kind, agent, *decoded, outcome)
            # The batch's parsed records (some hundred objects each) and its rows are freed
            # here, once signed and encoded, not when the commit returns: while they are still
            # in the CPU's caches, and their memory is the next request's.
            del decoded
            # From here the writer's queue counts these records.
            self.backlog.left()
            counted = False
            try:
                return await self._store(kind, rows, problems, outcome)
            finally:
                stages["commit_ms"] = _ms(time.perf_counter() - t2)
        finally:
            self.inflight -= 1
            if counted:
                self.backlog.left()

    def _in_time(self, deadline_at: float, deadline_s: float) -> None:
        """Refuse (503 ``late``) an admitted upload that can no longer be committed before its
        client's deadline: the wait for the writer still ahead of it would end past it.

        Admission decided on an estimate; this is the request's own clock. Its client gives
        up at the deadline (the agent sends its request timeout as the deadline) and retries,
        so an acknowledgement after it is a timeout to the agent, and the work spent on it is
        taken from uploads that could still make theirs; a 503 with ``Retry-After`` tells the
        agent when to come back instead. The practice of deadline propagation: a server drops
        work whose caller has given up (gRPC deadlines; Google's SRE book, "Handling
        Overload"). Checked after the body (a slow body is the client's own time) and after
        the decode (the wait for a decode thread is where overload puts it)."""
        now = time.perf_counter()
        remaining = deadline_at - now
        wait = self.backlog.commit_wait_s()
        if wait > remaining:
            raise _Refusal(
                503,
                "late",
                f"{deadline_s - remaining:.2f} s of the {deadline_s:.2f} s deadline spent; "
                f"the commit needs about {wait:.2f} s more",
                self.backlog.expected_wait_s(),
            )

    async def _read_body(self, receive: _Receive, size: int) -> bytes:
        chunks: list[bytes] = []
        got = 0
        try:
            async with asyncio.timeout(self.config.body_timeout_s):
                more = True
                while more:
                    message = await receive()
                    if message["type"] != "http.request":  # http.disconnect
                        raise _Refusal(400, "client_disconnected", "the client went away")
                    chunk = message.get("body", b"")
                    more = message.get("more_body", False)
                    got += len(chunk)
                    if got > size:
                        raise _Refusal(400, "bad_length", "body longer than its Content-Length")
                    if chunk:
                        chunks.append(chunk)
        except TimeoutError:
            raise _Refusal(
                408, "body_timeout", f"body not received within {self.config.body_timeout_s} s"
            ) from None
        if got != size:
            raise _Refusal(400, "bad_length", "body shorter than its Content-Length")
        return b"".join(chunks)

    def _signer(self) -> TypedSigner:
        signer: TypedSigner | None = getattr(self._signers, "signer", None)
        if signer is None:
            signer = self._signers.signer = TypedSigner()
        return signer

    def _checked_rows(self, kind: RecordKind, plain: bytes) -> tuple[DecodedBatch[Any], list[Any]]:
        """The checked batch of a decompressed body, and its good records as the store's rows
        (signed, with this thread's signer)."""
        batch = decode_upload(kind, plain, self.config.limits)
        good = [r.value for r in batch.records]
        if kind is RecordKind.CRASHES and good and not isinstance(good[0], CrashRecord):
            # The typed pass's crashes (the whole batch or none): rows made for the journal.
            return batch, self._signer().journal_rows(good)
        rows = upload_rows(
            UploadGroup(
                crashes=good if kind is RecordKind.CRASHES else (),
                heartbeats=good if kind is RecordKind.HEARTBEATS else (),
                screens=good if kind is RecordKind.SCREENINGS else (),
            ),
            self._signer(),
        )
        return batch, [*rows.crashes, *rows.heartbeats, *rows.screens]

    async def _decode(
        self, kind: RecordKind, body: bytes, encoding: str | None
    ) -> tuple[DecodedBatch[Any], list[Any]]:
        """The checked batch, and its good records as the store's rows (signed): a body that
        decompresses to at most ``inline_decode_bytes`` on the event loop, in a turn of its own
        (:class:`~corecensus.collector.turns.LoopTurns`), a larger one on a decode thread.

        One interpreter lock runs either, so a decode thread gives no parallelism; it keeps a
        large body from holding the loop (and the door's answers) for longer than a switch
        interval, and costs a hand-off each way."""
        limits = self.config.limits
        inline = self.config.inline_decode_bytes

        def work() -> tuple[DecodedBatch[Any], list[Any], float]:
            # Timed here, on the decode thread: time spent waiting for a thread is the
            # backlog's, not this body's cost.
            t0 = time.perf_counter()
            plain = decompress(body, encoding, limits.max_decoded_bytes)
            return *self._checked_rows(kind, plain), time.perf_counter() - t0

        try:
            plain, t0 = None, 0.0
            if len(body) <= inline:
                await self._turns.take()
                t0 = time.perf_counter()
                try:
                    plain = decompress(body, encoding, min(inline, limits.max_decoded_bytes))
                except WireError as exc:
                    # Larger than it looked: a decode thread's, decompressed again to the limit.
                    if exc.reason is not WireErrorReason.BODY_TOO_LARGE:
                        raise
                    if inline >= limits.max_decoded_bytes:
                        raise
            if plain is not None:
                batch, signed = self._checked_rows(kind, plain)
                seconds = time.perf_counter() - t0
            else:
                batch, signed, seconds = await asyncio.get_running_loop().run_in_executor(
                    self._decoders, work
                )
        except WireError as exc:
            raise _Refusal(_WIRE_STATUS[exc.reason], str(exc.reason), exc.detail) from None
        self.backlog.decoded(batch.size, seconds)
        return batch, signed

    def _accepted(
        self,
        kind: RecordKind,
        agent: Agent,
        batch: DecodedBatch[Any],
        rows: list[Any],
        outcome: _Outcome,
    ) -> tuple[JournalRows | None, tuple[RecordProblem, ...]]:
        """The batch's good records as the writer takes them (encoded, None when there are
        none) and its refused ones, counted; 403 when a record names a host the token may not
        speak for."""
        label = str(kind)
        outcome.records = batch.size
        self._count(self.metrics.received, label, amount=batch.size)
        foreign = [r.index for r in batch.records if not agent.may_speak_for(r.host)]
        if foreign:
            self.metrics.rejected.labels(kind=label, reason="forbidden_host").inc(batch.size)
            raise _Refusal(
                403,
                "forbidden_host",
                f"{len(foreign)} records name hosts this token may not speak for",
                indices=foreign[:100],
            )
        for problem in batch.problems:
            self.metrics.rejected.labels(kind=label, reason=str(problem.reason)).inc()
        return (journal_rows(kind, rows) if rows else None), batch.problems

    async def _store(
        self,
        kind: RecordKind,
        rows: JournalRows | None,
        problems: tuple[RecordProblem, ...],
        outcome: _Outcome,
    ) -> _Answer:
        if rows is not None:
            try:
                await self.backend.store(kind, rows)
            except QueueFull as exc:
                raise _Refusal(
                    503, "queue_full", str(exc), self.backlog.expected_wait_s()
                ) from None
            except WriterStopped:
                raise _Refusal(503, "stopping", "the collector is stopping", 5.0) from None
            except CorecensusError as exc:
                raise _Refusal(
                    503, "store_unavailable", f"the store could not be written: {exc}", 10.0
                ) from None
        accepted = len(rows) if rows is not None else 0
        ack = BatchAck(accepted=accepted, rejected=problems)
        outcome.accepted, outcome.rejected = accepted, len(problems)
        outcome.status = 422 if problems else 200
        return _Answer.json(outcome.status, ack.to_json())

    # -- reading -----------------------------------------------------------------------------

    async def _healthz(self, request: Request) -> Response:
        return self._answer("/healthz", JSONResponse({"status": "ok"}))

    async def _readyz(self, request: Request) -> Response:
        reason = "stopping" if self.stopping else await self.backend.unready()
        if reason:
            return self._answer("/readyz", JSONResponse({"ready": False, "reason": reason}, 503))
        return self._answer("/readyz", JSONResponse({"ready": True}))

    async def _metrics(self, request: Request) -> Response:
        data = self._render_metrics()
        return self._answer("/metrics", Response(data, media_type=CONTENT_TYPE_LATEST))

    def _reader(self, request: Request) -> None:
        agent = self.tokens.authenticate(request.headers.get("authorization"))
        if agent is None:
            raise _Refusal(401, "unauthenticated", "a valid bearer token is required")
        if not agent.may(Scope.READ):
            raise _Refusal(403, "forbidden_scope", "this token may not read")

    async def _analysis(self, request: Request) -> Response:
        try:
            self._reader(request)
        except _Refusal as denied:
            return self._answer("/api/v1/analysis", denied.response())
        doc, error = await self.backend.analysis(self.config.body_timeout_s)
        if doc is None:
            missing = _Refusal(503, "analysis_unavailable", error or "no analysis yet", 5.0)
            return self._answer("/api/v1/analysis", missing.response())
        return self._answer("/api/v1/analysis", _json(doc))

    async def _host(self, request: Request) -> Response:
        path = "/api/v1/hosts"
        host = request.path_params["host"]
        try:
            self._reader(request)
            if not valid_host(host):
                raise _Refusal(400, "bad_host", "not a host name")
        except _Refusal as refusal:
            return self._answer(path, refusal.response())
        out = await self.backend.host(host)
        if out is None:
            return self._answer(
                path, _Refusal(404, "unknown_host", "no records of this host").response()
            )
        return self._answer(path, _json(out))

    def _answer(self, path: str, response: Response) -> Response:
        self.metrics.requests.labels(path=_path_label(path), status=str(response.status_code)).inc()
        return response


def _path_label(path: str) -> str:
    """A route's path as logs and metrics label it (a host's page as ``/api/v1/hosts``, any
    other path not in _KNOWN_PATHS as ``other``)."""
    return path if path in _KNOWN_PATHS or path == "/api/v1/hosts" else "other"


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _json(doc: Any) -> Response:
    # allow_nan=False: the analysis contract is JSON, and NaN is not.
    body = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return Response(body, media_type="application/json")


# The request headers an upload reads, by their names as ASGI gives them (lower case).
_DEADLINE = DEADLINE_HEADER.lower()
_AGENT = AGENT_HEADER.lower()


class _Headers(dict[str, str]):
    """A request's headers by name, the first of each name (Starlette's ``Headers.get``)."""

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        super().__init__()
        for name, value in reversed(raw):
            self[name.decode("latin-1")] = value.decode("latin-1")


class _UploadRoute:
    """An upload path's ASGI endpoint in the Starlette application (which answers its other
    methods: 405 with ``Allow``); :class:`_CollectorApp` sends uploads straight to it."""

    def __init__(self, collector: Collector, kind: RecordKind) -> None:
        self._collector, self._kind = collector, kind

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        await self._collector._upload(self._kind, scope, receive, send)


class _CollectorApp:
    """The collector's ASGI application: an upload (``POST`` to its path) goes straight to its
    handler, everything else (the reading routes, other methods and paths, the lifespan) to
    the Starlette application."""

    def __init__(self, collector: Collector) -> None:
        self._collector = collector
        self._routes = {path: _UploadRoute(collector, kind) for path, kind in _UPLOAD_PATHS.items()}
        self._starlette = collector._starlette

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if (
            scope["type"] == "http"
            and scope.get(OVER_LIMIT_SCOPE_KEY)
            and scope["path"] not in _ALWAYS_ANSWERED
        ):
            await self._collector.refuse_over_limit(scope, send)
            return
        if scope["type"] == "http" and scope["method"] == "POST":
            route = self._routes.get(scope["path"])
            if route is not None:
                await route(scope, receive, send)
                return
        await self._starlette(scope, receive, send)
