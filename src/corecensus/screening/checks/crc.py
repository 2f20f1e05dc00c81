"""CRC32 (zlib's, with its carry-less-multiply fast path) and CRC-CCITT.

The standard check value ``crc32("123456789") = 0xCBF43926`` (the Rocksoft catalogue) is a known
answer; on seeded data zlib's CRC must equal a plain table-driven CRC computed here byte by byte
(a completely different instruction mix), and must compose across a split
(``crc32(b, crc32(a)) == crc32(a + b)``).
"""

from __future__ import annotations

import binascii
import random
import zlib
from functools import cache

from corecensus.screening.checks.protocol import CheckContext, Observation, Tally

__all__ = ["Crc"]


@cache
def _table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


def _crc32_reference(data: bytes, crc: int = 0) -> int:
    table = _table()
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


class Crc:
    name = "crc32"
    family = "crc"
    description = "zlib CRC32 against the check value and a table-driven reference; CRC-CCITT"

    def run(self, ctx: CheckContext) -> Observation:
        tally = Tally(
            "crc32('123456789') = 0xcbf43926; zlib equals table-driven CRC32 on seeded data"
        )
        tally.expect("zlib.crc32('123456789')", "0xcbf43926", hex(zlib.crc32(b"123456789")))
        tally.expect("binascii.crc32('123456789')", "0xcbf43926", hex(binascii.crc32(b"123456789")))
        # CRC-16/CCITT-FALSE check value (init 0xFFFF).
        tally.expect(
            "crc_hqx('123456789', 0xffff)", "0x29b1", hex(binascii.crc_hqx(b"123456789", 0xFFFF))
        )

        rng = random.Random(ctx.seed)
        for _ in range(ctx.units(8)):
            small = rng.randbytes(rng.randint(1, 4096))
            got = zlib.crc32(small)
            tally.feed(got)
            tally.expect(
                f"crc32 of {len(small)} bytes vs table", hex(_crc32_reference(small)), hex(got)
            )
        big = rng.randbytes(ctx.units(4 << 20, minimum=4096))
        whole = zlib.crc32(big)
        tally.feed(whole)
        cut = rng.randrange(len(big))
        tally.expect(
            "crc32(a + b) vs crc32(b, crc32(a))",
            hex(whole),
            hex(zlib.crc32(big[cut:], zlib.crc32(big[:cut]))),
        )
        tally.expect("zlib vs binascii crc32", hex(whole), hex(binascii.crc32(big)))
        return tally.observation()
