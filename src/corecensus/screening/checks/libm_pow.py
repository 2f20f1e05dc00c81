"""libm ``pow(1.1, k)`` for k in -120..120 against exact answers.

The reported defect this is built for: one core of a fleet returned ``Int(1.1^53) = 0`` instead of
156, only when the thread ran on that core (Dixit et al., "Silent Data Corruptions at Scale",
Meta, 2021). Such faults are data dependent -- random arguments miss them -- so the check walks
every integer power in a fixed range, positive and negative, and compares each result with the
exact power of the double nearest 1.1, correctly rounded (``data/pow_1_1.json``, computed with
rational arithmetic, never with libm). glibc's ``pow`` (since 2.28, from ARM's
optimized-routines) documents a worst-case error of 0.52 ulp, so a result more than one ulp away,
or whose integer part differs, is wrong. The integer part is compared first, so the report reads
as the field report did: ``int(pow(1.1, 53)) = 0`` where 156 was expected.
"""

from __future__ import annotations

import json
import math
import random
from functools import cached_property
from importlib import resources

from corecensus.errors import ScreeningError
from corecensus.screening.checks.clib import double_fn
from corecensus.screening.checks.protocol import CheckContext, Observation, Tally

__all__ = ["LibmPow"]


class LibmPow:
    name = "libm_pow"
    family = "libm"
    description = "pow(1.1, k), k = -120..120, against exact answers (value within 1 ulp, int part)"

    @cached_property
    def table(self) -> tuple[tuple[int, float, int], ...]:
        """(k, correctly rounded 1.1^k, int(1.1^k)), validated on load."""
        source = resources.files("corecensus.screening.checks") / "data" / "pow_1_1.json"
        doc = json.loads(source.read_text(encoding="utf-8"))
        rows: list[tuple[int, float, int]] = []
        for i, row in enumerate(doc["rows"]):
            try:
                rows.append((int(row["k"]), float.fromhex(row["value"]), int(row["int"])))
            except (KeyError, TypeError, ValueError) as exc:
                raise ScreeningError(f"{source}: row {i} is malformed: {exc}") from exc
        if float.fromhex(doc["base"]) != 1.1 or not rows:
            raise ScreeningError(f"{source}: not a table of powers of 1.1")
        return tuple(rows)

    def run(self, ctx: CheckContext) -> Observation:
        pow_ = double_fn("pow", 2)
        table = self.table
        tally = Tally(f"pow(1.1, k) for k in {table[0][0]}..{table[-1][0]}: exact within 1 ulp")
        rng = random.Random(ctx.seed)
        order = list(table)
        # Repeat the sweep so a fault that hits a fraction of calls has more chances to show; the
        # order is seeded, since a fault can depend on what the core executed just before.
        for _ in range(ctx.units(16)):
            rng.shuffle(order)
            for k, exact, whole in order:
                got = pow_(1.1, float(k))
                tally.feed(got)
                label = f"pow(1.1, {k})"
                finite = math.isfinite(got)
                whole_got = int(got) if finite else got
                tally.judge(f"int({label})", whole_got == whole, whole, whole_got)
                close = finite and abs(got - exact) <= math.ulp(exact)
                tally.judge(label, close, exact, got)
        return tally.observation()
