"""The collector: HTTP ingest for the fleet's agents (``corecensus collector serve``).

Built not to become the incident (DESIGN.md, outage lessons): it refuses work it cannot finish
in time before reading it, bounds every queue, acknowledges only what is durably committed, and
stores and analyzes only through the application layer (it never imports drgn).
"""

from __future__ import annotations

from corecensus.collector.config import CollectorConfig, config_from_mapping
from corecensus.collector.run import serve

__all__ = ["CollectorConfig", "config_from_mapping", "serve"]
