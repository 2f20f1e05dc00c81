"""Decoding instructions at the crash with capstone: memory operands, calls, signal trampolines.

x86-64 gets the full treatment (effective addresses of the faulting instruction, including
implicit stack accesses); aarch64 gets call-site recognition so stack scanning works there too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from corecensus.coredump.memory import AddressSpace

__all__ = [
    "MemoryAccess",
    "call_before",
    "decode",
    "direct_call_target",
    "disassemble",
    "effective_accesses",
    "is_after_call",
    "is_restore_rt",
    "is_stub",
    "register_value",
    "x86_code_pointer",
]

# glibc's x86-64 __restore_rt (sysdeps/unix/sysv/linux/x86_64/libc_sigaction.c):
#   mov $__NR_rt_sigreturn (15), %rax ; syscall
RESTORE_RT_X86_64 = bytes.fromhex("48c7c00f0000000f05")
# x86 call encodings are 2 (call *%rax) to 7 bytes (call *disp32(%rip)), plus prefixes.
_MAX_CALL_LEN = 9
_PAGE = 4096
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class MemoryAccess:
    address: int
    size: int
    text: str
    implicit: bool = False


# capstone is imported on first use, not with this module: ``inspect`` of a core whose faulting
# instruction need not be decoded (no pc, pc outside the dumped code) never loads it.
@lru_cache(maxsize=4)
def _cs(arch: str) -> Any:
    import capstone

    if arch == "x86_64":
        md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    elif arch == "aarch64":
        md = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
    else:
        raise ValueError(arch)
    md.detail = True
    return md


def decode(code: bytes, address: int, arch: str = "x86_64") -> Any | None:
    """The first instruction in ``code`` (located at ``address``), or None if undecodable."""
    import capstone

    try:
        return next(_cs(arch).disasm(code, address, count=1), None)
    except (capstone.CsError, ValueError):
        return None


def disassemble(code: bytes, address: int, arch: str = "x86_64") -> Iterator[tuple[int, int]]:
    """(address, size) of each instruction decoded from ``code`` (at ``address``) in a row,
    stopping at the first undecodable byte."""
    import capstone

    try:
        for insn_address, size, _mnemonic, _operands in _cs(arch).disasm_lite(code, address):
            yield insn_address, size
    except (capstone.CsError, ValueError):
        return


_X86_REG_NAMES = {
    "rip": "rip", "rsp": "rsp", "rbp": "rbp", "rax": "rax", "rbx": "rbx", "rcx": "rcx",
    "rdx": "rdx", "rsi": "rsi", "rdi": "rdi", "r8": "r8", "r9": "r9", "r10": "r10", "r11": "r11",
    "r12": "r12", "r13": "r13", "r14": "r14", "r15": "r15",
}  # fmt: skip
_SUB = {"d": 0xFFFFFFFF, "w": 0xFFFF, "b": 0xFF}
_LEGACY32 = {
    "eax": "rax", "ebx": "rbx", "ecx": "rcx", "edx": "rdx", "esi": "rsi", "edi": "rdi",
    "ebp": "rbp", "esp": "rsp", "eip": "rip",
}  # fmt: skip


def register_value(name: str, regs: dict[str, int]) -> int | None:
    """Value of an x86-64 register by capstone name (64-bit names and their 32-bit halves)."""
    if name in _X86_REG_NAMES:
        return regs.get(name)
    if name in _LEGACY32:
        v = regs.get(_LEGACY32[name])
        return None if v is None else v & 0xFFFFFFFF
    if name[-1] in _SUB and name[:-1] in _X86_REG_NAMES:
        v = regs.get(name[:-1])
        return None if v is None else v & _SUB[name[-1]]
    return None


def effective_accesses(insn: Any, regs: dict[str, int]) -> list[MemoryAccess] | None:
    """Addresses the x86-64 instruction touches, or None if one cannot be computed."""
    from capstone import x86 as cs_x86  # loaded already: ``insn`` came from capstone

    out: list[MemoryAccess] = []
    mask = (1 << 64) - 1
    for op in insn.operands:
        if op.type != cs_x86.X86_OP_MEM:
            continue
        mem = op.mem
        addr = mem.disp
        if mem.base != 0:
            name = insn.reg_name(mem.base)
            v = insn.address + insn.size if name == "rip" else register_value(name, regs)
            if v is None:
                return None
            addr += v
        if mem.index != 0:
            v = register_value(insn.reg_name(mem.index), regs)
            if v is None:
                return None
            addr += v * mem.scale
        if mem.segment != 0:
            seg = insn.reg_name(mem.segment)
            base = regs.get(f"{seg}_base")
            if base:
                addr += base
        out.append(MemoryAccess(addr & mask, max(op.size, 1), insn.op_str))
    rsp = regs.get("rsp")
    if rsp is not None:
        m = insn.mnemonic
        if m.startswith(("push", "call")):
            out.append(MemoryAccess((rsp - 8) & mask, 8, "implicit push", implicit=True))
        elif m.startswith(("pop", "ret", "leave")):
            base = regs.get("rbp") if m.startswith("leave") else rsp
            if base is not None:
                out.append(MemoryAccess(base & mask, 8, "implicit pop", implicit=True))
    return out


def call_before(space: AddressSpace, addr: int, arch: str) -> Any | None:
    """The call instruction that ends exactly at ``addr`` (a return address), if there is one."""
    if arch == "aarch64":
        code = space.read(addr - 4, 4)
        if code is None:
            return None
        insn = decode(code, addr - 4, arch)
        return (
            insn if insn is not None and insn.mnemonic in ("bl", "blr", "blraa", "blrab") else None
        )
    if arch != "x86_64":
        return None
    code = space.read(addr - _MAX_CALL_LEN, _MAX_CALL_LEN) or space.read(addr - 5, 5)
    length = _x86_call_length(code) if code is not None else None
    if code is None or length is None:
        return None
    # capstone confirms the hand decoder and supplies the operands.
    insn = decode(code[-length:], addr - length, arch)
    if insn is not None and insn.size == length and insn.mnemonic == "call":
        return insn
    return None


# Lengths an ``FF /2`` call can have: opcode and ModRM, plus SIB and/or a 1- or 4-byte
# displacement (see _modrm_length).
_FF_CALL_LENGTHS = (2, 3, 4, 6, 7)


def is_after_call(space: AddressSpace, addr: int, arch: str) -> bool:
    """Whether ``addr`` directly follows a call instruction: the stack scan's hot path.

    On x86-64 this decodes only the two call forms by hand (``E8 rel32``; ``FF /2`` with its
    ModRM/SIB/displacement length), which is what capstone would conclude from the same bytes,
    at a fraction of the cost; :func:`call_before` (capstone, with operands) is for the few
    addresses that need details.
    """
    if arch != "x86_64":
        return call_before(space, addr, arch) is not None
    code = space.read(addr - _MAX_CALL_LEN, _MAX_CALL_LEN) or space.read(addr - 5, 5)
    return code is not None and _x86_call_length(code) is not None


def _x86_call_length(code: bytes) -> int | None:
    """Length of the call instruction ``code`` ends with, or None: ``E8 rel32``, or ``FF /2``
    with its ModRM/SIB/displacement, the shortest that ends exactly at the end of ``code``.

    Prefixes (REX, CET's ``notrack`` 3E, segment overrides) before the opcode are not counted:
    they do not change where the call ends, and the call decodes the same without them.
    """
    n = len(code)
    if n >= 5 and code[n - 5] == 0xE8:
        return 5
    for length in _FF_CALL_LENGTHS:
        if length > n:
            break
        q = n - length
        if (
            code[q] == 0xFF
            and (code[q + 1] >> 3) & 7 == 2
            and 1 + _modrm_length(code, q + 1) == length
        ):
            return length
    return None


def _modrm_length(code: bytes, m: int) -> int:
    """Bytes from ModRM at ``m`` to the end of the instruction (ModRM, SIB, displacement)."""
    modrm = code[m]
    mod, rm = modrm >> 6, modrm & 7
    length = 1
    if mod == 3:
        return length
    if rm == 4:  # SIB follows; base 5 with mod 0 means disp32 and no base
        length += 1
        if m + 1 < len(code) and mod == 0 and code[m + 1] & 7 == 5:
            length += 4
    if mod == 0 and rm == 5:  # RIP-relative disp32
        length += 4
    elif mod == 1:
        length += 1
    elif mod == 2:
        length += 4
    return length


def x86_code_pointer(space: AddressSpace, addr: int) -> tuple[bool, bool]:
    """(follows a call, is ``__restore_rt``) for an x86-64 code address: the stack scan asks
    both of every distinct address. Same answers as :func:`is_after_call` and
    :func:`is_restore_rt`, from one page lookup when the page is already in (a stack's return
    addresses cluster in a few pages of code)."""
    page = addr & ~(_PAGE - 1)
    lo = addr - page
    if _MAX_CALL_LEN <= lo <= _PAGE - len(RESTORE_RT_X86_64):
        text = space.cached_page(page)
        if text is None:
            # The read is_after_call starts with; it brings a page of program text in whole.
            space.read(addr - _MAX_CALL_LEN, _MAX_CALL_LEN)
            text = space.cached_page(page)
        if text is not None:
            return (
                _x86_call_length(text[lo - _MAX_CALL_LEN : lo]) is not None,
                text[lo : lo + len(RESTORE_RT_X86_64)] == RESTORE_RT_X86_64,
            )
    return is_after_call(space, addr, "x86_64"), is_restore_rt(space, addr)


def is_restore_rt(space: AddressSpace, addr: int) -> bool:
    code = space.read(addr, len(RESTORE_RT_X86_64))
    return code == RESTORE_RT_X86_64


def direct_call_target(space: AddressSpace, ret: int, arch: str) -> int | None:
    """Where the direct call ending at return address ``ret`` goes, or None for an indirect
    call (or no call): ``E8 rel32`` on x86-64, ``BL imm26`` on aarch64. Hand-decoded: the stack
    scan asks this of every candidate caller, from pages already read."""
    if arch == "x86_64":
        code = space.read(ret - 5, 5)
        if code is None or code[0] != 0xE8:
            return None
        return (ret + int.from_bytes(code[1:], "little", signed=True)) & _MASK64
    if arch == "aarch64":
        code = space.read(ret - 4, 4)
        if code is None:
            return None
        word = int.from_bytes(code, "little")
        if word >> 26 != 0b100101:  # BL
            return None
        imm = (word & 0x3FFFFFF) << 2
        if imm & (1 << 27):
            imm -= 1 << 28
        return (ret - 4 + imm) & _MASK64
    return None


# x86-64 PLT entries: `jmp *GOT(%rip)`, after CET's `endbr64` and MPX's `bnd` prefix if any
# (binutils elf_x86_64 lazy, non-lazy and IBT PLTs).
_ENDBR64 = bytes.fromhex("f30f1efa")


def is_stub(space: AddressSpace, addr: int, arch: str) -> bool:
    """Whether ``addr`` starts a linker stub (a PLT entry) that jumps on through a GOT slot."""
    if arch == "x86_64":
        code = space.read(addr, 11)
        if code is None:
            return False
        if code.startswith(_ENDBR64):
            code = code[4:]
        if code[:1] == b"\xf2":
            code = code[1:]
        return code[:2] == b"\xff\x25"
    if arch == "aarch64":
        code = space.read(addr, 4)
        # adrp x16, GOT page: every aarch64 PLT entry starts with it (bfd's elfNN_aarch64).
        return code is not None and int.from_bytes(code, "little") & 0x9F00001F == 0x90000010
    return False
