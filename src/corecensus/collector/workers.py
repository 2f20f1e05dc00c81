"""A collector of several processes: HTTP front ends and one writer (``workers`` > 1).

One process cannot use more than one CPU for the collector's Python work (the interpreter
lock): HTTP, the typed parse and check, signing. Here the process that ``serve`` runs in owns
the store and runs the group-commit writer, the analysis and the snapshot; it binds the
listening socket and starts ``workers`` front-end processes (spawned, so they share no state
but the socket) that accept connections on it, and do everything up to the store: token, rate,
admission, body, decode, check, sign. They hand the rows to the writer over a Unix socket
(:mod:`corecensus.collector.link`) and answer each request once the writer says its rows are
committed, so an acknowledgement still means durable.

What each front end knows on its own: its tokens (each re-reads the file on SIGHUP, which the
writer process passes on), its share of each agent's rate (rate / workers: the kernel spreads
an agent's connections over the front ends) and its own admitted work. What it cannot see, the
writer tells it over the link whenever it changes: the records the other front ends hold
(admitted, or queued for the writer) and the collector's throughput and commit costs, measured
in the writer where every record passes; admission adds its own work and decides on the whole
collector's queue. The writer's queue bound holds for all of them.

Metrics: every process keeps its values in files of one directory (prometheus-client's
multiprocess mode); any front end's ``/metrics`` sums them.

A front end that dies is started again (its unanswered requests were not acknowledged; their
agents retry and the store keeps one copy). If the writer process dies, the front ends lose
their link, answer 503 and exit. ``SIGTERM``: the front ends stop accepting, finish their
requests, exit; then the writer commits what is queued and the store is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from functools import partial
from multiprocessing.process import BaseProcess
from pathlib import Path

from corecensus.collector.admission import Backlog
from corecensus.collector.backend import LocalBackend, open_collector_store
from corecensus.collector.config import CollectorConfig
from corecensus.collector.link import LinkServer, RemoteBackend
from corecensus.collector.logs import JsonLog
from corecensus.collector.metrics import (
    CollectorMetrics,
    render_shared_metrics,
    share_metrics_between_processes,
)
from corecensus.collector.server import Collector, TokenSource
from corecensus.errors import CorecensusError

__all__ = ["serve_workers"]

# A front end that exits this soon after it started, this many times in a row, is not started
# again: it cannot start (a broken config), and the collector stops with an error.
_EARLY_EXIT_S = 5.0
_EARLY_EXITS = 3
_CONNECT_S = 60.0


def serve_workers(
    config: CollectorConfig,
    workers: int,
    *,
    read_text: Callable[[Path], str],
    log: JsonLog,
    ready: Callable[[int], None] | None = None,
) -> int:
    from corecensus.collector.run import freeze_startup_heap, listening_socket

    TokenSource(config.tokens, read_text)  # a tokens file that does not parse stops us here
    sock = listening_socket(config)  # an address in use is refused before the store is opened
    run_dir = Path(tempfile.mkdtemp(prefix="corecensus-collector-"))
    metrics_dir = run_dir / "metrics"
    metrics_dir.mkdir()
    share_metrics_between_processes(metrics_dir)
    try:
        store = open_collector_store(config)
    except BaseException:
        sock.close()
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    try:
        backend = LocalBackend(config, store, Backlog(), CollectorMetrics.create(), log)
        supervisor = _Supervisor(config, workers, backend, sock, run_dir, log)
        freeze_startup_heap()
        status = asyncio.run(supervisor.run(ready))
    finally:
        store.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    return status


class _Supervisor:
    def __init__(
        self,
        config: CollectorConfig,
        workers: int,
        backend: LocalBackend,
        sock: socket.socket,
        run_dir: Path,
        log: JsonLog,
    ) -> None:
        self.config = config
        self.workers = workers
        self.backend = backend
        self.sock = sock
        self.link_path = run_dir / "writer.sock"
        self.metrics_dir = run_dir / "metrics"
        self.log = log
        self.context = multiprocessing.get_context("spawn")
        self.procs: dict[int, tuple[BaseProcess, float]] = {}
        self.early_exits = 0

    def _spawn(self, index: int) -> None:
        proc = self.context.Process(
            target=_front_end,
            args=(self.config, self.sock, self.link_path, self.metrics_dir, self.workers),
            name=f"corecensus-front-{index}",
            daemon=False,
        )
        proc.start()
        self.procs[index] = (proc, time.monotonic())

    async def run(self, ready: Callable[[int], None] | None) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._pass_on, signal.SIGHUP)
        self.backend.start()
        self.sock.listen(2048)
        server = LinkServer(self.backend)
        link = await loop.create_unix_server(server.protocol, path=str(self.link_path))
        for index in range(self.workers):
            self._spawn(index)
        # Announced once every front end serves: before that, connections would wait in the
        # socket's queue for processes still importing (seconds on a busy machine).
        failed = False
        end = loop.time() + _CONNECT_S * 2
        while server.serving < self.workers and loop.time() < end and not stop.is_set():
            server.hello.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.hello.wait(), 0.2)
            if not self._replace_the_dead():
                failed = True
                break
        port = self.sock.getsockname()[1]
        if not failed:
            self.log.event("listening", host=self.config.host, port=port, workers=self.workers)
            if ready is not None:
                ready(port)
        status = 1 if failed else 0
        while not failed and not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
            if not stop.is_set() and not self._replace_the_dead():
                status = 1
                break
        await self._stop_front_ends()
        link.close()
        await self.backend.stop()
        self.log.event("stopped")
        return status

    def _replace_the_dead(self) -> bool:
        """Start a new front end for each that exited; False when they cannot start."""
        from prometheus_client import multiprocess

        for index, (proc, started) in list(self.procs.items()):
            if proc.is_alive():
                continue
            proc.join()
            if proc.pid is not None:
                multiprocess.mark_process_dead(proc.pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]
            early = time.monotonic() - started < _EARLY_EXIT_S
            self.early_exits = self.early_exits + 1 if early else 0
            self.log.event("front_end_exited", pid=proc.pid, status=proc.exitcode)
            if self.early_exits >= _EARLY_EXITS:
                self.log.event("front_ends_cannot_start", exits=self.early_exits)
                return False
            self._spawn(index)
        return True

    def _pass_on(self, sig: int) -> None:
        for proc, _started in self.procs.values():
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                    os.kill(proc.pid, sig)

    async def _stop_front_ends(self) -> None:
        procs = [proc for proc, _started in self.procs.values()]
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: uvicorn's graceful stop
        bound = self.config.shutdown_timeout_s + 5.0
        for proc in procs:
            await asyncio.to_thread(proc.join, bound)
            if proc.is_alive():
                proc.kill()
                await asyncio.to_thread(proc.join, 10.0)


def _front_end(
    config: CollectorConfig,
    sock: socket.socket,
    link_path: Path,
    metrics_dir: Path,
    workers: int,
) -> None:
    """A front-end process (spawned): uvicorn on the shared socket, uploads to the writer."""
    from corecensus.collector.run import freeze_startup_heap, http_server

    log = JsonLog(fields={"pid": os.getpid()})
    tokens = TokenSource(config.tokens, lambda p: p.read_text(encoding="utf-8"))
    backlog, metrics = Backlog(), CollectorMetrics.create()

    async def main() -> None:
        backend = RemoteBackend(link_path, backlog)
        await backend.connect(_CONNECT_S)
        collector = Collector(
            config,
            backend,
            tokens,
            backlog=backlog,
            metrics=metrics,
            log=log,
            render_metrics=partial(render_shared_metrics, metrics_dir),
            rate_share=1.0 / workers,
        )
        server = http_server(collector, config)
        backend.on_view = collector.show_backlog

        def lost() -> None:
            # The writer is gone: nothing more can be acknowledged; stop.
            collector.begin_stop()
            server.should_exit = True

        backend.on_lost = lost
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, collector.reload_tokens)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            freeze_startup_heap()
            with contextlib.suppress(CorecensusError):
                await backend.hello()
        await task

    asyncio.run(main())
