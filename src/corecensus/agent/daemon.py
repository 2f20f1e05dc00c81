"""``corecensus agent run``: the per-host daemon, one loop of small steps, each bounded.

Every step first checks the kill switch (then does nothing at all: no spool work, no network).
Then, when due: scan the watched directories for cores (each parsed in a child with a budget),
spool heartbeats (exposure), run a scheduled screen (a child with the screen's own hard budget,
started at a random point of the interval so a fleet's screens do not coincide), and upload what
the spool holds, as the uploader's backoff and rate cap allow. The loop never sleeps longer
than ``MAX_NAP_S``, so a kill switch or a stop request takes effect within seconds.
State for ``agent status`` is written to ``status.json`` after every step.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

import corecensus
from corecensus.agent.config import AgentConfig
from corecensus.agent.exposure import heartbeats, host_uptime_s, running_services
from corecensus.agent.facts import KERNEL, host_facts, host_microcode
from corecensus.agent.handler import CRASH_KIND
from corecensus.agent.killswitch import DEFAULT_DISABLE_FILE, disabled_reason
from corecensus.agent.spool import Spool
from corecensus.agent.uploader import Uploader, UploadOutcome
from corecensus.agent.watch import Runner, Watcher, _run, inspect_in_child, journal_entry

__all__ = ["MAX_NAP_S", "STATUS_FILE", "Daemon"]

MAX_NAP_S = 1.0
STATUS_FILE = "status.json"
# Uploads per step at most: a long backlog drains over several steps, between which the kill
# switch and stop requests are checked.
_UPLOADS_PER_STEP = 20
_SCREEN_SLACK_S = 30.0


class Daemon:
    def __init__(
        self,
        config: AgentConfig,
        *,
        env: Mapping[str, str],
        proc_root: Path = Path("/proc"),
        sys_root: Path = Path("/sys"),
        disable_file: Path = DEFAULT_DISABLE_FILE,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        client: httpx.Client | None = None,
        run: Runner = _run,
    ) -> None:
        self.config = config
        self.env = env
        self.proc_root = proc_root
        self.sys_root = sys_root
        self.disable_file = disable_file
        self.clock = clock
        self.wall_clock = wall_clock
        self.rng = rng or random.Random()
        self.run_child = run
        self.host = config.hostname or socket.gethostname()
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.spool = Spool(config.spool_dir, config.spool_max_bytes)
        self.spool.clean_temporaries()
        self.uploader = (
            Uploader(
                config,
                self.spool,
                client or httpx.Client(),
                rng=self.rng,
                clock=clock,
                wall_clock=wall_clock,
            )
            if config.collector_url
            else None
        )
        dirs = [config.systemd_coredump_dir, *config.watch_dirs]
        self.watcher = Watcher(
            [d for d in dirs if d != config.cores], config.state_dir / "watch.json"
        )
        now = clock()
        self.next_scan = now
        self.next_heartbeat = now
        self.next_screen = (
            now + self.rng.uniform(0.0, config.screen_interval_s) if config.screen_mode else None
        )
        self.started_wall = wall_clock()
        self.disabled: str | None = None
        self.errors: deque[str] = deque(maxlen=10)
        self.counts: dict[str, int] = {"cores_found": 0, "heartbeats": 0, "screens": 0}
        self.last: dict[str, float | None] = {"scan": None, "heartbeat": None, "screen": None}
        self.last_screen_verdict: str | None = None

    # -- the steps --------------------------------------------------------------------------

    def step(self) -> float:
        """Do what is due; seconds until something is due again."""
        self.disabled = disabled_reason(self.env, self.disable_file)
        if self.disabled is not None:
            self._write_status()
            return MAX_NAP_S
        now = self.clock()
        if now >= self.next_scan:
            self._scan()
            self.next_scan = now + self.config.scan_interval_s
        if now >= self.next_heartbeat:
            self._heartbeat()
            self.next_heartbeat = now + self.config.heartbeat_interval_s
        if self.next_screen is not None and now >= self.next_screen:
            self._screen()
            self.next_screen = self.clock() + self.config.screen_interval_s
        upload_wait = self._upload()
        self._write_status()
        due = [self.next_scan, self.next_heartbeat]
        if self.next_screen is not None:
            due.append(self.next_screen)
        wait = min(due) - self.clock()
        if upload_wait is not None:
            wait = min(wait, upload_wait)
        return max(0.0, wait)

    def run(
        self, should_stop: Callable[[], bool], sleep: Callable[[float], None] = time.sleep
    ) -> None:
        while not should_stop():
            wait = self.step()
            if wait > 0 and not should_stop():
                sleep(min(wait, MAX_NAP_S))

    def _note_error(self, message: str) -> None:
        self.errors.append(
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(self.wall_clock()))} {message}"[:400]
        )

    def _scan(self) -> None:
        self.last["scan"] = self.wall_clock()
        facts = host_facts(proc_root=self.proc_root, sys_root=self.sys_root).fields
        extra = {"COREDUMP_HOSTNAME": self.host, **facts}
        for path in self.watcher.scan():
            journal = self._journal_for(path)
            try:
                record = inspect_in_child(
                    path, self.config.parse_budget_s, extra, self.run_child, journal
                )
            finally:
                if journal is not None:
                    journal.unlink(missing_ok=True)
            if self.spool.put(CRASH_KIND, record.to_json()) is not None:
                self.counts["cores_found"] += 1
            self.watcher.taken(path)

    def _journal_for(self, core: Path) -> Path | None:
        """The journal's entry for a systemd-coredump core, in a file for the parsing child."""
        if not self.config.journalctl or core.parent != self.config.systemd_coredump_dir:
            return None
        entry = journal_entry(
            core, self.config.journalctl, self.config.parse_budget_s, self.run_child
        )
        if entry is None:
            return None
        path = self.config.state_dir / f".journal.{os.getpid()}.json"
        path.write_bytes(entry)
        return path

    def _heartbeat(self) -> None:
        self.last["heartbeat"] = self.wall_clock()
        running = running_services(self.config.services, self.proc_root)
        now = self.wall_clock()
        beats = heartbeats(
            self.host,
            int(now * 1_000_000),
            self.config.services,
            running,
            uptime_s=host_uptime_s(self.proc_root),
            agent_uptime_s=max(0, int(now - self.started_wall)),
            microcode=host_microcode(proc_root=self.proc_root, sys_root=self.sys_root),
            kernel=host_facts(proc_root=self.proc_root, sys_root=self.sys_root).fields.get(KERNEL),
        )
        for beat in beats:
            self.spool.put("heartbeat", beat.to_json())
        self.counts["heartbeats"] += len(beats)

    def _screen(self) -> None:
        self.last["screen"] = self.wall_clock()
        from corecensus.screening import ScreenConfig
        from corecensus.screening.topology import read_topology

        mode = self.config.screen_mode or "periodic"
        try:
            screen_config = ScreenConfig.for_mode(mode, budget_s=self.config.screen_budget_s)
            ncpus = len(read_topology(self.sys_root, self.proc_root).online)
        except corecensus.CorecensusError as exc:
            self._note_error(f"screen not run: {exc}")
            return
        limit = screen_config.overall(ncpus) + _SCREEN_SLACK_S
        argv = [
            sys.executable,
            "-m",
            "corecensus",
            "screen",
            "--mode",
            mode,
            "--json",
            "--jitter",
            "0",
        ]
        if self.config.screen_budget_s is not None:
            argv += ["--budget", str(self.config.screen_budget_s)]
        rc, out = self.run_child(argv, limit)
        try:
            record = json.loads(out)
            if not isinstance(record, dict) or record.get("kind") != "sdc_screen":
                raise ValueError("not a screen record")
        except ValueError:
            what = "timed_out" if rc == -1 else f"exit {rc}"
            self._note_error(f"screen gave no record ({what})")
            return
        record["host"] = self.host
        self.spool.put("screening", record)
        self.counts["screens"] += 1
        decision = record.get("decision")
        self.last_screen_verdict = (
            str(decision.get("verdict")) if isinstance(decision, dict) else None
        )

    def _upload(self) -> float | None:
        if self.uploader is None:
            return None
        for _ in range(_UPLOADS_PER_STEP):
            result = self.uploader.upload_once()
            if result.outcome in (UploadOutcome.SENT, UploadOutcome.DROPPED):
                continue
            if result.outcome is UploadOutcome.IDLE:
                return None
            if result.outcome in (UploadOutcome.RETRY, UploadOutcome.UNAUTHORIZED):
                self._note_error(f"upload: {result.detail or result.outcome}")
            return self.uploader.ready_in()
        return 0.0

    # -- status -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        records, size = self.spool.depth()
        up = self.uploader.stats if self.uploader else None
        return {
            "pid": os.getpid(),
            "host": self.host,
            "version": corecensus.__version__,
            "started": self.started_wall,
            "updated": self.wall_clock(),
            "disabled": self.disabled,
            "collector": self.config.collector_url,
            "spool": {"records": records, "bytes": size, "max_bytes": self.config.spool_max_bytes},
            "lost": self.spool.lost(),
            "upload": None
            if up is None
            else {
                "last_success": up.last_success_wall,
                "last_attempt": up.last_attempt_wall,
                "last_error": up.last_error,
                "consecutive_failures": up.consecutive_failures,
                "sent_records": up.sent_records,
                "lost_reported": dict(up.lost_reported),
            },
            "last": dict(self.last),
            "counts": dict(self.counts),
            "last_screen_verdict": self.last_screen_verdict,
            "errors": list(self.errors),
        }

    def _write_status(self) -> None:
        path = self.config.state_dir / STATUS_FILE
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.status(), indent=1))
            os.replace(tmp, path)
        except OSError as exc:
            self.errors.append(f"cannot write {path}: {exc.strerror}")
