"""The stack scan's hand decoder of x86-64 call sites agrees with capstone."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from corecensus.coredump.instruction import call_before, is_after_call

BASE = 0x400000


class Bytes:
    """Code bytes ending at BASE + len(code): the only part of an address space the two read."""

    def __init__(self, code: bytes) -> None:
        self.code = code
        self.end = BASE + len(code)

    def read(self, addr: int, size: int) -> bytes | None:
        lo = addr - BASE
        if lo < 0 or addr + size > self.end:
            return None
        return self.code[lo : lo + size]


def _agree(code: bytes) -> tuple[bool, bool]:
    space: Any = Bytes(code)
    return is_after_call(space, BASE + len(code), "x86_64"), call_before(
        space, BASE + len(code), "x86_64"
    ) is not None


def test_known_call_forms() -> None:
    cases = {
        "e8 00 00 00 00": True,  # call rel32
        "ff d0": True,  # call *%rax
        "41 ff d4": True,  # call *%r12
        "3e ff d0": True,  # notrack call *%rax (CET)
        "ff 15 7e 7e 02 00": True,  # call *disp32(%rip)
        "ff 50 38": True,  # call *0x38(%rax)
        "ff 90 38 06 00 00": True,  # call *0x638(%rax)
        "ff 14 24": True,  # call *(%rsp) - SIB
        "ff 54 24 08": True,  # call *8(%rsp)
        "ff e0": False,  # jmp *%rax
        "48 89 c7": False,  # mov %rax,%rdi
        "c3": False,
    }
    for text, want in cases.items():
        code = bytes(9 - len(bytes.fromhex(text))) + bytes.fromhex(text)
        fast, slow = _agree(code)
        assert fast == slow == want, text


@settings(max_examples=800, deadline=None)
@given(st.binary(min_size=9, max_size=9))
def test_agrees_with_capstone_on_any_bytes(code: bytes) -> None:
    fast, slow = _agree(code)
    assert fast == slow, code.hex()


@settings(max_examples=600, deadline=None)
@given(
    st.binary(min_size=0, max_size=7),
    st.sampled_from([0xFF]),
    st.integers(0, 255),
    st.binary(max_size=6),
)
def test_agrees_near_ff_opcodes(pre: bytes, op: int, modrm: int, tail: bytes) -> None:
    code = (bytes(9) + pre + bytes([op, modrm]) + tail)[-9:]
    fast, slow = _agree(code)
    assert fast == slow, code.hex()
