"""Floating-point multiply-add through BLAS, and the FMA instruction through libm's ``fma``.

Matrices hold small integers, so every product and every partial sum is an integer below 2^53
(float64) or 2^24 (float32) and therefore exact, whatever order or blocking the BLAS kernel uses:
the answer is known exactly, and is computed a second way through NumPy's integer matmul, which
does not go through BLAS. ``fma(a, b, -(a*b))`` is the error-free product transformation (Dekker
1971; Ogita, Rump and Oishi 2005): with a correctly rounded FMA it equals ``a*b - fl(a*b)``
exactly, which rational arithmetic gives independently of the FPU.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from corecensus.screening.checks.clib import double_fn
from corecensus.screening.checks.protocol import CheckContext, Observation, Tally

__all__ = ["FmaMatmul"]


class FmaMatmul:
    name = "fma_matmul"
    family = "fp-fma"
    description = "exact-integer DGEMM/SGEMM/DGEMV against integer matmul; fma() error terms"

    def run(self, ctx: CheckContext) -> Observation:
        rng = np.random.default_rng(ctx.seed)
        tally = Tally("integer-valued GEMM/GEMV exact; fma(a,b,-ab) equals the exact product error")
        n = ctx.units(96, minimum=8)
        for dtype, bound in ((np.float64, 1 << 10), (np.float32, 1 << 6)):
            # |sum| <= n * bound^2: 2^26 for float64 and n <= 96 * scale, 2^18 for float32.
            ai = rng.integers(-bound, bound + 1, size=(n, n), dtype=np.int64)
            bi = rng.integers(-bound, bound + 1, size=(n, n), dtype=np.int64)
            want = ai @ bi
            got = ai.astype(dtype) @ bi.astype(dtype)
            tally.feed(got.tobytes())
            name = np.dtype(dtype).name
            tally.arrays(f"{name} GEMM", want.astype(dtype), got)
            gv = ai.astype(dtype) @ bi[:, 0].astype(dtype)
            tally.feed(gv.tobytes())
            tally.arrays(f"{name} GEMV", (ai @ bi[:, 0]).astype(dtype), gv)
            dot = float(np.dot(ai[0].astype(dtype), bi[0].astype(dtype)))
            tally.expect(f"{name} dot", int(ai[0] @ bi[0]), int(dot))

        fma = double_fn("fma", 3)
        xs = rng.uniform(-1e3, 1e3, size=(ctx.units(200), 2))
        for a, b in xs.tolist():
            product = a * b
            err = fma(a, b, -product)
            tally.feed(err)
            exact = Fraction(a) * Fraction(b) - Fraction(product)
            tally.expect(f"fma({a!r}, {b!r}, -a*b)", float(exact), err)
        return tally.observation()
