"""corecensus: find the causes of rare crashes across a fleet's core dumps, and screen CPUs for
silent data corruption."""

from __future__ import annotations

from corecensus.errors import CorecensusError
from corecensus.model import CrashRecord, ParseStatus

__all__ = ["CorecensusError", "CrashRecord", "ParseStatus", "__version__"]

__version__ = "0.1.0"
