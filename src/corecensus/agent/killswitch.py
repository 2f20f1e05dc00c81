"""The local kill switch (DESIGN.md, outage lesson 4: operators locked out of the system they
needed to fix): ``/etc/corecensus/disabled`` or ``CORECENSUS_DISABLED=1`` stops every piece of
agent work at once, with no network needed to say so.

Checked at the start of every step (each handler run, each daemon loop, each upload attempt), so
creating the file stops the agent within one step, and removing it resumes without a restart.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["DEFAULT_DISABLE_FILE", "DISABLE_ENV", "disabled_reason"]

DEFAULT_DISABLE_FILE = Path("/etc/corecensus/disabled")
DISABLE_ENV = "CORECENSUS_DISABLED"
# Values that do not disable: an operator who writes CORECENSUS_DISABLED=0 means "not disabled".
_OFF_VALUES = frozenset({"", "0", "false", "no", "off"})


def disabled_reason(
    env: Mapping[str, str], disable_file: Path = DEFAULT_DISABLE_FILE
) -> str | None:
    """Why the agent is disabled, or None when it may work.

    Any value of ``CORECENSUS_DISABLED`` other than empty/0/false/no/off disables (an operator
    in a hurry may type ``yes``); the file disables by existing, whatever it holds.
    """
    value = env.get(DISABLE_ENV)
    if value is not None and value.strip().lower() not in _OFF_VALUES:
        return f"{DISABLE_ENV}={value}"
    try:
        if disable_file.exists():
            return f"{disable_file} exists"
    except OSError as exc:  # an unreadable /etc/corecensus: fail safe, do nothing
        return f"{disable_file} cannot be checked ({exc.strerror})"
    return None
