"""``corecensus agent status``: what the agent is doing on this host, from its files alone
(no network, no daemon needed): the spool, what was lost, the last upload, recent errors, the
handler and the kill switch."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from corecensus.agent.config import AgentConfig
from corecensus.agent.corepattern import InstallError, KernelFiles, load_state
from corecensus.agent.daemon import STATUS_FILE
from corecensus.agent.killswitch import DEFAULT_DISABLE_FILE, disabled_reason
from corecensus.agent.spool import Spool

__all__ = ["gather_status"]

_KERNEL = KernelFiles()


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def gather_status(
    config: AgentConfig,
    *,
    env: Mapping[str, str],
    kernel: KernelFiles = _KERNEL,
    disable_file: Path = DEFAULT_DISABLE_FILE,
) -> dict[str, Any]:
    out: dict[str, Any] = {"state_dir": str(config.state_dir)}
    out["disabled"] = disabled_reason(env, disable_file)
    try:
        handler = load_state(config.state_dir)
        current = kernel.read(kernel.core_pattern)
    except (InstallError, OSError) as exc:
        out["handler"] = {"state": "unknown", "detail": str(exc)}
    else:
        if handler is None:
            state = "not installed"
        elif current == handler.pattern:
            state = "installed"
        else:
            state = "replaced"  # someone changed core_pattern after the install
        out["handler"] = {
            "state": state,
            "core_pattern": current,
            "chains_to": handler.previous_pattern if handler else None,
        }
    if config.spool_dir.is_dir():
        spool = Spool(config.spool_dir, config.spool_max_bytes)
        records, size = spool.depth()
        out["spool"] = {"records": records, "bytes": size, "max_bytes": config.spool_max_bytes}
        out["lost"] = spool.lost()
    else:
        out["spool"] = {"records": 0, "bytes": 0, "max_bytes": config.spool_max_bytes}
        out["lost"] = {}
    cores = [p for p in config.cores.glob("*.zst")] if config.cores.is_dir() else []
    out["stored_cores"] = {"count": len(cores), "bytes": sum(p.stat().st_size for p in cores)}
    try:
        daemon = json.loads((config.state_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        daemon = None
    if isinstance(daemon, dict):
        daemon["running"] = _alive(daemon.get("pid"))
    out["daemon"] = daemon
    return out
