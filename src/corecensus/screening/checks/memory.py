"""Memory copy and compare patterns (``memcpy``, ``memmove``, ``memcmp`` and NumPy's copy loops).

Classic memory-test patterns -- walking ones, checkerboards (0x55/0xAA), address-in-address and
seeded random -- are copied through several paths (``bytes`` of a ``bytearray`` is a ``memcpy``,
slice assignment of a ``memoryview`` a ``memmove``, ``ctypes.memmove`` with overlapping ranges
both forwards and backwards, ``numpy.copyto``) and compared against patterns regenerated from
their definition. Compare paths are checked in the other direction too: buffers differing in one
seeded byte must compare unequal, at that byte.
"""

from __future__ import annotations

import ctypes
import random

import numpy as np

from corecensus.screening.checks.protocol import CheckContext, Observation, Tally

__all__ = ["MemoryPatterns"]


def _patterns(size: int, rng: random.Random) -> dict[str, bytes]:
    words = size // 8
    walking = bytes(1 << i for i in range(8)) * (size // 8)
    return {
        "walking-ones": walking,
        "checkerboard": b"\x55\xaa" * (size // 2),
        "address": np.arange(words, dtype=np.uint64).tobytes(),
        "random": rng.randbytes(size),
    }


class MemoryPatterns:
    name = "memory"
    family = "memory"
    description = "memcpy/memmove/memcmp/NumPy copies of test patterns, overlapping moves"

    def run(self, ctx: CheckContext) -> Observation:
        rng = random.Random(ctx.seed)
        size = ctx.units(512 << 10, minimum=4096) & ~63
        tally = Tally("patterns survive memcpy/memmove/NumPy copies; one-byte differences detected")
        for label, pattern in _patterns(size, rng).items():
            src = bytearray(pattern)
            copied = bytes(src)  # memcpy
            tally.expect(f"{label} memcpy", True, copied == pattern)

            view = bytearray(size)
            memoryview(view)[:] = memoryview(src)  # memmove
            tally.expect(f"{label} memoryview copy", True, view == src)

            arr = np.frombuffer(pattern, dtype=np.uint8)
            dst = np.empty_like(arr)
            np.copyto(dst, arr)
            tally.expect(f"{label} numpy copyto", True, bool(np.array_equal(dst, arr)))
            tally.feed(int(np.bitwise_xor.reduce(dst.view(np.uint64))))

            # Overlapping moves by a seeded shift, forwards and backwards.
            shift = rng.randrange(1, 4096)
            buf = (ctypes.c_char * (size + shift)).from_buffer_copy(pattern + bytes(shift))
            ctypes.memmove(ctypes.byref(buf, shift), buf, size)  # forwards: dst above src
            tally.expect(f"{label} memmove +{shift}", True, bytes(buf)[shift:] == pattern)
            ctypes.memmove(buf, ctypes.byref(buf, shift), size)  # backwards: dst below src
            tally.expect(f"{label} memmove -{shift}", True, bytes(buf)[:size] == pattern)

            # A single-byte difference must be seen, at the right place.
            where = rng.randrange(size)
            other = bytearray(pattern)
            other[where] ^= 1 << rng.randrange(8)
            tally.expect(f"{label} memcmp sees a flipped bit", False, bytes(other) == pattern)
            diff = np.flatnonzero(np.frombuffer(bytes(other), dtype=np.uint8) != arr)
            tally.expect(f"{label} first difference", [where], diff.tolist())

        # The address pattern has a closed form: the words sum to n(n-1)/2.
        words = size // 8
        addr = np.frombuffer(_patterns(size, random.Random(0))["address"], dtype=np.uint64)
        tally.expect(
            "address pattern sum", words * (words - 1) // 2, int(addr.sum(dtype=np.uint64))
        )
        return tally.observation()
