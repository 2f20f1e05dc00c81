"""Hand the core on to the pattern the agent replaced, as the kernel would have.

The code lives in :mod:`corecensus.agent.corehold`, because it runs while the kernel holds the
dying process and must import nothing heavy; these are its names for the rest of the agent.
"""

from __future__ import annotations

from typing import Protocol

from corecensus.agent.corehold import (
    HELPER_ENV,
    CrashArgs,
    FileSink,
    PipeSink,
    expand,
    open_chain,
)

__all__ = ["HELPER_ENV", "CoreSink", "CrashArgs", "FileSink", "PipeSink", "expand", "open_chain"]


class CoreSink(Protocol):
    """Somewhere the core's bytes also go."""

    description: str

    def write(self, data: bytes) -> None: ...

    def close(self) -> str | None:
        """Finish; a problem as a sentence, or None."""
        ...
