"""Compression round trips: zlib (deflate), zstd and lzma (xz).

A corrupted core in a fleet was found because files it had compressed could not be decompressed
elsewhere (Dixit et al. 2021, the Spark decompression case). Seeded data mixing incompressible
and repetitive runs is compressed at several levels and must come back byte for byte; the
compressed bytes themselves are deterministic for one library version, so they go into the
fingerprint for the cross-CPU comparison.
"""

from __future__ import annotations

import hashlib
import lzma
import random
import zlib

import zstandard

from corecensus.screening.checks.protocol import CheckContext, Observation, Tally

__all__ = ["Compression", "compressible_data"]

_WORDS = (b"core ", b"census ", b"silent ", b"data ", b"corruption ", b"fleet ", b"\x00" * 7)


def compressible_data(rng: random.Random, size: int) -> bytes:
    """``size`` bytes alternating random runs with runs of repeated words (compress ~2-4x)."""
    out = bytearray()
    while len(out) < size:
        if rng.random() < 0.3:
            out += rng.randbytes(rng.randint(16, 512))
        else:
            for _ in range(rng.randint(4, 64)):
                out += rng.choice(_WORDS)
    return bytes(out[:size])


class Compression:
    name = "compression"
    family = "compression"
    description = "zlib, zstd and lzma round trips at several levels"

    def run(self, ctx: CheckContext) -> Observation:
        rng = random.Random(ctx.seed)
        tally = Tally("zlib/zstd/lzma compress then decompress returns the input byte for byte")
        data = compressible_data(rng, ctx.units(160 << 10, minimum=4096))
        want = hashlib.sha256(data).hexdigest()
        small = data[: max(4096, len(data) // 8)]  # lzma is ~20x slower: a smaller slice
        codecs = (
            ("zlib-1", data, lambda d: zlib.compress(d, 1), zlib.decompress),
            ("zlib-9", data, lambda d: zlib.compress(d, 9), zlib.decompress),
            (
                "zstd-3",
                data,
                zstandard.ZstdCompressor(level=3).compress,
                zstandard.ZstdDecompressor().decompress,
            ),
            (
                "zstd-12",
                data,
                zstandard.ZstdCompressor(level=12).compress,
                zstandard.ZstdDecompressor().decompress,
            ),
            ("lzma-1", small, lambda d: lzma.compress(d, preset=1), lzma.decompress),
        )
        for label, plain, compress, decompress in codecs:
            packed = compress(plain)
            tally.feed(packed)
            back = decompress(packed)
            expected = want if plain is data else hashlib.sha256(plain).hexdigest()
            tally.expect(f"{label} round trip sha256", expected, hashlib.sha256(back).hexdigest())
        # Streaming deflate in odd chunks walks the window/buffer code the one-shot call skips.
        co = zlib.compressobj(6, zlib.DEFLATED, -15)
        parts = []
        pos = 0
        while pos < len(data):
            step = rng.randint(1, 20000)
            parts.append(co.compress(data[pos : pos + step]))
            pos += step
        parts.append(co.flush())
        raw = b"".join(parts)
        tally.feed(raw)
        tally.expect(
            "raw deflate streamed round trip",
            want,
            hashlib.sha256(zlib.decompress(raw, -15)).hexdigest(),
        )
        return tally.observation()
