"""Word windows searched by byte pattern find exactly the words a word-by-word scan finds."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from corecensus.coredump.words import (
    WordWindow,
    _indices_bytes,
    _indices_numpy,
    code_pointer_indices,
    prefix_patterns,
)


def _naive(window: WordWindow, starts: list[int], lasts: list[int]) -> list[int]:
    """The definition: present words >= 4096 inside some [start, last]."""
    return [
        i
        for i in range(window.count)
        if window.is_present(i)
        and window.value(i) >= 4096
        and any(s <= window.value(i) <= last for s, last in zip(starts, lasts, strict=True))
    ]


@st.composite
def windows(draw: st.DrawFn) -> tuple[WordWindow, list[int], list[int]]:
    w = draw(st.sampled_from([4, 8]))
    little = draw(st.booleans())
    top = (1 << (8 * w)) - 1
    # non-overlapping ranges, sorted: some tiny, some huge, some at the ends of the space
    cuts = sorted(draw(st.sets(st.integers(0, top), min_size=0, max_size=12)))
    starts, lasts = [], []
    for a, b in zip(cuts[::2], cuts[1::2], strict=False):
        starts.append(a)
        lasts.append(b)
    n = draw(st.integers(0, 64))
    pool = [*starts, *lasts, *(s - 1 for s in starts if s), *(x + 1 for x in lasts if x < top)]
    value = st.integers(0, top) | (st.sampled_from(pool) if pool else st.integers(0, top))
    values = draw(st.lists(value, min_size=n, max_size=n))
    fmt = ("<" if little else ">") + ("Q" if w == 8 else "I") * n
    raw = struct.pack(fmt, *values)
    present = None
    if draw(st.booleans()):
        present = bytes(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
        # absent words read as zero, as AddressSpace.read_word_window leaves them
        raw = b"".join(raw[i * w : (i + 1) * w] if present[i] else bytes(w) for i in range(n))
    return WordWindow(0x1000, raw, w, little, present), starts, lasts


@settings(max_examples=400, deadline=None)
@given(windows())
def test_code_pointers_are_the_words_a_full_scan_finds(
    case: tuple[WordWindow, list[int], list[int]],
) -> None:
    window, starts, lasts = case
    expected = _naive(window, starts, lasts)
    # both ways: bytes operations (inspect as a command) and NumPy (when a process has it)
    assert _indices_bytes(window, starts, lasts) == expected
    assert _indices_numpy(window, starts, lasts) == expected
    assert code_pointer_indices(window, starts, lasts) == expected


def test_with_byte_keeps_only_present_words_with_that_byte_there() -> None:
    words = [0x33, 0x3300, 0x1233, 0x33]
    raw = struct.pack("<4Q", *words)
    window = WordWindow(0, raw, 8, True, bytes([1, 1, 1, 0]))
    # byte 0 is 0x33 in words 0 and 2 (word 1 holds it one byte in; word 3 is absent)
    assert window.with_byte(0, 0x33) == [0, 2]
    assert window.with_byte(1, 0x33) == [1]
    assert window.value(1) == 0x3300
    big = WordWindow(0, struct.pack(">2Q", 0x33, 0x1200), 8, False)
    assert big.with_byte(7, 0x33) == [0]
    assert big.with_byte(6, 0x12) == [1]
    assert big.value(1) == 0x1200


def test_prefixes_are_the_top_bytes_of_each_range() -> None:
    # a 2 MiB library at 0x7f12_3400_0000: top 5 bytes (shift 24) take 1 value
    lib = (0x7F12_3400_0000, 0x7F12_341F_FFFF)
    assert prefix_patterns([lib], 8, True) == {(0x7F1234).to_bytes(5, "little"): 3}
    assert prefix_patterns([lib], 8, False) == {(0x7F1234).to_bytes(5, "big"): 0}
    # a non-PIE executable near 0x400000: small integers (top 6 bytes zero) do not match
    exe = (0x40_1000, 0x4A_0FFF)
    pats = prefix_patterns([exe], 8, True)
    assert all(p != bytes(len(p)) for p in pats)
    # below 4096 nothing is a code pointer
    assert prefix_patterns([(0, 4095)], 8, True) == {}
