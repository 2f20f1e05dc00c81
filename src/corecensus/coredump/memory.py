"""The crashed process's address space as the core describes it.

Two kinds of bytes: those the kernel dumped into the core (anonymous memory such as stacks and
heap, and the first page of each mapped ELF file, per ``coredump_filter``'s default 0x33), and
those of file-backed mappings it left out (program text), which are read from the mapped file when
a matching copy (same build-id) is on this machine or in ``--binaries``.
"""

from __future__ import annotations

import bisect
import operator
import struct
from collections.abc import Callable

from corecensus.coredump.elf import ElfHeader, Segment
from corecensus.coredump.notes import FileMapping
from corecensus.coredump.source import CoreSource
from corecensus.coredump.words import WordWindow
from corecensus.errors import CoreError

__all__ = ["AddressSpace"]

# Bytes per read from the core when caching around a request.
_PAGE = 4096

FileReader = Callable[[FileMapping, int, int], bytes | None]


class AddressSpace:
    """Reads virtual memory of the crashed process, bounded and cached per page."""

    def __init__(
        self,
        src: CoreSource,
        hdr: ElfHeader,
        segments: list[Segment],
        files: list[FileMapping],
        file_reader: FileReader | None = None,
    ) -> None:
        self._src = src
        self.hdr = hdr
        self.segments = segments
        self._starts = [s.vaddr for s in segments]
        self.set_files(files)
        self._file_reader = file_reader
        self._cache: dict[int, bytes] = {}
        # Pages wholly inside one dumped segment, for reads within a page that skip the segment
        # lookup. Only when no two segments overlap (a hostile core's may), so that the page's
        # segment is the one any address in it resolves to.
        ends = [s.end for s in segments]
        self._whole: dict[int, bytes] | None = (
            {} if all(map(operator.le, ends, self._starts[1:])) else None
        )
        self._file_pages: dict[int, bytes] = {}
        self._exec_ranges: tuple[list[int], list[int]] | None = None
        self.truncated = False
        self.problems: list[str] = []

    def set_files(self, files: list[FileMapping]) -> None:
        """Replace the mapped-file list (for cores whose files come from the link map)."""
        self.files = sorted(files, key=lambda f: f.start)
        self._file_starts = [f.start for f in self.files]

    # -- mappings -------------------------------------------------------------------------------
    def segment_at(self, addr: int) -> Segment | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0:
            seg = self.segments[i]
            if seg.vaddr <= addr < seg.end:
                return seg
        return None

    def segment_above(self, addr: int) -> Segment | None:
        """The lowest mapping that starts above ``addr`` (the stack a guard-gap fault belongs to)."""
        i = bisect.bisect_right(self._starts, addr)
        return self.segments[i] if i < len(self.segments) else None

    def file_at(self, addr: int) -> FileMapping | None:
        i = bisect.bisect_right(self._file_starts, addr) - 1
        if i >= 0:
            f = self.files[i]
            if f.start <= addr < f.end:
                return f
        return None

    def executable_ranges(self) -> tuple[list[int], list[int]]:
        """(starts, lasts) of the executable mappings in address order: ``lasts`` is the last
        address inside each (end - 1; a hostile core's end may lie past 2**64, which no word
        holds, and an empty mapping at 0 gets 0, which no code pointer is)."""
        if self._exec_ranges is None:
            ex = [s for s in self.segments if s.executable]
            self._exec_ranges = (
                [s.vaddr for s in ex],
                [max(min(s.end, 1 << 64) - 1, 0) for s in ex],
            )
        return self._exec_ranges

    def is_mapped(self, addr: int) -> bool:
        return self.segment_at(addr) is not None

    def is_executable(self, addr: int) -> bool:
        seg = self.segment_at(addr)
        return seg is not None and seg.executable

    def is_stack_like(self, addr: int) -> bool:
        """Inside a readable, writable, non-executable anonymous mapping (where stacks live)."""
        seg = self.segment_at(addr)
        return (
            seg is not None
            and seg.readable
            and seg.writable
            and not seg.executable
            and self.file_at(addr) is None
        )

    # -- reading --------------------------------------------------------------------------------
    def _core_page(self, seg: Segment, page: int) -> bytes:
        cached = self._cache.get(page)
        if cached is not None:
            return cached
        start = max(page, seg.vaddr)
        end = min(page + _PAGE, seg.vaddr + seg.filesz)
        if end <= start:
            return b""
        try:
            data = self._src.pread(seg.offset + (start - seg.vaddr), end - start)
        except CoreError as exc:
            # A stream that turns corrupt, or a read past the decompression limit: this memory
            # is missing, the rest of the parse goes on.
            if str(exc) not in self.problems:
                self.problems.append(str(exc))
            data = b""
        if len(data) < end - start:
            self.truncated = True
        self._cache[page] = data
        if (
            self._whole is not None
            and start == page
            and len(data) == _PAGE
            and page + _PAGE <= seg.end
        ):
            self._whole[page] = data
        return data

    def read_dumped(self, addr: int, size: int) -> bytes | None:
        """Bytes at addr that are in the core, or None if any of them is not."""
        page = addr & ~(_PAGE - 1)
        if self._whole is not None and size > 0 and addr + size <= page + _PAGE:
            whole = self._whole.get(page)
            if whole is not None:
                lo = addr - page
                return whole[lo : lo + size]
        out = bytearray()
        while size > 0:
            seg = self.segment_at(addr)
            if seg is None or addr >= seg.vaddr + seg.filesz:
                return None
            page = addr & ~(_PAGE - 1)
            data = self._core_page(seg, page)
            base = max(page, seg.vaddr)
            lo = addr - base
            take = min(size, len(data) - lo)
            if take <= 0:
                return None
            out += data[lo : lo + take]
            addr += take
            size -= take
        return bytes(out)

    def cached_page(self, page: int) -> bytes | None:
        """The 4 KiB at ``page`` (page-aligned) if a read has already brought them in whole, as
        :meth:`read` serves reads within that page; None otherwise."""
        text = self._file_pages.get(page)
        if text is None and self._whole is not None:
            text = self._whole.get(page)
        return text

    def read(self, addr: int, size: int) -> bytes | None:
        """``size`` bytes at ``addr`` from the core, else from the mapped file; None if neither."""
        if addr < 0 or size <= 0:
            return None
        page = addr & ~(_PAGE - 1)
        if addr + size <= page + _PAGE:
            # Program text read in small pieces (call sites, trampolines) comes from a few pages;
            # keep each file page once instead of resolving the file on every read.
            text = self._file_pages.get(page)
            if text is not None:
                lo = addr - page
                return text[lo : lo + size] if lo + size <= len(text) else None
            if self._whole is not None:
                text = self._whole.get(page)
                if text is not None:
                    lo = addr - page
                    return text[lo : lo + size]
        seg = self.segment_at(addr)
        if seg is not None and addr < seg.vaddr + seg.filesz:  # else not dumped (program text)
            data = self.read_dumped(addr, size)
            if data is not None:
                return data
        f = self.file_at(addr)
        if f is None or self._file_reader is None or addr + size > f.end:
            return None
        if addr + size <= page + _PAGE and page >= f.start and page + _PAGE <= f.end:
            whole = self._file_reader(f, page - f.start + f.file_offset, _PAGE)
            if whole is not None and len(whole) == _PAGE:
                self._file_pages[page] = whole
                lo = addr - page
                return whole[lo : lo + size]
        return self._file_reader(f, addr - f.start + f.file_offset, size)

    def read_word(self, addr: int) -> int | None:
        w = self.hdr.word_size
        data = self.read(addr, w)
        if data is None or len(data) < w:
            return None
        return int(struct.unpack(self.hdr.endian + ("Q" if w == 8 else "I"), data)[0])

    def read_word_window(self, addr: int, count: int) -> WordWindow:
        """``count`` consecutive words from the core as raw bytes, with which are present (the
        stack window's fast path: one read per page, no Python int per word)."""
        w = self.hdr.word_size
        size = count * w
        end = addr + size
        little = self.hdr.little_endian
        seg = self.segment_at(addr) if self._whole is not None else None
        if seg is not None and end <= min(seg.vaddr + seg.filesz, seg.end):
            # The usual case, a window inside one dumped stack mapping: one pread. Anything
            # else (a window across mappings, overlapping mappings, a short or failing read)
            # goes page by page below, which records truncation and read problems.
            try:
                data = self._src.pread(seg.offset + (addr - seg.vaddr), size)
            except CoreError:
                data = b""
            if len(data) == size:
                return WordWindow(addr, data, w, little)
        raw = bytearray(size)
        present = bytearray(count)
        pos = addr
        while pos < end:
            page_end = min(end, (pos & ~(_PAGE - 1)) + _PAGE)
            chunk = self.read_dumped(pos, page_end - pos)
            i = (pos - addr) // w
            n = (page_end - pos) // w
            if chunk is not None and len(chunk) >= n * w:
                raw[i * w : (i + n) * w] = chunk[: n * w]
                present[i : i + n] = b"\x01" * n
            pos = page_end
        return WordWindow(addr, bytes(raw), w, little, bytes(present))

    def read_cstring(self, addr: int, limit: int = 4096) -> str | None:
        out = bytearray()
        while len(out) < limit:
            pos = addr + len(out)
            # Never ask across a page end: the string may end just before an unmapped page.
            chunk = self.read(pos, min(256, limit - len(out), _PAGE - (pos % _PAGE)))
            if not chunk:
                break
            nul = chunk.find(b"\0")
            if nul >= 0:
                out += chunk[:nul]
                return out.decode("utf-8", "replace")
            out += chunk
        return out.decode("utf-8", "replace") if out else None
