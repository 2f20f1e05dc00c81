"""Reading core dumps: the only package that imports drgn and capstone.

Public surface: :func:`inspect_core` (one core → :class:`~corecensus.model.CrashRecord`).
"""

from __future__ import annotations

from corecensus.coredump.inspect import inspect_core, unparsed_core_id

__all__ = ["inspect_core", "unparsed_core_id"]
