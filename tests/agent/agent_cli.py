"""The agent as the tests start it: a real ``corecensus agent`` process with no config file, its
own state directory, and none of the caller's ``CORECENSUS_*`` settings (a developer's or CI's
own would change what the agent does)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

CORECENSUS = [sys.executable, "-m", "corecensus"]


def agent_argv(state: Path, *args: str) -> list[str]:
    """``corecensus agent --config /dev/null -s STATE ARGS...``"""
    return [*CORECENSUS, "agent", "--config", os.devnull, "-s", str(state), *args]


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without ``CORECENSUS_*``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORECENSUS_")}
    env.update(extra or {})
    return env
