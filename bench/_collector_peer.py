"""The peer of the collector benchmark: the simplest upload handler a user would write.

Starlette under uvicorn, one route: read the body, ``json.loads`` it, turn each record into a
``CrashRecord`` and store the batch with ``add_crashes`` in its own transaction (in Starlette's
thread pool, as a plain ``def`` handler runs). No validation beyond what ``from_json`` does, no
tokens, no shedding, no group commit: every request pays its own commit.

Usage: python bench/_collector_peer.py DB PORT_FILE
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import uvicorn  # noqa: E402
import zstandard  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from corecensus.model import CrashRecord  # noqa: E402
from corecensus.signing import sign_records  # noqa: E402
from corecensus.store import open_store  # noqa: E402


def main() -> None:
    db, port_file = Path(sys.argv[1]), Path(sys.argv[2])
    store = open_store(db)
    lock = threading.Lock()

    async def upload(request: Request) -> JSONResponse:
        body = await request.body()
        if request.headers.get("content-encoding") == "zstd":
            body = zstandard.ZstdDecompressor().decompressobj().decompress(body)

        def work() -> tuple[int, int]:
            doc = json.loads(body)
            records = [CrashRecord.from_json(r) for r in doc["records"]]
            with lock:  # the store is one connection; each request is its own transaction
                return len(records), store.add_crashes(sign_records(records)).new

        accepted, new = await run_in_threadpool(work)
        return JSONResponse({"accepted": accepted, "new": new})

    app = Starlette(routes=[Route("/v1/crashes", upload, methods=["POST"])])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port_file.write_text(str(sock.getsockname()[1]))
    server = uvicorn.Server(uvicorn.Config(app, access_log=False, log_level="warning"))
    try:
        server.run(sockets=[sock])
    finally:
        store.close()


if __name__ == "__main__":
    main()
