"""The local kill switch (DESIGN.md, outage lesson 4: operators locked out of the system they
needed to fix): ``/etc/corecensus/disabled`` or ``CORECENSUS_DISABLED=1`` stops every piece of
agent work at once, with no network needed to say so.

Checked at the start of every step (each handler run, each daemon loop, each upload attempt), so
creating the file stops the agent within one step, and removing it resumes without a restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from corecensus.agent import corehold

__all__ = ["DEFAULT_DISABLE_FILE", "DISABLE_ENV", "disabled_reason"]

DEFAULT_DISABLE_FILE = Path(corehold.DEFAULT_DISABLE_FILE)
DISABLE_ENV = corehold.DISABLE_ENV


def disabled_reason(
    env: Mapping[str, str], disable_file: Path = DEFAULT_DISABLE_FILE
) -> str | None:
    """Why the agent is disabled, or None when it may work.

    Any value of ``CORECENSUS_DISABLED`` other than empty/0/false/no/off disables (an operator
    in a hurry may type ``yes``); the file disables by existing, whatever it holds. (The code is
    the core handler's: :func:`corecensus.agent.corehold.disabled_reason`.)
    """
    return corehold.disabled_reason(env, disable_file)
