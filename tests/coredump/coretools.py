"""Independent struct-level helpers for tests that edit real cores (no corecensus code here)."""

from __future__ import annotations

import struct
from dataclasses import dataclass


@dataclass
class NoteLoc:
    name: bytes
    type: int
    header_offset: int  # file offset of (namesz, descsz, type)
    desc_offset: int
    descsz: int


def phdrs(data: bytes) -> list[tuple[int, int, int, int, int, int, int]]:
    """(index offset, p_type, p_flags, p_offset, p_vaddr, p_filesz, p_memsz) of a 64-bit LE core."""
    (phoff,) = struct.unpack_from("<Q", data, 32)
    (phentsize, phnum) = struct.unpack_from("<HH", data, 54)
    out = []
    for i in range(phnum):
        off = phoff + i * phentsize
        ptype, flags, poff, vaddr, _pa, filesz, memsz, _al = struct.unpack_from(
            "<IIQQQQQQ", data, off
        )
        out.append((off, ptype, flags, poff, vaddr, filesz, memsz))
    return out


def notes(data: bytes) -> list[NoteLoc]:
    out = []
    for _i, ptype, _f, poff, _v, filesz, _m in phdrs(data):
        if ptype != 4:
            continue
        pos = poff
        while pos + 12 <= poff + filesz:
            namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
            name = data[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
            desc = pos + 12 + ((namesz + 3) & ~3)
            out.append(NoteLoc(name, ntype, pos, desc, descsz))
            pos = (desc + descsz + 3) & ~3
    return out


NT_SIGINFO = 0x53494749


def patch_siginfo(data: bytearray, *, code: int | None = None, addr: int | None = None) -> None:
    """Rewrite si_code and/or si_addr of the core's NT_SIGINFO (x86-64 siginfo_t layout)."""
    loc = next(n for n in notes(bytes(data)) if n.type == NT_SIGINFO)
    if code is not None:
        struct.pack_into("<i", data, loc.desc_offset + 8, code)
    if addr is not None:
        struct.pack_into("<Q", data, loc.desc_offset + 16, addr)


def file_offset(data: bytes, vaddr: int) -> int:
    """File offset of virtual address ``vaddr`` in a 64-bit LE core's dumped PT_LOAD segments."""
    for _i, ptype, _f, poff, start, filesz, _m in phdrs(data):
        if ptype == 1 and start <= vaddr < start + filesz:
            return poff + vaddr - start
    raise LookupError(f"{vaddr:#x} is not dumped in this core")
