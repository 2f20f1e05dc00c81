"""uvicorn's httptools protocol with a deadline on request headers (slow-loris), which leaves
each request's wait in the kernel in its scope (:mod:`corecensus.collector.arrival`) and keeps
connections alive only while there are few of them.

uvicorn times out idle keep-alive connections, but a client that trickles a request's headers a
byte at a time keeps its connection forever: every byte received cancels the keep-alive timer.
Here each connection must deliver a request's complete headers within ``header_timeout_s`` of
connecting (or of the previous response), or it is closed. Bodies have their own limit, applied
by the upload handler (408).

Keep-alive has a budget: an agent's httpx client keeps its connection 5 s after an upload, and
uvicorn keeps it as long, so a fleet's agents uploading in a storm leave hundreds of idle
connections per front end. uvicorn counts them against ``limit_concurrency``, and past it
answers every new request -- uploads, health checks -- with a bare 503 (no ``Retry-After``, not
in the collector's metrics or logs). So once a front end holds ``keep_alive_connections`` open
connections, each answer says ``Connection: close`` and the connection ends with it: the
client opens a fresh one next time. Told, not cut off: nginx, short of connections, closes its
idle keep-alive ones (``ngx_drain_connections``), but a client reusing one at that moment has
its request fail.

Past the limit itself the collector answers, not uvicorn: the request is marked in its scope
(``OVER_LIMIT_SCOPE_KEY``) and the collector refuses it with its own 503 ``connections_full``,
with ``Retry-After``, counted and logged like every refusal (DESIGN.md, outage lesson 3) --
except the probes and the metrics (``/healthz``, ``/readyz``, ``/metrics``), which are answered:
a liveness probe that fails under a storm gets the collector restarted into the same storm, and
the operator's graphs go blank when they are needed.

httptools (llhttp, in C) rather than h11 (pure Python): the collector parses every request's
head and body on its event loop, and with h11 that was a fifth of the loop's CPU at capacity
(the loop's CPU per crash record 0.11 -> 0.09 ms with httptools, bench/collector_bench.py's
20-record requests, README).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from corecensus.collector.arrival import ARRIVED_SCOPE_KEY, kernel_wait_s

__all__ = ["OVER_LIMIT_SCOPE_KEY", "header_deadline_protocol"]

# In a request's scope: it came past uvicorn's connection limit (the module's text).
OVER_LIMIT_SCOPE_KEY = "corecensus.over_limit"


class _HeaderDeadlineProtocol(HttpToolsProtocol):
    header_timeout_s: float = 10.0
    # Open connections of this process past which answers close theirs (module text).
    keep_alive_connections: int = 512
    _header_timer: asyncio.TimerHandle | None = None
    # Between connecting (or the previous response) and the end of the next request's headers.
    _awaiting_headers: bool = True
    _socket: Any = None

    def _arm(self) -> None:
        self._disarm()
        self._awaiting_headers = True
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._socket = transport.get_extra_info("socket")
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        # Past the headers (a request is being served, or its body read): the deadline is met.
        self._awaiting_headers = False
        self._disarm()
        # When the request arrived (arrival.py): its deadline began when it was sent, not when
        # it was read, nor when its handler first runs.
        arrived = time.perf_counter() - kernel_wait_s(self._socket)
        self.scope[ARRIVED_SCOPE_KEY] = arrived  # type: ignore[literal-required]
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            # uvicorn's own check, made here: the collector's app answers such a request.
            self.scope[OVER_LIMIT_SCOPE_KEY] = True  # type: ignore[literal-required]
            self.limit_concurrency = None
            try:
                super().on_headers_complete()
            finally:
                self.limit_concurrency = limit
        else:
            super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and len(self.connections) > self.keep_alive_connections:
            # (uvicorn then writes "connection: close" and closes after the answer)
            cycle.keep_alive = False
        if (
            cycle is not None
            and cycle.transport is self.transport
            and self.scope["method"] != "HEAD"
        ):
            # (A HEAD request's answer has no body to wait for.)
            cycle.transport = _OneSend(self.transport)  # type: ignore[assignment]

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self._awaiting_headers and not self.transport.is_closing():
            self.transport.close()


class _OneSend:
    """A response's transport (uvicorn's ``RequestResponseCycle`` writes, closes and asks
    ``is_closing``) that holds the response's head (status line and headers) until its body
    is written, and writes both at once: uvicorn writes them one after the other, and with
    ``TCP_NODELAY`` (asyncio's default) each write was a segment of its own on loopback -- the
    kernel's TCP send, its delivery and the client's wake-up, twice per answer: the answers'
    sends were 5-7 % of a front end's CPU at capacity (py-spy), and more of a refusal's.
    uvicorn's ``100 Continue`` (the client waits for it before it sends the body) goes at once."""

    __slots__ = ("_head", "_sent", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None
        self._sent = False

    def write(self, data: bytes) -> None:
        if self._sent:
            self._transport.write(data)
        elif self._head is not None:
            self._sent = True
            head, self._head = self._head, None
            self._transport.write(head + data)
        elif data.startswith(b"HTTP/1.1 100 "):
            self._transport.write(data)
        else:
            self._head = data

    def close(self) -> None:
        # (A response that ends without a body write: what there is, then the close.)
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


def header_deadline_protocol(header_timeout_s: float, keep_alive_connections: int) -> type[Any]:
    """An httptools protocol class for ``uvicorn.Config(http=...)`` with this header deadline
    and keep-alive budget."""
    return type(
        "HeaderDeadlineProtocol",
        (_HeaderDeadlineProtocol,),
        {"header_timeout_s": header_timeout_s, "keep_alive_connections": keep_alive_connections},
    )
