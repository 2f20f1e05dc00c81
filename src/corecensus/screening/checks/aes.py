"""AES encrypt/decrypt (AES-NI, VAES and PCLMULQDQ in OpenSSL's GCM).

Known answers: FIPS-197 appendix C (AES-128 and AES-256 single blocks) and GCM test case 3 of
McGrew and Viega's GCM specification. On seeded keys and data: GCM round trips with tag
verification, and CTR mode must equal a keystream built by encrypting the counter blocks one by
one in ECB -- the same cipher through a different code path (bulk pipelined vs. single blocks).
"""

from __future__ import annotations

import random

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from corecensus.screening.checks.protocol import CheckContext, Observation, Tally

__all__ = ["Aes"]

_H = bytes.fromhex
# FIPS-197 appendix C.1 and C.3: (key, plaintext, ciphertext).
_ECB_VECTORS = (
    (
        _H("000102030405060708090a0b0c0d0e0f"),
        _H("00112233445566778899aabbccddeeff"),
        _H("69c4e0d86a7b0430d8cdb78070b4c55a"),
    ),
    (
        _H("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"),
        _H("00112233445566778899aabbccddeeff"),
        _H("8ea2b7ca516745bfeafc49904b496089"),
    ),
)
# GCM specification (McGrew & Viega, 2005), test case 3.
_GCM_KEY = _H("feffe9928665731c6d6a8f9467308308")
_GCM_IV = _H("cafebabefacedbaddecaf888")
_GCM_PT = _H(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
)
_GCM_CT_TAG = _H(
    "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
    "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985"
    "4d5c2af327cd64a62cf35abd2ba6fab4"
)


def _ecb(key: bytes, data: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


class Aes:
    name = "aes"
    family = "aes"
    description = "AES-128/256 FIPS-197 and GCM vectors; GCM round trips; CTR vs ECB keystream"

    def run(self, ctx: CheckContext) -> Observation:
        tally = Tally("FIPS-197 / GCM vectors; GCM decrypts what it encrypts; CTR = ECB keystream")
        for key, pt, ct in _ECB_VECTORS:
            tally.expect(f"AES-{len(key) * 8} FIPS-197 block", ct.hex(), _ecb(key, pt).hex())
        got = AESGCM(_GCM_KEY).encrypt(_GCM_IV, _GCM_PT, None)
        tally.expect("AES-128-GCM test case 3", _GCM_CT_TAG.hex(), got.hex())

        rng = random.Random(ctx.seed)
        for _ in range(ctx.units(4)):
            key = rng.randbytes(rng.choice((16, 32)))
            nonce = rng.randbytes(12)
            data = rng.randbytes(ctx.units(256 << 10, minimum=1024))
            aad = rng.randbytes(rng.randint(0, 64))
            sealed = AESGCM(key).encrypt(nonce, data, aad)
            tally.feed(sealed[-16:], len(sealed))
            try:
                opened = AESGCM(key).decrypt(nonce, sealed, aad)
            except Exception as exc:  # InvalidTag: the tag or the data was computed wrongly
                tally.judge("AES-GCM decrypt", False, "tag verifies", f"{type(exc).__name__}")
                continue
            tally.expect("AES-GCM round trip", True, opened == data)

            iv = rng.randbytes(16)
            nblocks = ctx.units(512, minimum=4)
            plain = rng.randbytes(nblocks * 16)
            enc = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
            ctr = enc.update(plain) + enc.finalize()
            start = int.from_bytes(iv, "big")
            counters = b"".join(
                ((start + i) % (1 << 128)).to_bytes(16, "big") for i in range(nblocks)
            )
            stream = _ecb(key, counters)
            manual = bytes(p ^ s for p, s in zip(plain, stream, strict=True))
            tally.feed(ctr)
            tally.expect("AES-CTR vs ECB keystream", manual.hex()[:64], ctr.hex()[:64])
            tally.expect("AES-CTR vs ECB keystream (all)", True, manual == ctr)
        return tally.observation()
