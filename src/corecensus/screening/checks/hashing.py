"""Hashing: SHA-2, SHA-3 and BLAKE2 through three independent implementations.

``hashlib`` uses the system OpenSSL for SHA-2/SHA-3 (SHA-NI or AVX2 assembly), CPython's own
HACL*/reference C for ``_sha256``/``_sha512``/``_blake2``, and the ``cryptography`` package links a
second OpenSSL of its own. The standard test vectors (FIPS 180-4 examples, RFC 7693 appendix A)
are known answers; on seeded data the implementations must agree with each other, one-shot and
in odd-sized chunks (which walk the block-buffering code).
"""

from __future__ import annotations

import hashlib
import importlib
import random
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import hashes

from corecensus.screening.checks.protocol import CheckContext, Observation, Tally

__all__ = ["Hashing"]

# (algorithm, message, digest): FIPS 180-4 / NIST CSRC examples and RFC 7693 appendix A.
_VECTORS: tuple[tuple[str, bytes, str], ...] = (
    ("sha256", b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    (
        "sha256",
        b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    ),
    (
        "sha512",
        b"abc",
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
    ),
    ("sha3_256", b"abc", "3a985da74fe225b2045c172d6bd390bd855f086e3e9d525b46bfe24511431532"),
    (
        "blake2b",
        b"abc",
        "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1"
        "7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923",
    ),
)
# SHA-256 of one million 'a' (FIPS 180-2 appendix B.3).
_MILLION_A_SHA256 = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"


def _builtin(algo: str) -> Callable[[bytes], bytes]:
    """CPython's own implementation of ``algo`` (not OpenSSL): ``_sha2`` from 3.12 on,
    ``_sha256``/``_sha512``/``_blake2`` before."""
    modules = {
        "sha256": ("_sha2", "_sha256"),
        "sha512": ("_sha2", "_sha512"),
        "blake2b": ("_blake2",),
    }
    for name in modules[algo]:
        try:
            module: Any = importlib.import_module(name)
        except ImportError:
            continue
        ctor = getattr(module, algo)
        return lambda d: bytes(ctor(d).digest())
    raise ImportError(f"CPython has no built-in {algo} here")


def _crypto(algorithm: hashes.HashAlgorithm) -> Callable[[bytes], bytes]:
    def run(data: bytes) -> bytes:
        h = hashes.Hash(algorithm)
        h.update(data)
        return h.finalize()

    return run


class Hashing:
    name = "hashing"
    family = "hash"
    description = "SHA-256/512, SHA3-256, BLAKE2b: test vectors, and three implementations agree"

    def run(self, ctx: CheckContext) -> Observation:
        tally = Tally(
            "FIPS 180-4/RFC 7693 vectors; OpenSSL, HACL*/CPython and bundled OpenSSL agree"
        )
        for algo, msg, want in _VECTORS:
            tally.expect(f"{algo}({msg[:8]!r}...)", want, hashlib.new(algo, msg).hexdigest())
        tally.expect(
            "sha256(10^6 * 'a')", _MILLION_A_SHA256, hashlib.sha256(b"a" * 1_000_000).hexdigest()
        )

        rng = random.Random(ctx.seed)
        data = rng.randbytes(ctx.units(1 << 20, minimum=4096))
        impls: dict[str, tuple[Callable[[bytes], bytes], ...]] = {
            "sha256": (
                lambda d: hashlib.sha256(d).digest(),
                _builtin("sha256"),
                _crypto(hashes.SHA256()),
            ),
            "sha512": (
                lambda d: hashlib.sha512(d).digest(),
                _builtin("sha512"),
                _crypto(hashes.SHA512()),
            ),
            "sha3_256": (lambda d: hashlib.sha3_256(d).digest(), _crypto(hashes.SHA3_256())),
            "blake2b": (
                _builtin("blake2b"),
                lambda d: hashlib.new("blake2b512", d).digest(),
                _crypto(hashes.BLAKE2b(64)),
            ),
        }
        for algo, fns in impls.items():
            ref = fns[0](data)
            tally.feed(ref)
            for i, fn in enumerate(fns[1:], start=1):
                tally.expect(f"{algo} implementation {i} vs 0", ref.hex(), fn(data).hex())
            chunked = hashlib.new(algo)
            pos = 0
            while pos < len(data):
                step = rng.randint(1, 9000)
                chunked.update(data[pos : pos + step])
                pos += step
            tally.expect(f"{algo} chunked vs one-shot", ref.hex(), chunked.digest().hex())
        return tally.observation()
