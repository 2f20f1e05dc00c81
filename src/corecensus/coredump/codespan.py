"""How many instructions a set of interrupted pcs spans, measured in the binary on disk.

A signal race's window is the instructions in which a signal does the damage. Its cores record
where each signal landed (the interrupted pc, as an offset in its module); the window is at
least the instructions from the lowest such offset to the highest. Counting them needs the code
itself: x86 instructions are 1 to 15 bytes long, so a byte span says little. The binary is read
only when it is really the one the cores ran (same build-id, or no build-id to compare), and the
decode starts at the lowest interrupted pc, which is an instruction boundary because the CPU
was about to execute it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from corecensus.coredump.binaries import BinaryResolver
from corecensus.coredump.elf import read_image_headers

__all__ = ["MAX_SPAN_BYTES", "instruction_span"]

# A window is a few instructions; past this many bytes the offsets are not one window.
MAX_SPAN_BYTES = 4096
_PT_LOAD = 1
# capstone decodes x86-64 and aarch64 here (coredump.instruction); other arches are not measured.
_ARCHES = {"x86_64": ("x86_64", 15), "aarch64": ("aarch64", 4)}


Reader = Callable[[int, int], bytes | None]


def _reader(fd: int) -> Reader:
    def read(off: int, n: int) -> bytes | None:
        try:
            data = os.pread(fd, n, off)
        except (OSError, OverflowError):
            return None
        return data if len(data) == n else None

    return read


def instruction_span(
    path: str,
    build_id: str | None,
    module_offsets: Iterable[int],
    arch: str,
    *,
    binaries: Iterable[Path] = (),
) -> int | None:
    """The number of instructions from the lowest to the highest of ``module_offsets``
    (offsets from the module's base as :class:`~corecensus.model.MappedFile` defines it: the
    address where file offset 0 is mapped), both included; None when the file is not here (or
    not the one the core ran), the arch is not decoded, an offset is not an instruction
    boundary of the decode, or the span exceeds :data:`MAX_SPAN_BYTES`."""
    offsets = sorted(set(module_offsets))
    if not offsets or arch not in _ARCHES:
        return None
    low, high = offsets[0], offsets[-1]
    cs_arch, max_len = _ARCHES[arch]
    if high - low > MAX_SPAN_BYTES:
        return None
    resolver = BinaryResolver(binaries)
    local = resolver.local_file(path, build_id)
    if local is None:
        return None
    try:
        fd = os.open(local, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        read = _reader(fd)
        code = _code_at(read, low, high - low + max_len)
    finally:
        os.close(fd)
    if code is None:
        return None
    return _count(code, low, set(offsets), high, cs_arch)


def _code_at(read: Reader, module_offset: int, size: int) -> bytes | None:
    """``size`` bytes of the file at ``module_offset`` (module base = where file offset 0 is
    mapped, so a module offset is a file offset wherever the segment's file offset and address
    advance together, as in every PT_LOAD), cut at the end of the segment that holds it."""
    image = read_image_headers(read)
    if image is None:
        return None
    loads = [h for h in image.headers if h.type == _PT_LOAD]
    if not loads:
        return None
    first = min(loads, key=lambda h: h.offset)
    # Module offset -> link-time address: the first mapping starts at the first PT_LOAD's
    # page-aligned address and file offset (the kernel maps whole pages).
    page = 4096
    vaddr = module_offset + (first.vaddr & ~(page - 1)) - (first.offset & ~(page - 1))
    for h in loads:
        if h.vaddr <= vaddr < h.vaddr + h.filesz:
            file_off = vaddr - h.vaddr + h.offset
            size = min(size, h.vaddr + h.filesz - vaddr)
            return read(file_off, size)
    return None


def _count(code: bytes, low: int, wanted: set[int], high: int, arch: str) -> int | None:
    # capstone lives behind coredump.instruction; imported here, not at module import, so the
    # paths that never measure a window never load it.
    from corecensus.coredump.instruction import disassemble

    seen = 0
    hit: set[int] = set()
    for address, _size in disassemble(code, low, arch):
        if address > high:
            break
        seen += 1
        hit.add(address)
    return seen if wanted <= hit else None
