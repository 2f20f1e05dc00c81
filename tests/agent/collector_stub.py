"""A small real HTTP collector on loopback for the agent's upload tests.

Why not the real collector: it is being built in parallel (issue 11) and had not landed when
these tests were written. This stub is a real Starlette app under a real uvicorn server on a
real socket, speaking docs/collector.md's API and checking every batch with the collector's own
strict decoder (``corecensus.ingest.wire``), so what it accepts the collector accepts. A script
of answers (503 + Retry-After, 429, 413, ...) lets tests make it refuse on purpose; otherwise it
acknowledges and keeps each record once by id, as the collector does.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from corecensus.ingest.wire import (
    BatchAck,
    RecordKind,
    WireError,
    decode_batch,
    decode_body,
    decompress,
)


@dataclass
class Arrival:
    time: float  # time.monotonic() when the request arrived
    kind: str
    status: int
    records: int
    headers: dict[str, str]


@dataclass
class Scripted:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)


class StubCollector:
    def __init__(self, port: int = 0) -> None:
        self.script: list[Scripted] = []
        self.arrivals: list[Arrival] = []
        self.stored: dict[str, dict[str, dict[str, Any]]] = {k.value: {} for k in RecordKind}
        self.duplicates = 0
        self.lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(routes=[Route("/v1/{kind}", self._post, methods=["POST"])])
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]})

    def start(self) -> StubCollector:
        self._thread.start()
        while not self._server.started:
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join()
        self._sock.close()

    async def _post(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        arrived = time.monotonic()
        raw = await request.body()
        headers = dict(request.headers)
        with self.lock:
            scripted = self.script.pop(0) if self.script else None
        if scripted is not None:
            self._note(Arrival(arrived, kind, scripted.status, 0, headers))
            return JSONResponse(
                scripted.body or {"error": "scripted", "detail": "scripted answer"},
                status_code=scripted.status,
                headers=scripted.headers,
            )
        try:
            record_kind = RecordKind(kind)
            body = decode_body(decompress(raw, request.headers.get("content-encoding"), 32 << 20))
            batch = decode_batch(record_kind, body)
        except (ValueError, WireError) as exc:
            self._note(Arrival(arrived, kind, 400, 0, headers))
            return JSONResponse({"error": "bad_envelope", "detail": str(exc)}, status_code=400)
        with self.lock:
            for rec in batch.records:
                if rec.record_id in self.stored[kind]:
                    self.duplicates += 1
                self.stored[kind][rec.record_id] = rec.value.to_json()
        ack = BatchAck(accepted=len(batch.records), rejected=batch.problems).to_json()
        status = 422 if batch.problems else 200
        self._note(Arrival(arrived, kind, status, batch.size, headers))
        return Response(json.dumps(ack), status_code=status, media_type="application/json")

    def _note(self, arrival: Arrival) -> None:
        with self.lock:
            self.arrivals.append(arrival)
