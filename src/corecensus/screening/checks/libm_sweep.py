"""libm transcendental functions (double and float) on seeded random arguments.

No table can hold answers for random arguments, so each function is checked through an identity
that holds to a small, stated tolerance whatever the code path (``exp(log x) = x``,
``sin^2 + cos^2 = 1``, ``pow(x, y) = exp(y log x)``...), and every exact result goes into the
fingerprint. glibc picks an implementation per CPU at load time (FMA or not, through IFUNC), so
the exact bits may differ between CPU models; between cores of one model they must not, which is
what the screen's cross-CPU consensus compares.
"""

from __future__ import annotations

import math
import random

from corecensus.screening.checks.clib import double_fn, float_fn
from corecensus.screening.checks.protocol import CheckContext, Observation, Tally

__all__ = ["LibmSweep"]


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


class LibmSweep:
    name = "libm_sweep"
    family = "libm"
    description = "exp/log/sin/cos/tan/atan/cbrt/pow and float variants through identities"

    def run(self, ctx: CheckContext) -> Observation:
        rng = random.Random(ctx.seed)
        exp, log, sin, cos = (double_fn(n) for n in ("exp", "log", "sin", "cos"))
        tan, atan, cbrt = double_fn("tan"), double_fn("atan"), double_fn("cbrt")
        pow_ = double_fn("pow", 2)
        expf, logf, sinf, cosf = (float_fn(n) for n in ("expf", "logf", "sinf", "cosf"))
        powf = float_fn("powf", 2)
        tally = Tally("libm identities on seeded arguments within stated tolerances")
        for _ in range(ctx.units(300)):
            x = math.exp(rng.uniform(-7.0, 7.0))  # 1e-3 .. 1e3
            e = exp(log(x))
            tally.feed(e)
            tally.judge(f"exp(log({x!r}))", _rel(e, x) <= 1e-13, x, e)

            t = rng.uniform(-1.2, 1.2)
            s, c, tn = sin(t), cos(t), tan(t)
            tally.feed(s, c, tn)
            tally.judge(
                f"sin^2+cos^2 ({t!r})", abs(s * s + c * c - 1.0) <= 1e-14, 1.0, s * s + c * c
            )
            tally.judge(f"tan({t!r}) vs sin/cos", _rel(tn, s / c) <= 1e-13, s / c, tn)
            a = atan(tn)
            tally.feed(a)
            tally.judge(f"atan(tan({t!r}))", abs(a - t) <= 1e-13 * max(1.0, abs(t)), t, a)

            q = cbrt(x)
            tally.feed(q)
            tally.judge(f"cbrt({x!r})^3", _rel(q * q * q, x) <= 1e-14, x, q * q * q)

            b, y = rng.uniform(0.5, 2.0), rng.uniform(-40.0, 40.0)
            p = pow_(b, y)
            tally.feed(p)
            # exp(y log b) carries log's rounding error times |y log b| <= 28: 1e-12 covers it.
            tally.judge(f"pow({b!r}, {y!r})", _rel(p, exp(y * log(b))) <= 1e-12, exp(y * log(b)), p)

            xf = float(rng.uniform(0.01, 100.0))
            ef = expf(logf(xf))
            sf, cf = sinf(t), cosf(t)
            pf = powf(b, y / 4.0)
            tally.feed(ef, sf, cf, pf)
            tally.judge(f"expf(logf({xf!r}))", _rel(ef, xf) <= 4e-6, xf, ef)
            tally.judge(
                f"sinf^2+cosf^2 ({t!r})",
                abs(sf * sf + cf * cf - 1.0) <= 1e-6,
                1.0,
                sf * sf + cf * cf,
            )
            tally.judge(
                f"powf({b!r}, {y / 4.0!r})",
                _rel(pf, pow_(b, y / 4.0)) <= 1e-6,
                pow_(b, y / 4.0),
                pf,
            )
        return tally.observation()
