"""Run the collector: open the store, serve under uvicorn, stop gracefully.

``SIGTERM``/``SIGINT``: uvicorn stops accepting connections and lets requests in progress
finish (up to ``shutdown_timeout_s``); uploads that arrive meanwhile are answered 503
``stopping``; then the writer commits everything queued and the store is closed. ``SIGHUP``
re-reads the tokens file.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import uvicorn

from corecensus.collector.admission import Backlog
from corecensus.collector.backend import LocalBackend, open_collector_store
from corecensus.collector.config import CollectorConfig, connection_limit
from corecensus.collector.logs import JsonLog
from corecensus.collector.metrics import CollectorMetrics
from corecensus.collector.protocol import header_deadline_protocol
from corecensus.collector.server import Collector, TokenSource
from corecensus.errors import ConfigError

__all__ = [
    "default_workers",
    "freeze_startup_heap",
    "http_server",
    "is_loopback",
    "listening_socket",
    "serve",
]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn's own version re-raises the signal after a graceful stop, so the process
        # would die of SIGTERM (status 143) after doing everything right; a collector that
        # stopped cleanly exits 0.
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def freeze_startup_heap() -> None:
    """Leave the objects made while starting (modules, the app, the store's libraries) out of
    every garbage collection from now on (:func:`gc.freeze`).

    A request allocates thousands of containers (the parsed records), so the collector runs
    full collections every second or so, and each one walked the whole start-up heap --
    pyarrow, DuckDB, numpy, Starlette: 56 ms per full collection, 0.03 ms of CPU per crash
    record at capacity (measured with ``gc.callbacks`` under bench/collector_bench.py's load;
    frozen: 6 ms). Nothing is lost: frozen objects are never freed, and they live as long as
    the process anyway."""
    gc.collect()
    gc.freeze()


def listening_socket(config: CollectorConfig) -> socket.socket:
    """The collector's TCP socket, bound to ``config``'s address (uvicorn listens on it)."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
    except OSError as exc:
        # The operator's own words for the address: "[Errno 98] Address already in use" alone
        # does not say which of several collectors on a host was refused.
        sock.close()
        where = f"[{config.host}]" if family == socket.AF_INET6 else config.host
        reason = exc.strerror or str(exc)
        raise ConfigError(f"--listen {where}:{config.port}: cannot listen: {reason}") from exc
    return sock


def http_server(collector: Collector, config: CollectorConfig) -> _Server:
    """uvicorn serving ``collector`` with the collector's protocol and limits."""
    # Idle keep-alive connections may fill at most half of the connection limit (protocol.py).
    limit = connection_limit(config)
    uv_config = uvicorn.Config(
        collector.app,
        http=header_deadline_protocol(config.header_timeout_s, limit // 2),
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=int(max(1, config.shutdown_timeout_s)),
        limit_concurrency=limit,
        timeout_keep_alive=config.keep_alive_s,
        # uvicorn's default wraps the app in its proxy-headers middleware, which reads every
        # request's X-Forwarded-For from a trusted (loopback) peer into the scope's client
        # and scheme: nothing here reads either, and the collector is not behind a proxy it
        # trusts (~1 % of a front end's CPU at 1-record uploads, py-spy).
        proxy_headers=False,
    )
    return _Server(uv_config, collector.begin_stop)


def default_workers(cpus: int | None = None) -> int:
    """Front-end processes for ``workers = 0``: one per CPU beyond the first (the writer
    process, DuckDB's threads and the kernel's network work need one), at most 8; a single
    process on one or two CPUs. Measured on this 2-CPU machine under other engineers' load
    (bench/collector_bench.py, README): two front ends carried 637-627 records/s against one
    process's 750-376 between runs, at 0.74 against 0.60-0.65 ms of CPU per record, and shed
    worse at 5x overload (admitted p99 past the deadline), so two CPUs keep one process."""
    count = cpus if cpus is not None else len(os.sched_getaffinity(0))
    return 1 if count <= 2 else min(8, count - 1)


def serve(
    config: CollectorConfig,
    *,
    read_text: Callable[[Path], str] = lambda p: p.read_text(encoding="utf-8"),
    log: JsonLog | None = None,
    ready: Callable[[int], None] | None = None,
) -> int:
    """Serve until stopped; returns the exit status. ``ready(port)`` is called once listening
    (the port the kernel chose when ``config.port`` is 0). With more than one worker, front-end
    processes share the socket and one writer process (this one) owns the store
    (:mod:`corecensus.collector.workers`)."""
    if config.tokens is None and not is_loopback(config.host):
        raise ConfigError(
            f"--listen {config.host}: without --tokens the collector serves only on loopback"
        )
    log = log or JsonLog()
    workers = config.workers or default_workers()
    if workers > 1:
        from corecensus.collector.workers import serve_workers

        return serve_workers(config, workers, read_text=read_text, log=log, ready=ready)
    tokens = TokenSource(config.tokens, read_text)
    sock = listening_socket(config)  # an address in use is refused before the store is opened
    try:
        store = open_collector_store(config)
    except BaseException:
        sock.close()
        raise
    try:
        backlog, metrics = Backlog(), CollectorMetrics.create()
        backend = LocalBackend(config, store, backlog, metrics, log)
        collector = Collector(config, backend, tokens, backlog=backlog, metrics=metrics, log=log)
        port = sock.getsockname()[1]
        server = http_server(collector, config)

        async def main() -> None:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, collector.reload_tokens)
            task = asyncio.create_task(server.serve(sockets=[sock]))
            while not server.started and not task.done():
                await asyncio.sleep(0.01)
            if server.started:
                freeze_startup_heap()
                log.event("listening", host=config.host, port=port, workers=1)
                if ready is not None:
                    ready(port)
            await task

        asyncio.run(main())
    finally:
        store.close()
    return 0
