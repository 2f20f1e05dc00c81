"""Unwinding and symbolization with drgn; the only module that imports drgn.

Debug information comes from the binaries on this machine, from ``--binaries`` directories matched
by build-id, and from debuginfod when ``DEBUGINFOD_URLS`` is set (drgn's standard finders use
libdebuginfod). Without debug info, drgn still names functions from ELF symbol tables; without
any file, a frame is ``module+offset``.

drgn reads a core from a file path. A compressed, piped or ``--head-bytes`` core is therefore
materialized as a sparse temporary core holding only what the parse read (headers, notes, the
first page of each mapped file and the crashing thread's stack), which is all unwinding needs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corecensus.coredump.demangle import demangle
from corecensus.coredump.elf import PT_DYNAMIC, PT_LOAD, read_image_headers
from corecensus.coredump.instruction import is_restore_rt
from corecensus.coredump.parse import VDSO, ParsedCore, wanted_ranges
from corecensus.coredump.source import FileSource
from corecensus.errors import CoreError

__all__ = ["SymbolizedStack", "Symbolizer"]


def _exe_path(p: ParsedCore) -> str | None:
    from corecensus.coredump.inspect import executable_path

    return executable_path(p)


MAX_FRAMES = 64
# No code is mapped in the first page (vm.mmap_min_addr is at least 4096).
_LOWEST_CODE = 4096


@dataclass
class SymbolizedStack:
    frames: list[tuple[int, str | None]] = field(default_factory=list)
    unwound: bool = False
    stopped_reason: str | None = None
    errors: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _core_path(p: ParsedCore) -> Iterator[str]:
    src = p.src
    if isinstance(src, FileSource) and src.visible_size() == os.path.getsize(src.name):
        yield src.name
        return
    fd, path = tempfile.mkstemp(prefix="corecensus-", suffix=".core")
    try:
        with os.fdopen(fd, "wb") as out:
            head = bytearray(src.pread(0, p.notes_end))
            # Drop the section header table (gcore writes one at the end of the file), which
            # the sparse copy does not carry and libelf would reject.
            if len(head) >= 64 and p.hdr.is_64:
                head[40:48] = bytes(8)  # e_shoff
                head[60:64] = bytes(4)  # e_shnum, e_shstrndx
            elif len(head) >= 52:
                head[32:36] = bytes(4)
                head[48:52] = bytes(4)
            out.write(head)
            written = len(head)
            for offset, size in wanted_ranges(p):
                try:
                    data = src.pread(offset, size)
                except CoreError:
                    continue  # already reported by the parse; drgn sees a hole there
                if data:
                    out.seek(offset)
                    out.write(data)
                    written = max(written, offset + len(data))
            # Make the file as long as the core says it is, sparsely, so segments are in range.
            end = max((s.offset + s.filesz for s in p.segments), default=0)
            out.truncate(max(end, written))
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _dynamic_address(p: ParsedCore, base: int) -> int | None:
    """Run-time address of a loaded ELF object's PT_DYNAMIC, from its dumped program headers."""
    image = read_image_headers(p.space.read, base)
    if image is None:
        return None
    first_load = next((h.vaddr for h in image.headers if h.type == PT_LOAD), None)
    dynamic = next((h.vaddr for h in image.headers if h.type == PT_DYNAMIC), None)
    if first_load is None or dynamic is None:
        return None
    return int(base - (first_load & ~0xFFF) + dynamic)


