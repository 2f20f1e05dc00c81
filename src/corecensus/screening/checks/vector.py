"""Vector (SIMD) arithmetic through NumPy's ufunc loops, on data chosen so answers are exact.

NumPy dispatches its loops at run time to the widest SIMD the CPU offers (SSE/AVX2/AVX-512), so
these exercise the vector units rather than the scalar FPU: integer-valued float add, multiply and
divide that cannot round, square roots of perfect squares, exact reductions, population counts,
and NumPy's own vectorized ``exp``/``log``/``sin`` against the C library's scalar ones.
"""

from __future__ import annotations

import math

import numpy as np

from corecensus.screening.checks.clib import double_fn
from corecensus.screening.checks.protocol import CheckContext, Observation, Tally

__all__ = ["VectorArith"]


class VectorArith:
    name = "vector"
    family = "simd-vector"
    description = "NumPy SIMD add/mul/div/sqrt/popcount/reductions with exact answers"

    def run(self, ctx: CheckContext) -> Observation:
        rng = np.random.default_rng(ctx.seed)
        tally = Tally("exact SIMD results (integer-valued floats, perfect squares, popcounts)")
        n = ctx.units(1 << 16, minimum=64)
        a = rng.integers(1, 1 << 26, size=n, dtype=np.int64)
        b = rng.integers(1, 1 << 26, size=n, dtype=np.int64)
        af, bf = a.astype(np.float64), b.astype(np.float64)

        for label, got, want in (
            ("add", af + bf, a + b),
            ("sub", af - bf, a - b),
            ("mul", af * bf, a * b),  # < 2^52: exact in float64
            ("div", (af * bf) / bf, a),  # exact quotient, so division cannot round
            ("sqrt", np.sqrt(af * af), a),
            ("a*b+a", af * bf + af, a * b + a),
        ):
            tally.feed(got.tobytes())
            tally.arrays(label, want.astype(np.float64), got)

        # float32: 11-bit operands keep a*b+a below 2^23, so it is exact too.
        a11, b11 = a & 0x7FF, b & 0x7FF
        got32 = a11.astype(np.float32) * b11.astype(np.float32) + a11.astype(np.float32)
        tally.feed(got32.tobytes())
        tally.arrays("float32 a*b+a", (a11 * b11 + a11).astype(np.float32), got32)

        total = int(a.sum())
        tally.expect("sum", total, int(af.sum()))  # every partial sum < 2^53
        tally.expect("max", int(a.max()), int(af.max()))
        tally.expect("min", int(b.min()), int(bf.min()))

        words = rng.integers(0, np.iinfo(np.uint64).max, size=ctx.units(4096, 16), dtype=np.uint64)
        counts = np.bitwise_count(words)
        tally.feed(counts.tobytes())
        want_counts = [int(w).bit_count() for w in words[:512].tolist()]
        tally.expect("popcount", want_counts, counts[:512].tolist())
        tally.expect("xor-fold", int(np.bitwise_xor.reduce(words)), _xor_fold(words.tolist()))

        # NumPy's vectorized transcendental loops against the C library, to 4 ulp.
        xs = rng.uniform(-20.0, 20.0, size=ctx.units(512, 16))
        for fname, ufunc, domain in (
            ("exp", np.exp, xs),
            ("log", np.log, np.abs(xs) + 1e-3),
            ("sin", np.sin, xs),
        ):
            cfn = double_fn(fname)
            vec = ufunc(domain)
            tally.feed(vec.tobytes())
            for x, v in zip(domain.tolist(), vec.tolist(), strict=True):
                ref = cfn(x)
                if not tally.judge(f"np.{fname}({x!r})", abs(v - ref) <= 4 * math.ulp(ref), ref, v):
                    break
        return tally.observation()


def _xor_fold(values: list[int]) -> int:
    acc = 0
    for v in values:
        acc ^= v
    return acc
