"""A real collector: ``python -m corecensus collector serve`` in its own process, on an ephemeral
loopback port, with its JSON log in a file the test can read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from corecensus.collector.tokens import new_token

# Only a bound to catch a hang (a loaded machine may take seconds to import and bind).
START_BOUND_S = 120.0


def write_tokens(path: Path, agents: dict[str, tuple[str, str]]) -> dict[str, str]:
    """A tokens file for ``{name: (hosts, scopes)}``; returns name -> token."""
    tokens: dict[str, str] = {}
    lines = []
    for name, (hosts, scopes) in agents.items():
        token, line = new_token(name, hosts, scopes)
        tokens[name] = token
        lines.append(line)
    path.write_text("# agents of the test fleet\n" + "\n".join(lines) + "\n")
    return tokens


class CollectorProcess:
    def __init__(
        self,
        workdir: Path,
        *,
        db: Path | None = None,
        tokens: Path | None = None,
        config: str | None = None,
        env: dict[str, str] | None = None,
        wrap: list[str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.db = db or workdir / "fleet.duckdb"
        self.tokens = tokens
        self.config_text = config
        self.extra_env = env or {}
        self.wrap = wrap or []  # a command the collector runs under (prlimit ...)
        self.log_path = workdir / f"collector-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._clients: dict[str, httpx.Client] = {}

    def start(self) -> CollectorProcess:
        argv = [sys.executable, "-m", "corecensus", "collector", "serve", "--db", str(self.db)]
        argv += ["--listen", "127.0.0.1:0"]
        if self.tokens is not None:
            argv += ["--tokens", str(self.tokens)]
        # One process unless a test asks for front ends (test_collector_workers.py): the
        # default follows the CPU count, and these tests are about one collector's answers.
        text = self.config_text or ""
        if "workers" not in text:
            text += "workers = 1\n"
        cfg = self.workdir / "collector.toml"
        cfg.write_text(text)
        argv += ["--config", str(cfg)]
        src = str(Path(__file__).resolve().parents[2] / "src")
        env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
        env |= self.extra_env
        self.log_path = self.workdir / f"collector-{time.monotonic_ns()}.log"
        with open(self.log_path, "wb") as log:
            # SIGTERM when the test process dies (util-linux setpriv execs the collector with
            # PR_SET_PDEATHSIG): a pytest killed on a timeout runs no teardown, and such a
            # collector once served on for an hour.
            self.proc = subprocess.Popen(
                ["setpriv", "--pdeathsig", "TERM", "--", *self.wrap, *argv],
                stdout=subprocess.DEVNULL,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        self.port = self.wait_for("listening")["port"]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, token: str | None = None) -> httpx.Client:
        """A client sending ``token`` (one per token, closed when the collector stops)."""
        key = token or ""
        if key not in self._clients:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            # No keep-alive: a pooled connection reused just as the server closes it for idling
            # (its keep-alive and header timers) fails with "server disconnected" -- a race
            # every HTTP client has (RFC 9112 9.3.1; the agent retries), not what these tests
            # are about, and one that a slow, busy machine makes likely.
            self._clients[key] = httpx.Client(
                base_url=self.url,
                headers=headers,
                timeout=60.0,
                limits=httpx.Limits(max_keepalive_connections=0),
            )
        return self._clients[key]

    def close_clients(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"event": "not_json", "line": line})
        return out

    def wait_for(self, event: str, count: int = 1) -> dict[str, Any]:
        """The ``count``-th log event named ``event`` (waits for it; fails if the process
        ends first or the hang bound passes)."""
        assert self.proc is not None
        end = time.monotonic() + START_BOUND_S
        while time.monotonic() < end:
            found = [e for e in self.events() if e.get("event") == event]
            if len(found) >= count:
                return found[count - 1]
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"collector exited {self.proc.returncode} before {event!r}: "
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            time.sleep(0.05)
        raise AssertionError(f"no {event!r} in the collector's log")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> int:
        """SIGTERM and wait; the exit status."""
        assert self.proc is not None
        self.close_clients()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=START_BOUND_S)

    def kill(self) -> None:
        assert self.proc is not None
        self.close_clients()
        self.proc.kill()
        self.proc.wait(timeout=START_BOUND_S)
