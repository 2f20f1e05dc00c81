"""Number options that refuse what Click's ranges let through."""

from __future__ import annotations

import math
from typing import Any

import click

__all__ = ["FiniteFloatRange"]


class FiniteFloatRange(click.FloatRange):
    """:class:`click.FloatRange` that also refuses ``nan`` and ``inf``: Click's range checks are
    comparisons, which ``nan`` passes (``agent gate --budget nan`` and ``inspect
    --stdin-timeout nan`` ended in a ValueError traceback, ``--budget inf`` in an
    OverflowError)."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number
