"""Big-integer multiply and divide (CPython's Karatsuba multiply and long division).

Answers are checked through identities that a different, small-number path confirms: the
quotient and remainder of a product, residues modulo word-sized primes, Fermat's little theorem
for Mersenne primes (each modular exponentiation is thousands of big multiplies), integer square
roots of squares, and byte round trips.
"""

from __future__ import annotations

import math
import random

from corecensus.screening.checks.protocol import CheckContext, Observation, Tally

__all__ = ["BigInt"]

# Mersenne prime exponents (2^p - 1 is prime): OEIS A000043.
_MERSENNE_EXPONENTS = (521, 607, 1279, 2203)
# Primes just below 2^61 and 2^31, so residues are checked with one-word arithmetic.
_SMALL_PRIMES = ((1 << 61) - 1, 2147483647, 1000000007, 998244353)


class BigInt:
    name = "bigint"
    family = "bigint"
    description = "big-integer multiply/divide through quotient, residue and Fermat identities"

    def run(self, ctx: CheckContext) -> Observation:
        rng = random.Random(ctx.seed)
        tally = Tally("product/quotient/residue identities, Fermat tests of Mersenne primes")
        for _ in range(ctx.units(24)):
            a = rng.getrandbits(rng.randint(2000, 20000)) | 1
            b = rng.getrandbits(rng.randint(1000, 12000)) | 1
            r = rng.randrange(b)
            p = a * b
            tally.feed(p & ((1 << 256) - 1), p.bit_length())
            q, rem = divmod(p + r, b)
            tally.expect("divmod(a*b + r, b)", (a, r), (q, rem))
            for m in _SMALL_PRIMES:
                tally.expect(f"(a*b) mod {m}", (a % m) * (b % m) % m, p % m)
            s = math.isqrt(p * p)
            tally.expect("isqrt((a*b)^2)", p, s)
            nbytes = (p.bit_length() + 7) // 8
            tally.expect(
                "bytes round trip", p, int.from_bytes(p.to_bytes(nbytes, "little"), "little")
            )
        for e in _MERSENNE_EXPONENTS[: ctx.units(3, minimum=1)]:
            m = (1 << e) - 1
            base = rng.randrange(2, m - 1)
            got = pow(base, m - 1, m)
            tally.feed(got)
            tally.expect(f"pow(base, M{e} - 1, M{e})", 1, got)
        return tally.observation()
