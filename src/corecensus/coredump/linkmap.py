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

from corecensus.coredump.elf import ImageHeader, Segment, read_image_headers, unpack_image_headers
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
    headers = _exe_headers(space, auxv, phdr, exe_file(exe_name) if exe_file else None)
    bias = 0
    pt_phdr = next((h for h in headers if h.type == PT_PHDR), None)
    if pt_phdr is not None:
        bias = phdr - pt_phdr.vaddr
    else:
        first = next((h for h in headers if h.type == PT_LOAD and h.offset == 0), None)
        if first is not None:
            # No PT_PHDR: the headers follow the ELF header at the start of the first segment.
            bias = phdr - (first.vaddr + (64 if w == 8 else 52))
    out = [
        FileMapping(h.vaddr + bias, h.vaddr + bias + h.memsz, h.offset & ~0xFFF, exe_name)
        for h in headers
        if h.type == PT_LOAD
    ]
    dyn = next((h for h in headers if h.type == PT_DYNAMIC), None)
    if dyn is None:
        return out
    r_debug = None
    addr = dyn.vaddr + bias
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


def _exe_headers(
    space: AddressSpace, auxv: dict[int, int], phdr: int, local: Path | None
) -> tuple[ImageHeader, ...]:
    """The executable's program headers: from memory at AT_PHDR (AT_PHNUM of them), or from a
    local copy of the file when the core does not hold them."""
    is_64 = space.hdr.is_64
    entsize = 56 if is_64 else 32
    count = min(auxv.get(AT_PHNUM, MAX_PHNUM), MAX_PHNUM)
    table = space.read(phdr, entsize * count)
    if table is not None:
        return unpack_image_headers(table, space.hdr.endian, is_64)
    if local is None:
        return ()
    try:
        with open(local, "rb") as fh:

            def read(offset: int, size: int) -> bytes | None:
                fh.seek(offset)
                return fh.read(size)

            image = read_image_headers(read)
    except OSError:
        return ()
    return image.headers if image else ()


def _object_mappings(space: AddressSpace, l_addr: int, name: str) -> list[FileMapping]:
    """PT_LOAD ranges of a shared object loaded at bias ``l_addr`` (from its in-memory header:
    the first PT_LOAD of a shared object has vaddr 0, so its ELF header is at ``l_addr``)."""
    image = read_image_headers(space.read, l_addr)
    out = [
        FileMapping(
            (l_addr + h.vaddr) & ~0xFFF, l_addr + h.vaddr + h.memsz, h.offset & ~0xFFF, name
        )
        for h in (image.headers if image else ())
        if h.type == PT_LOAD
    ]
    return out or [FileMapping(l_addr, l_addr + 4096, 0, name)]
