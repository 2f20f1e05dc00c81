"""Loaded objects from the dynamic linker's ``r_debug`` list, for cores without NT_FILE.

gdb's gcore (older versions) and qemu-user write no NT_FILE note, so the mapped files are found
the way a debugger finds them: AT_PHDR in the auxiliary vector locates the executable's program
headers in memory, its PT_DYNAMIC holds DT_DEBUG, which points at ``struct r_debug`` whose
``r_map`` heads the ``struct link_map`` list (glibc elf/link.h: l_addr, l_name, l_ld, l_next).
A static executable has no such list; then only the executable itself is reported.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

from corecensus.coredump.elf import Segment
from corecensus.coredump.memory import AddressSpace
from corecensus.coredump.notes import AT_EXECFN, AT_PHDR, FileMapping

AT_PHNUM = 5

__all__ = ["mapped_files"]

PT_LOAD, PT_DYNAMIC, PT_PHDR = 1, 2, 6
DT_NULL, DT_DEBUG = 0, 21
MAX_LINK_MAP = 4096  # entries; a cycle in a corrupt list stops here
MAX_PHNUM = 256


def mapped_files(
    space: AddressSpace,
    auxv: dict[int, int],
    segments: list[Segment],
    exe_file: Callable[[str], Path | None] | None = None,
) -> list[FileMapping]:
    """Mapped files from the link map; ``exe_file`` finds a local copy of the executable by
    name when its program headers are not in the core (qemu-user dumps no file-backed pages)."""
    phdr = auxv.get(AT_PHDR)
    if not phdr:
        return []
    w = space.hdr.word_size
    e = space.hdr.endian
    exe_name = (space.read_cstring(auxv[AT_EXECFN]) if auxv.get(AT_EXECFN) else None) or "<exe>"
    # The executable's program headers: find their count from the segment that holds them.
    entsize = 56 if w == 8 else 32
    phdrs: list[tuple[int, int, int, int]] = []  # type, offset, vaddr, memsz
    in_core = space.read(phdr, entsize) is not None
    local = None if in_core or exe_file is None else exe_file(exe_name)
    file_table = _file_phdr_table(local) if local is not None else None
    for i in range(min(auxv.get(AT_PHNUM, MAX_PHNUM), MAX_PHNUM)):
        if file_table is not None:
            raw = file_table[i * entsize : (i + 1) * entsize] or None
        else:
            raw = space.read(phdr + i * entsize, entsize)
        if raw is None or len(raw) < entsize:
            break
        if w == 8:
            ptype, _f, off, vaddr, _pa, _fs, memsz, _al = struct.unpack(e + "IIQQQQQQ", raw)
        else:
            ptype, off, vaddr, _pa, _fs, memsz, _f, _al = struct.unpack(e + "IIIIIIII", raw)
        phdrs.append((ptype, off, vaddr, memsz))
    bias = 0
    for ptype, _off, vaddr, _m in phdrs:
        if ptype == PT_PHDR:
            bias = phdr - vaddr
            break
    else:
        first = next((p for p in phdrs if p[0] == PT_LOAD and p[1] == 0), None)
        if first is not None:
            # No PT_PHDR: the headers follow the ELF header at the start of the first segment.
            bias = phdr - (first[2] + (64 if w == 8 else 52))
    out: list[FileMapping] = []
    for ptype, off, vaddr, memsz in phdrs:
        if ptype == PT_LOAD:
            out.append(FileMapping(vaddr + bias, vaddr + bias + memsz, off & ~0xFFF, exe_name))
    dyn = next((p for p in phdrs if p[0] == PT_DYNAMIC), None)
    if dyn is None:
        return out
    r_debug = None
    addr = dyn[2] + bias
    for _ in range(512):
        pair = space.read(addr, 2 * w)
        if pair is None:
            break
        tag, val = struct.unpack(e + ("qQ" if w == 8 else "iI"), pair)
        if tag == DT_NULL:
            break
        if tag == DT_DEBUG:
            r_debug = val
            break
        addr += 2 * w
    if not r_debug:
        return out
    # struct r_debug { int r_version; struct link_map *r_map; ... }
    r_map = space.read_word(r_debug + w)
    seen: set[int] = set()
    node = r_map
    while node and node not in seen and len(seen) < MAX_LINK_MAP:
        seen.add(node)
        raw = space.read(node, 5 * w)
        if raw is None:
            break
        l_addr, l_name, _l_ld, l_next, _l_prev = struct.unpack(
            e + ("QQQQQ" if w == 8 else "IIIII"), raw
        )
        name = space.read_cstring(l_name) if l_name else None
        if name:
            out.extend(_object_mappings(space, l_addr, name))
        node = l_next
    return out


def _file_phdr_table(path: Path) -> bytes | None:
    """The program header table of an ELF file on disk (the same bytes the loader mapped)."""
    try:
        with open(path, "rb") as fh:
            ident = fh.read(64)
            if len(ident) < 52 or not ident.startswith(b"\x7fELF"):
                return None
            e = "<" if ident[5] == 1 else ">"
            if ident[4] == 2:
                (phoff,) = struct.unpack_from(e + "Q", ident, 32)
                phentsize, phnum = struct.unpack_from(e + "HH", ident, 54)
            else:
                (phoff,) = struct.unpack_from(e + "I", ident, 28)
                phentsize, phnum = struct.unpack_from(e + "HH", ident, 42)
            fh.seek(phoff)
            return fh.read(phentsize * min(phnum, MAX_PHNUM))
    except OSError:
        return None


def _object_mappings(space: AddressSpace, l_addr: int, name: str) -> list[FileMapping]:
    """PT_LOAD ranges of a shared object loaded at bias ``l_addr`` (from its in-memory header)."""
    e = space.hdr.endian
    w = space.hdr.word_size
    # The first PT_LOAD of a shared object usually has vaddr 0, so its header is at l_addr.
    ident = space.read(l_addr, 64)
    if ident is None or not ident.startswith(b"\x7fELF"):
        return [FileMapping(l_addr, l_addr + 4096, 0, name)]
    if w == 8:
        (phoff,) = struct.unpack_from(e + "Q", ident, 32)
        (phnum,) = struct.unpack_from(e + "H", ident, 56)
    else:
        (phoff,) = struct.unpack_from(e + "I", ident, 28)
        (phnum,) = struct.unpack_from(e + "H", ident, 44)
    entsize = 56 if w == 8 else 32
    table = space.read(l_addr + phoff, entsize * min(phnum, MAX_PHNUM))
    out: list[FileMapping] = []
    if table is None:
        return [FileMapping(l_addr, l_addr + 4096, 0, name)]
    for i in range(len(table) // entsize):
        if w == 8:
            ptype, _f, off, vaddr, _pa, _fs, memsz, _al = struct.unpack_from(
                e + "IIQQQQQQ", table, i * entsize
            )
        else:
            ptype, off, vaddr, _pa, _fs, memsz, _f, _al = struct.unpack_from(
                e + "IIIIIIII", table, i * entsize
            )
        if ptype == PT_LOAD:
            start = (l_addr + vaddr) & ~0xFFF
            out.append(FileMapping(start, l_addr + vaddr + memsz, off & ~0xFFF, name))
    return out or [FileMapping(l_addr, l_addr + 4096, 0, name)]
