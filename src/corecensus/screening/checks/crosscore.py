"""The cross-core trick: compute on one CPU, verify on another.

A defective core can be self-consistent: if it computes a checksum wrongly both when writing and
when checking, a check on that core alone passes. Data that one core produced and another core
consumes is how such faults surface in production (Dixit et al. 2021: files compressed on one
machine failed to decompress elsewhere). So this check builds a sealed payload on the worker's
CPU -- deflate, a zlib CRC32 and a SHA-256 of the data, libm values, all under AES-GCM -- then
migrates to the partner CPU, regenerates the inputs from the seed there and verifies everything;
and the same in the other direction. A failure involves two CPUs; the screen attributes it to
the one that also fails elsewhere (see ``corecensus.screening.verdict``).
"""

from __future__ import annotations

import hashlib
import random
import struct
import zlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from corecensus.screening.affinity import current_cpu, on_cpu
from corecensus.screening.checks.clib import double_fn
from corecensus.screening.checks.compression import compressible_data
from corecensus.screening.checks.protocol import (
    CheckContext,
    CheckNotApplicable,
    Observation,
    Tally,
)

__all__ = ["CrossCore"]


@dataclass(frozen=True, slots=True)
class _Inputs:
    key: bytes
    nonce: bytes
    data: bytes
    exponents: tuple[int, ...]


def _inputs(seed: int, size: int) -> _Inputs:
    rng = random.Random(seed)
    return _Inputs(
        key=rng.randbytes(32),
        nonce=rng.randbytes(12),
        data=compressible_data(rng, size),
        exponents=tuple(rng.randrange(-120, 121) for _ in range(64)),
    )


def _floats(exponents: tuple[int, ...]) -> bytes:
    pow_ = double_fn("pow", 2)
    return struct.pack(f"<{len(exponents)}d", *(pow_(1.1, float(k)) for k in exponents))


def _produce(inp: _Inputs) -> bytes:
    body = zlib.compress(inp.data, 6)
    trailer = (
        struct.pack("<I", zlib.crc32(inp.data))
        + hashlib.sha256(inp.data).digest()
        + _floats(inp.exponents)
    )
    return AESGCM(inp.key).encrypt(inp.nonce, struct.pack("<I", len(body)) + body + trailer, None)


def _verify(inp: _Inputs, sealed: bytes, tally: Tally, direction: str) -> None:
    try:
        opened = AESGCM(inp.key).decrypt(inp.nonce, sealed, None)
    except InvalidTag:
        tally.judge(f"{direction}: AES-GCM tag", False, "verifies", "InvalidTag")
        return
    (n,) = struct.unpack_from("<I", opened)
    body, trailer = opened[4 : 4 + n], opened[4 + n :]
    try:
        data = zlib.decompress(body)
    except zlib.error as exc:
        tally.judge(f"{direction}: inflate", False, "valid deflate stream", str(exc))
        return
    tally.expect(
        f"{direction}: data", hashlib.sha256(inp.data).hexdigest(), hashlib.sha256(data).hexdigest()
    )
    (crc,) = struct.unpack_from("<I", trailer)
    tally.expect(f"{direction}: crc32", hex(zlib.crc32(inp.data)), hex(crc))
    tally.expect(f"{direction}: sha256", hashlib.sha256(inp.data).hexdigest(), trailer[4:36].hex())
    tally.expect(
        f"{direction}: pow(1.1, k) values", _floats(inp.exponents).hex(), trailer[36:].hex()
    )


class CrossCore:
    name = "crosscore"
    family = "cross-core"
    description = "payload sealed on this CPU verified on a partner CPU, and the reverse"

    def run(self, ctx: CheckContext) -> Observation:
        if ctx.cpu is None or ctx.partner is None or ctx.partner == ctx.cpu:
            raise CheckNotApplicable("no partner CPU of the same model to verify on")
        home, partner = ctx.cpu, ctx.partner
        size = ctx.units(128 << 10, minimum=2048)
        tally = Tally(f"sealed on CPU {home} verifies on CPU {partner}, and the reverse")
        here = _produce(_inputs(ctx.seed, size))
        tally.feed(here)
        with on_cpu(partner, home):
            tally.expect("ran on partner", partner, current_cpu())
            _verify(_inputs(ctx.seed, size), here, tally, f"CPU {home} -> CPU {partner}")
            there = _produce(_inputs(ctx.seed, size))
        tally.expect("back home", home, current_cpu())
        _verify(_inputs(ctx.seed, size), there, tally, f"CPU {partner} -> CPU {home}")
        # GCM is deterministic for a key and nonce: both CPUs must have sealed the same bytes.
        tally.expect(
            "payloads identical",
            hashlib.sha256(here).hexdigest(),
            hashlib.sha256(there).hexdigest(),
        )
        return tally.observation()
