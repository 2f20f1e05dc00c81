"""Decoders for the notes the kernel (and gdb's gcore, and qemu-user) write into a core.

Layouts are from include/uapi/linux/elfcore.h (``elf_prstatus``, ``elf_prpsinfo``), the kernel's
``fill_note_info`` in fs/binfmt_elf.c (NT_FILE, NT_SIGINFO, NT_AUXV), and
include/uapi/asm-generic/siginfo.h. Every decoder tolerates short data: it returns what it can.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from corecensus.coredump.arch import ArchInfo
from corecensus.coredump.elf import ElfHeader, Note

__all__ = [
    "FileMapping",
    "PrPsInfo",
    "PrStatus",
    "SigInfo",
    "decode_auxv",
    "decode_file_note",
    "decode_prpsinfo",
    "decode_prstatus",
    "decode_siginfo",
]

NT_PRSTATUS = 1
NT_PRPSINFO = 3
NT_AUXV = 6
NT_SIGINFO = 0x53494749
NT_FILE = 0x46494C45
NT_GNU_BUILD_ID = 3

AT_PHDR, AT_ENTRY, AT_PLATFORM, AT_RANDOM, AT_EXECFN, AT_SYSINFO_EHDR = 3, 9, 15, 25, 31, 33

# NT_FILE of a process with 65530 mappings is a few MiB; refuse a count beyond what fits.
MAX_FILE_MAPPINGS = 1 << 20
# Mappings kept from one NT_FILE: Linux's default vm.max_map_count is 65530 (DEFAULT_MAX_MAP_COUNT
# in include/linux/mm.h), so a real process rarely lists more; a hostile note with 1,048,575
# entries once cost 2.0 GB and 49 s (issue 10). The rest are dropped with a note.
MAX_FILE_MAPPINGS_KEPT = 1 << 16


@dataclass(frozen=True, slots=True)
class PrStatus:
    signo: int
    code: int
    cursig: int
    pid: int
    ppid: int
    registers: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PrPsInfo:
    pid: int | None
    fname: str
    psargs: str
    uid: int | None = None


@dataclass(frozen=True, slots=True)
class SigInfo:
    signo: int
    errno: int
    code: int
    addr: int | None
    sender_pid: int | None = None
    addr_lsb: int | None = None


class FileMapping(NamedTuple):
    """One NT_FILE entry (a named tuple: see :class:`~corecensus.coredump.elf.Segment`)."""

    start: int
    end: int
    file_offset: int
    path: str


def _cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("utf-8", "replace")


def decode_prstatus(note: Note, hdr: ElfHeader, arch: ArchInfo | None) -> PrStatus | None:
    d = note.desc
    e = hdr.endian
    if len(d) < 16:
        return None
    signo, code, _errno = struct.unpack_from(e + "iii", d, 0)
    (cursig,) = struct.unpack_from(e + "h", d, 12)
    if arch is not None and arch.pid_offset is not None:
        pid_off = arch.pid_offset
    else:
        pid_off = 32 if (arch.word_size if arch else hdr.word_size) == 8 else 24
    pid = ppid = 0
    if len(d) >= pid_off + 8:
        pid, ppid = struct.unpack_from(e + "ii", d, pid_off)
    regs: dict[str, int] = {}
    if arch is not None:
        # One unpack for the whole register set; a short note yields the registers it holds.
        names, fmt = _register_format(arch, e)
        size = struct.calcsize(fmt)
        if arch.reg_offset + size <= len(d):
            regs = dict(zip(names, struct.unpack_from(fmt, d, arch.reg_offset), strict=True))
        else:
            off = arch.reg_offset
            for name, rsize in arch.registers:
                if off + rsize > len(d):
                    break
                (value,) = struct.unpack_from(e + _WORD_CODES[rsize], d, off)
                if not name.startswith("pad"):
                    regs[name] = value
                off += rsize
    return PrStatus(signo, code, cursig, pid, ppid, regs)


_WORD_CODES = {8: "Q", 4: "I", 2: "H"}


@functools.lru_cache(maxsize=32)
def _register_format(arch: ArchInfo, endian: str) -> tuple[tuple[str, ...], str]:
    """(names, struct format) of the register set; padding slots are skipped bytes (``x``)."""
    names = tuple(n for n, _s in arch.registers if not n.startswith("pad"))
    codes = "".join(f"{s}x" if n.startswith("pad") else _WORD_CODES[s] for n, s in arch.registers)
    return names, endian + codes


def decode_prpsinfo(note: Note, hdr: ElfHeader) -> PrPsInfo | None:
    d = note.desc
    # pr_fname[16] and pr_psargs[80] end the struct on every ABI, so they are found from the end
    # whatever the sizes of the uid/gid fields before them (16-bit on i386 and arm, 32 elsewhere).
    if len(d) < 96 + 16:
        return None
    fname_off = len(d) - 96
    pid: int | None
    (pid,) = struct.unpack_from(hdr.endian + "i", d, fname_off - 16)
    return PrPsInfo(
        pid=pid,
        fname=_cstr(d[fname_off : fname_off + 16]),
        psargs=_cstr(d[fname_off + 16 :]).strip(),
    )


def decode_siginfo(note: Note, hdr: ElfHeader, arch: ArchInfo | None) -> SigInfo | None:
    d = note.desc
    e = hdr.endian
    if len(d) < 12:
        return None
    if arch is not None and arch.swapped_siginfo:
        signo, code, errno = struct.unpack_from(e + "iii", d, 0)
    else:
        signo, errno, code = struct.unpack_from(e + "iii", d, 0)
    word = hdr.word_size if arch is None else arch.word_size
    union = 16 if word == 8 else 12
    addr: int | None = None
    sender: int | None = None
    lsb: int | None = None
    if len(d) >= union + word:
        (addr,) = struct.unpack_from(e + ("Q" if word == 8 else "I"), d, union)
        if len(d) >= union + word + 2:
            (lsb,) = struct.unpack_from(e + "h", d, union + word)
        if code <= 0:  # SI_USER, SI_TKILL, ...: the union holds the sender, not an address
            (sender,) = struct.unpack_from(e + "i", d, union)
            addr = None
    return SigInfo(signo, errno, code, addr, sender, lsb)


def decode_file_note(note: Note, hdr: ElfHeader) -> tuple[list[FileMapping], str | None]:
    """NT_FILE: (mappings, problem). File offsets are converted from pages to bytes."""
    d = note.desc
    w = hdr.word_size
    fmt = hdr.endian + ("Q" if w == 8 else "I")
    if len(d) < 2 * w:
        return [], "NT_FILE note too short"
    (count,) = struct.unpack_from(fmt, d, 0)
    (page_size,) = struct.unpack_from(fmt, d, w)
    table = 2 * w
    if count > MAX_FILE_MAPPINGS or table + count * 3 * w > len(d):
        return [], f"NT_FILE claims {count} mappings, more than its {len(d)} bytes hold"
    kept = min(count, MAX_FILE_MAPPINGS_KEPT)
    names = d[table + count * 3 * w :].split(b"\0", kept)[:kept]
    names.extend([b"?"] * (kept - len(names)))
    entries = struct.iter_unpack(
        hdr.endian + ("QQQ" if w == 8 else "III"), d[table : table + kept * 3 * w]
    )
    out = [
        FileMapping(start, end, pgoff * page_size, name.decode("utf-8", "replace"))
        for (start, end, pgoff), name in zip(entries, names, strict=True)
    ]
    if kept < count:
        return out, f"NT_FILE lists {count} mappings; kept the first {kept}"
    return out, None


def decode_auxv(note: Note, hdr: ElfHeader) -> dict[int, int]:
    d = note.desc
    w = hdr.word_size
    fmt = hdr.endian + ("QQ" if w == 8 else "II")
    out: dict[int, int] = {}
    for key, val in struct.iter_unpack(fmt, d[: len(d) - len(d) % (2 * w)]):
        if key == 0:
            break
        out.setdefault(key, val)
    return out
