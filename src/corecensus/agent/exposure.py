"""Exposure: which configured services run on this host now, as heartbeat records.

A heartbeat says "this host ran service S at version V at time T" (``ingest.wire``'s
``HeartbeatRecord``); the collector turns a host's heartbeats into exposure intervals, the
denominators of crash rates. Processes are found under an injectable ``/proc`` root by
executable path or comm (:class:`~corecensus.agent.config.ServiceSpec`). The agent's own
heartbeat (service ``corecensus-agent``) is always sent: it says the host is watched even when
no configured service runs, which is exposure too (zero crashes in that time are data).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import corecensus
from corecensus.agent.config import ServiceSpec
from corecensus.ingest.wire import HeartbeatRecord

__all__ = ["AGENT_SERVICE", "heartbeats", "host_uptime_s", "running_services"]

AGENT_SERVICE = "corecensus-agent"


def running_services(
    services: Sequence[ServiceSpec], proc_root: Path = Path("/proc")
) -> Counter[str]:
    """Number of running processes of each configured service (by name)."""
    counts: Counter[str] = Counter()
    if not services:
        return counts
    try:
        entries = [e for e in os.scandir(proc_root) if e.name.isdigit()]
    except OSError:
        return counts
    for entry in entries:
        try:
            exe: str | None = os.readlink(os.path.join(entry.path, "exe"))
        except OSError:
            exe = None  # a kernel thread, or gone
        try:
            with open(os.path.join(entry.path, "comm"), encoding="utf-8", errors="replace") as fh:
                comm: str | None = fh.read().strip()
        except OSError:
            comm = None
        for spec in services:
            if spec.matches(exe, comm):
                counts[spec.name] += 1
                break
    return counts


def heartbeats(
    host: str,
    time_us: int,
    services: Sequence[ServiceSpec],
    running: Counter[str],
    *,
    uptime_s: int | None = None,
    agent_uptime_s: int | None = None,
    microcode: str | None = None,
    kernel: str | None = None,
) -> list[HeartbeatRecord]:
    """One heartbeat per running configured service, plus the agent's own, which carries the
    host's and the agent's uptime (seconds; the uploader adds the loss counts when it sends)
    and the host's microcode and kernel."""
    out = [
        HeartbeatRecord(
            host,
            time_us,
            AGENT_SERVICE,
            corecensus.__version__,
            uptime_s=uptime_s,
            agent_uptime_s=agent_uptime_s,
            microcode=microcode,
            kernel=kernel,
        )
    ]
    for spec in services:
        if running.get(spec.name, 0) > 0:
            out.append(HeartbeatRecord(host, time_us, spec.name, spec.version or "unknown"))
    return out


def host_uptime_s(proc_root: Path = Path("/proc")) -> int | None:
    """Whole seconds since the host booted (``/proc/uptime``'s first field), None if unreadable."""
    try:
        with open(proc_root / "uptime", encoding="ascii") as fh:
            return int(float(fh.read().split()[0]))
    except (OSError, ValueError, IndexError):
        return None