class Symbolizer:
    """drgn over one parsed core."""

    def __init__(self, parsed: ParsedCore, binaries: Sequence[Path] = ()) -> None:
        self.p = parsed
        self.binaries = list(binaries)
        self.prog: Any = None
        self.errors: list[str] = []
        # False until drgn has the core open (no drgn, no temporary copy, libelf refused it).
        self.opened = False
        self._ctx: contextlib.AbstractContextManager[str] | None = None
        # The core file drgn reads (the core itself, or the sparse copy): libdwfl reads it too.
        self.path: str | None = None

    def __enter__(self) -> Symbolizer:
        # drgn logs a warning per module without debug info; corecensus reports that in the
        # record's errors instead of on the user's terminal.
        logging.getLogger("drgn").setLevel(logging.ERROR)
        try:
            import drgn
        except ImportError as exc:  # pragma: no cover - drgn is a hard dependency
            self.errors.append(f"drgn unavailable: {exc}")
            return self
        ctx = _core_path(self.p)
        try:
            path = ctx.__enter__()
        except OSError as exc:
            # ENOSPC in a nearly full $TMPDIR once raised out of a whole ingest (0 of 73
            # stored, issue 10): the core is kept unsymbolized, with the reason.
            self.errors.append(
                f"not symbolized: cannot write the temporary copy drgn reads in "
                f"{tempfile.gettempdir()} ($TMPDIR): {exc.strerror or exc}"
            )
            return self
        self._ctx = ctx
        self.path = path
        try:
            prog = drgn.Program()
            prog.set_core_dump(path)
        except Exception as exc:  # drgn raises bare Exception for libelf errors
            self.errors.append(f"drgn cannot open this core: {exc}")
            return self
        self.prog = prog
        self.opened = True
        self._load_debug_info(drgn)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
        self.prog = None

    def _load_debug_info(self, drgn: Any) -> None:
        """Create drgn's modules from corecensus's own module list, then load their files.

        drgn can discover modules itself, but through the dynamic linker's link map, which lives
        in heap and data pages a streamed or head-only core does not carry. The core's NT_FILE
        (or the link map corecensus already walked) and the build-ids from the dumped ELF
        headers say the same thing and are always at hand.
        """
        prog = self.prog
        p = self.p
        exe = _exe_path(p)
        created = []
        main = None
        try:
            # drgn yields the main module first, from the auxiliary vector alone; stop there,
            # before it walks the link map.
            main, _new = next(iter(prog.loaded_modules()))
        except (StopIteration, Exception) as exc:
            self.errors.append(f"drgn could not place the executable: {exc}")
        for m in p.modules:
            if not m.executable:
                continue
            try:
                if m.path == exe and main is not None:
                    dm = main
                elif m.path == exe:
                    continue
                elif m.path == VDSO:
                    # drgn reads the vDSO's image from the core's memory.
                    dyn = _dynamic_address(p, m.base)
                    if dyn is None:
                        continue
                    dm = prog.vdso_module("linux-vdso.so.1", dyn, create=True)
                else:
                    dyn = _dynamic_address(p, m.base)
                    if dyn is None:
                        continue  # drgn derives a library's load bias from its _DYNAMIC
                    dm = prog.shared_library_module(m.path, dyn, create=True)
                if not dm.address_ranges:  # drgn may already know several ranges
                    dm.address_range = (m.base, m.end)
                if m.build_id and dm.build_id is None:
                    dm.build_id = bytes.fromhex(m.build_id)
            except (ValueError, LookupError) as exc:
                self.errors.append(f"drgn module {m.path}: {exc}")
                continue
            local = p.resolver.local_file(m.path, m.build_id)
            if local is not None:
                with contextlib.suppress(Exception):
                    dm.try_file(str(local), force=m.build_id is None)
            created.append(dm)
        try:
            prog.load_module_debug_info(*created)
        except Exception as exc:
            self.errors.append(f"drgn could not load debug info: {exc}")
        missing = [dm.name for dm in created if dm.loaded_file_status == drgn.ModuleFileStatus.WANT]
        if missing:
            self.errors.append(
                "binary not found (frames there are module+offset): " + ", ".join(missing)
            )

    # -- queries --------------------------------------------------------------------------------
    def unwind(self, tid: int | None = None) -> SymbolizedStack:
        """The frames of thread ``tid`` (the crashing thread by default)."""
        out = SymbolizedStack()
        if self.prog is None:
            out.stopped_reason = "; ".join(self.errors) or "drgn unavailable"
            return out
        try:
            thread = self.prog.crashed_thread() if tid is None else self.prog.thread(tid)
            trace = thread.stack_trace()
        except Exception as exc:
            out.stopped_reason = f"unwinding failed: {exc}"
            return out
        for i, frame in enumerate(trace):
            if i >= MAX_FRAMES:
                break
            try:
                pc = int(frame.pc)
            except LookupError:
                # drgn ends a trace with a pc-less frame at the outermost caller; only a trace
                # that yields nothing at all is a failure.
                if not out.frames:
                    out.stopped_reason = "unwinder found no program counter"
                break
            name = frame.name or self.symbol_name(pc)
            if name is not None and name.startswith("0x"):
                name = None  # drgn's placeholder for "no symbol"
            if not frame.is_inline:
                # DWARF names a C++ function without its parameters; its ELF symbol's mangled
                # name has them: cxxfunc(int), as gdb and eu-stack print it.
                linkage = _frame_symbol(frame)
                if linkage is not None and linkage.startswith("_Z"):
                    name = demangle(linkage)
            if name is None and is_restore_rt(self.p.space, pc):
                name = "__restore_rt"
            out.frames.append((pc, name))
        # An unwinder that ran off the end of the stack yields pcs like 0 or 1 (a zeroed or
        # garbage return slot): no caller lives there, so none is reported past the first.
        while len(out.frames) > 1 and out.frames[-1][0] < _LOWEST_CODE:
            out.frames.pop()
        out.unwound = len(out.frames) > 0
        return out

    def symbol_name(self, address: int) -> str | None:
        found = self.symbol(address)
        return found[0] if found else None

    def symbol(self, address: int) -> tuple[str, int] | None:
        """The ELF/DWARF symbol containing ``address`` and the offset into it (bytes)."""
        if self.prog is None:
            return None
        try:
            sym = self.prog.symbol(address)
        except LookupError:
            return None
        except Exception:
            return None
        # Versioned ELF symbols ("__libc_start_main@@GLIBC_2.34") name the same function as the
        # unversioned DWARF name; signatures want one spelling.
        return demangle(str(sym.name).split("@", 1)[0]), address - int(sym.address)


def _frame_symbol(frame: Any) -> str | None:
    """The ELF symbol name of a drgn frame (drgn looks it up at the call, not the return
    address), without a symbol version."""
    try:
        return str(frame.symbol().name).split("@", 1)[0]
    except (LookupError, ValueError):
        return None
