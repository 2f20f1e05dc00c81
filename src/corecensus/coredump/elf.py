"""The ELF container of a core: header, program headers and notes, read with hard limits.

This is the fast path the design allows ("a small fast path may read ELF notes directly where
measurement shows it beats the library"): bench/core_bench.py compares it with drgn and eu-stack.
Every count and size read from the file is bounded before it is used, so a hostile core (absurd
note sizes, ``e_phnum`` in the millions, overlapping or repeated segments) costs bounded time and
memory and ends in a :class:`~corecensus.errors.CoreError` or a ``partial`` record.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from corecensus.coredump.source import CoreSource
from corecensus.errors import CoreLimitError, KernelDumpError, NotACoreError
from corecensus.model import Problem, ProblemKind

__all__ = [
    "ElfHeader",
    "ElfImage",
    "ImageHeader",
    "Note",
    "Segment",
    "iter_image_headers",
    "read_header",
    "read_image_headers",
    "read_image_table",
    "read_notes",
    "read_segments",
    "unpack_image_headers",
]

ET_CORE = 4
PT_LOAD = 1
PT_DYNAMIC = 2
PT_NOTE = 4
PF_X, PF_W, PF_R = 1, 2, 4
PN_XNUM = 0xFFFF

# Limits: a real core of a huge process has tens of thousands of mappings at most
# (vm.max_map_count defaults to 65530); notes of a 10,000-thread process stay well under 64 MiB.
MAX_SEGMENTS = 1 << 18
MAX_NOTES_BYTES = 64 << 20
MAX_NOTE_COUNT = 1 << 20

# e_machine values (elf.h) -> corecensus architecture names.
EM_NAMES: dict[int, str] = {
    2: "sparc",
    3: "i386",
    4: "m68k",
    8: "mips",
    20: "ppc",
    21: "ppc64",
    22: "s390",
    40: "arm",
    43: "sparc64",
    62: "x86_64",
    183: "aarch64",
    243: "riscv64",
    258: "loongarch64",
}


@dataclass(frozen=True, slots=True)
class ElfHeader:
    is_64: bool
    little_endian: bool
    machine: int
    elf_type: int
    phoff: int
    phentsize: int
    phnum: int
    shoff: int
    flags: int

    @property
    def endian(self) -> str:
        return "<" if self.little_endian else ">"

    @property
    def word(self) -> str:
        return "Q" if self.is_64 else "I"

    @property
    def word_size(self) -> int:
        return 8 if self.is_64 else 4


class Segment(NamedTuple):
    """A PT_LOAD segment: one mapping of the crashed process.

    An immutable named tuple rather than a frozen dataclass: every core has dozens, and a
    frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field) costs three times
    as much to build, on the register pass's path.
    """

    vaddr: int
    memsz: int
    offset: int
    filesz: int
    flags: int

    @property
    def end(self) -> int:
        return self.vaddr + self.memsz

    @property
    def executable(self) -> bool:
        return bool(self.flags & PF_X)

    @property
    def writable(self) -> bool:
        return bool(self.flags & PF_W)

    @property
    def readable(self) -> bool:
        return bool(self.flags & PF_R)


class Note(NamedTuple):
    """One ELF note (a named tuple for the same reason as :class:`Segment`)."""

    name: bytes
    type: int
    desc: bytes


def read_header(src: CoreSource) -> ElfHeader:
    """Parse and validate the ELF header; raise for anything that is not a user-space core."""
    ident = src.pread(0, 64)
    if len(ident) == 0:
        raise NotACoreError("empty file (zero bytes)", src.name)
    if ident.startswith((b"KDUMP   ", b"DISKDUMP")):
        raise KernelDumpError(
            "this is a kernel crash dump (makedumpfile/diskdump format); corecensus reads "
            "user-space core dumps only — use crash(8) or drgn for vmcores",
            src.name,
        )
    if not ident.startswith(b"\x7fELF"):
        raise NotACoreError(f"not an ELF file (magic {ident[:4]!r})", src.name)
    if len(ident) < 52:
        raise NotACoreError(f"ELF header truncated ({len(ident)} bytes)", src.name)
    ei_class, ei_data = ident[4], ident[5]
    if ei_class not in (1, 2) or ei_data not in (1, 2):
        raise NotACoreError(f"bad ELF class/data bytes {ei_class}/{ei_data}", src.name)
    is_64 = ei_class == 2
    e = "<" if ei_data == 1 else ">"
    if is_64:
        if len(ident) < 64:
            raise NotACoreError("ELF header truncated", src.name)
        (etype, machine, _v, _entry, phoff, shoff, flags, _eh, phentsize, phnum) = (
            struct.unpack_from(e + "HHIQQQIHHH", ident, 16)
        )
    else:
        (etype, machine, _v, _entry, phoff, shoff, flags, _eh, phentsize, phnum) = (
            struct.unpack_from(e + "HHIIIIIHHH", ident, 16)
        )
    if etype != ET_CORE:
        kind = {1: "relocatable object", 2: "executable", 3: "shared object"}.get(etype, "ELF file")
        raise NotACoreError(f"ELF type {etype} ({kind}), not a core dump", src.name)
    want = 56 if is_64 else 32
    if phentsize != want:
        raise NotACoreError(f"program header size {phentsize}, expected {want}", src.name)
    hdr = ElfHeader(is_64, ei_data == 1, machine, etype, phoff, phentsize, phnum, shoff, flags)
    if phnum == PN_XNUM:
        # More than 65534 segments: the real count is in section header 0's sh_info (elf(5)).
        hdr = _extended_phnum(src, hdr)
    if hdr.phnum > MAX_SEGMENTS:
        raise CoreLimitError(
            f"{hdr.phnum} program headers exceeds the limit {MAX_SEGMENTS}", src.name
        )
    return hdr


def _extended_phnum(src: CoreSource, hdr: ElfHeader) -> ElfHeader:
    size = 64 if hdr.is_64 else 40
    sh = src.pread(hdr.shoff, size)
    if len(sh) < size:
        raise NotACoreError("e_phnum is PN_XNUM but section header 0 is missing", src.name)
    info_off = 44 if hdr.is_64 else 28
    (real,) = struct.unpack_from(hdr.endian + "I", sh, info_off)
    return ElfHeader(
        hdr.is_64, hdr.little_endian, hdr.machine, hdr.elf_type, hdr.phoff, hdr.phentsize, real,
        hdr.shoff, hdr.flags,
    )  # fmt: skip


def read_segments(src: CoreSource, hdr: ElfHeader) -> tuple[list[Segment], list[Segment], bool]:
    """(PT_LOAD segments sorted by address, PT_NOTE segments, complete?)."""
    raw = src.pread(hdr.phoff, hdr.phnum * hdr.phentsize)
    complete = len(raw) == hdr.phnum * hdr.phentsize
    loads: list[Segment] = []
    notes: list[Segment] = []
    whole = raw[: len(raw) - len(raw) % hdr.phentsize]
    # Elf64_Phdr keeps p_flags second, Elf32_Phdr seventh (System V gABI, "Program Header")
    rows = struct.iter_unpack(hdr.endian + ("IIQQQQQQ" if hdr.is_64 else "IIIIIIII"), whole)
    entries = (
        ((t, o, v, fs, ms, fl) for t, fl, o, v, _pa, fs, ms, _al in rows)
        if hdr.is_64
        else ((t, o, v, fs, ms, fl) for t, o, v, _pa, fs, ms, fl, _al in rows)
    )
    for ptype, offset, vaddr, filesz, memsz, flags in entries:
        if ptype == PT_LOAD:
            loads.append(Segment(vaddr, memsz, offset, filesz, flags))
        elif ptype == PT_NOTE:
            notes.append(Segment(vaddr, memsz, offset, filesz, flags))
    loads.sort(key=lambda s: s.vaddr)
    return loads, notes, complete


def read_notes(
    src: CoreSource, hdr: ElfHeader, note_segments: list[Segment]
) -> tuple[list[Note], list[Problem]]:
    """All notes of all PT_NOTE segments, with the problems met on the way."""
    problems: list[Problem] = []
    notes: list[Note] = []
    seen: set[tuple[int, int]] = set()
    total = 0
    for seg in note_segments:
        key = (seg.offset, seg.filesz)
        if key in seen:  # the same segment listed twice is read once (a "loop" in the headers)
            problems.append(
                Problem(
                    ProblemKind.NOTE_MALFORMED,
                    f"duplicate PT_NOTE at offset {seg.offset:#x} ignored",
                )
            )
            continue
        seen.add(key)
        if seg.filesz > MAX_NOTES_BYTES or total + seg.filesz > MAX_NOTES_BYTES:
            problems.append(
                Problem(
                    ProblemKind.CAPPED,
                    f"PT_NOTE of {seg.filesz} bytes exceeds the {MAX_NOTES_BYTES >> 20} MiB note "
                    "limit; read up to the limit",
                )
            )
        size = min(seg.filesz, MAX_NOTES_BYTES - total)
        if size <= 0:
            continue
        data = src.pread(seg.offset, size)
        total += len(data)
        if len(data) < seg.filesz:
            problems.append(
                Problem(
                    ProblemKind.TRUNCATED,
                    f"notes truncated: {len(data)} of {seg.filesz} bytes present (core cut short?)",
                )
            )
        for note in _iter_notes(data, hdr.endian, problems):
            notes.append(note)
            if len(notes) >= MAX_NOTE_COUNT:
                problems.append(
                    Problem(ProblemKind.CAPPED, f"more than {MAX_NOTE_COUNT} notes; rest ignored")
                )
                return notes, problems
    return notes, problems


def _iter_notes(data: bytes, e: str, problems: list[Problem]) -> Iterator[Note]:
    pos = 0
    n = len(data)
    while pos + 12 <= n:
        namesz, descsz, ntype = struct.unpack_from(e + "III", data, pos)
        name_start = pos + 12
        desc_start = name_start + ((namesz + 3) & ~3)
        desc_end = desc_start + descsz
        if desc_end > n:
            if desc_start < n or namesz > n:
                problems.append(
                    Problem(
                        ProblemKind.TRUNCATED,
                        f"note at +{pos:#x} claims {descsz} bytes of data, only "
                        f"{n - min(n, desc_start)} present; stopped reading notes",
                    )
                )
            break
        name = data[name_start : name_start + namesz].rstrip(b"\0")
        yield Note(name, ntype, data[desc_start:desc_end])
        pos = (desc_end + 3) & ~3


@dataclass(frozen=True, slots=True)
class ImageHeader:
    """A program header of a loaded ELF image (an executable or library, not the core)."""

    type: int
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int


@dataclass(frozen=True, slots=True)
class ElfImage:
    endian: str
    is_64: bool
    headers: tuple[ImageHeader, ...]


# An executable or library has a dozen program headers; more is a corrupt image.
MAX_IMAGE_HEADERS = 256


def read_image_headers(read: Callable[[int, int], bytes | None], base: int = 0) -> ElfImage | None:
    """Program headers of the ELF image whose file offset ``o`` reads as ``read(base + o, n)``
    (a file on disk with base 0, or an image in the crashed process's memory); None if the
    bytes are not an ELF header with a sane program header table."""
    found = read_image_table(read, base)
    if found is None:
        return None
    endian, is_64, table = found
    return ElfImage(endian, is_64, unpack_image_headers(table, endian, is_64))


def read_image_table(
    read: Callable[[int, int], bytes | None], base: int = 0
) -> tuple[str, bool, bytes] | None:
    """(endian, is_64, raw program header table) of an ELF image, as :func:`read_image_headers`
    finds it, for callers that scan the table without building :class:`ImageHeader` records."""
    ident = read(base, 64)
    if ident is None or len(ident) < 52 or not ident.startswith(b"\x7fELF"):
        return None
    is_64 = ident[4] == 2
    e = "<" if ident[5] == 1 else ">"
    if is_64:
        (phoff,) = struct.unpack_from(e + "Q", ident, 32)
        phentsize, phnum = struct.unpack_from(e + "HH", ident, 54)
    else:
        (phoff,) = struct.unpack_from(e + "I", ident, 28)
        phentsize, phnum = struct.unpack_from(e + "HH", ident, 42)
    if phentsize != (56 if is_64 else 32) or not 0 < phnum <= MAX_IMAGE_HEADERS:
        return None
    table = read(base + phoff, phentsize * phnum)
    if table is None:
        return None
    return e, is_64, table


def iter_image_headers(
    table: bytes, endian: str, is_64: bool
) -> Iterator[tuple[int, int, int, int, int, int]]:
    """(type, flags, offset, vaddr, filesz, memsz) of each entry of a program header table."""
    size = 56 if is_64 else 32
    whole = table[: len(table) - len(table) % size]
    if is_64:
        for ptype, flags, off, vaddr, _pa, filesz, memsz, _al in struct.iter_unpack(
            endian + "IIQQQQQQ", whole
        ):
            yield ptype, flags, off, vaddr, filesz, memsz
    else:
        for ptype, off, vaddr, _pa, filesz, memsz, flags, _al in struct.iter_unpack(
            endian + "IIIIIIII", whole
        ):
            yield ptype, flags, off, vaddr, filesz, memsz


def unpack_image_headers(table: bytes, endian: str, is_64: bool) -> tuple[ImageHeader, ...]:
    """Decode a program header table (Elf64_Phdr or Elf32_Phdr entries)."""
    return tuple(ImageHeader(*h) for h in iter_image_headers(table, endian, is_64))
