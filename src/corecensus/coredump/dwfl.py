"""Unwinding with elfutils' libdwfl, for the architectures drgn cannot unwind.

drgn 0.3 unwinds x86-64, aarch64, ppc64 and s390x cores; for i386, x32, ppc32, riscv64, the three
MIPS ABIs, sparc64, s390 (31-bit) and m68k it stops at "core dump stack unwinding is not
supported". ``eu-stack`` unwinds those through libdwfl (elfutils' backends hold each
architecture's registers, CFI and frame-pointer fallbacks), so corecensus asks the same library
instead of writing an unwinder of its own. There is no maintained Python binding; the few calls
needed are made with ctypes on ``libdw.so.1`` (Debian's libdw1, which elfutils depends on), the
sequence ``eu-stack`` itself runs (elfutils src/stack.c): ``dwfl_begin`` with the build-id
finders, ``dwfl_core_file_report``, ``dwfl_report_end``, ``dwfl_core_file_attach``, then
``dwfl_getthreads`` / ``dwfl_thread_getframes`` and ``dwfl_module_addrname`` per frame.

Files the core names but that are not on this machine (cores from elsewhere) are found through
the core's own resolver: build-id first, then a same-named file among ``--binaries``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from corecensus.coredump.demangle import demangle

__all__ = ["DwflStacks", "dwfl_stacks"]

MAX_FRAMES = 64
MAX_THREADS = 256
_EV_CURRENT = 1
_ELF_C_READ_MMAP = 8
_DWARF_CB_OK, _DWARF_CB_ABORT = 0, 1

# Dwfl_Module *mod, void **userdata, const char *name, Dwarf_Addr base, char **file, Elf **elfp
_FIND_ELF = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_char_p,
    ctypes.c_uint64,
    ctypes.POINTER(ctypes.c_void_p),
    ctypes.c_void_p,
)
_THREAD_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_FRAME_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


class _Callbacks(ctypes.Structure):
    _fields_ = [
        ("find_elf", ctypes.c_void_p),
        ("find_debuginfo", ctypes.c_void_p),
        ("section_address", ctypes.c_void_p),
        ("debuginfo_path", ctypes.POINTER(ctypes.c_char_p)),
    ]


@dataclass
class DwflStacks:
    """Frames per thread id, as (pc, function name or None), innermost first."""

    threads: dict[int, list[tuple[int, str | None]]] = field(default_factory=dict)
    error: str | None = None
    # Names of the addresses asked for by ``name_pcs`` (the symbol table libdwfl found, also
    # in the core's memory: a whole dumped executable, the vDSO, a ppc64 ELFv1 .opd).
    names: dict[int, str] = field(default_factory=dict)


@functools.cache
def _libs() -> tuple[Any, Any, Any] | None:
    """(libdw, libelf, libc) with the signatures used here, or None without elfutils."""
    try:
        dw = ctypes.CDLL("libdw.so.1")
        elf = ctypes.CDLL("libelf.so.1")
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    vp, cp, i, u64 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint64
    sigs: list[tuple[Any, str, Any, list[Any]]] = [
        (elf, "elf_version", ctypes.c_uint, [ctypes.c_uint]),
        (elf, "elf_begin", vp, [i, i, vp]),
        (elf, "elf_end", i, [vp]),
        (dw, "dwfl_begin", vp, [ctypes.POINTER(_Callbacks)]),
        (dw, "dwfl_end", None, [vp]),
        (dw, "dwfl_report_begin", None, [vp]),
        (dw, "dwfl_report_end", i, [vp, vp, vp]),
        (dw, "dwfl_core_file_report", i, [vp, vp, cp]),
        (dw, "dwfl_core_file_attach", i, [vp, vp]),
        (dw, "dwfl_getthreads", i, [vp, _THREAD_CB, vp]),
        (dw, "dwfl_thread_tid", i, [vp]),
        (dw, "dwfl_thread_getframes", i, [vp, _FRAME_CB, vp]),
        (dw, "dwfl_frame_pc", ctypes.c_bool, [vp, ctypes.POINTER(u64), ctypes.POINTER(ctypes.c_bool)]),
        (dw, "dwfl_addrmodule", vp, [vp, u64]),
        (dw, "dwfl_module_addrname", cp, [vp, u64]),
        (dw, "dwfl_errno", i, []),
        (dw, "dwfl_errmsg", cp, [i]),
        (dw, "dwfl_build_id_find_elf", i, [vp, vp, cp, u64, ctypes.POINTER(ctypes.c_void_p), vp]),
        (libc, "strdup", vp, [cp]),
    ]  # fmt: skip
    for lib, name, res, args in sigs:
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    elf.elf_version(_EV_CURRENT)
    return dw, elf, libc


def _errmsg(dw: Any) -> str:
    msg = dw.dwfl_errmsg(-1)
    return msg.decode("utf-8", "replace") if msg else "unknown libdwfl error"


@contextlib.contextmanager
def _session(
    core: str, executable: str | None, find_local: Callable[[str], str | None]
) -> Iterator[tuple[Any, Any, str | None]]:
    """(libdw, Dwfl*, why the core's threads could not be attached, or None) with the core
    reported; raises OSError with libdwfl's reason when not even that works."""
    libs = _libs()
    if libs is None:
        raise OSError("libdw.so.1 not found (install elfutils' libdw1)")
    dw, elf, libc = libs

    def find_elf(
        mod: int | None,
        userdata: int | None,
        name: bytes | None,
        base: int,
        file_name: Any,
        elfp: int | None,
    ) -> int:
        fd = int(dw.dwfl_build_id_find_elf(mod, userdata, name, base, file_name, elfp))
        if fd >= 0 or not name:
            return fd
        local = find_local(name.decode("utf-8", "replace"))
        if local is None:
            return -1
        try:
            fd = os.open(local, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return -1
        file_name[0] = libc.strdup(os.fsencode(local))  # libdwfl frees it
        return fd

    finder = _FIND_ELF(find_elf)
    debuginfo_path = ctypes.c_char_p(None)
    callbacks = _Callbacks(
        ctypes.cast(finder, ctypes.c_void_p),
        ctypes.cast(dw.dwfl_standard_find_debuginfo, ctypes.c_void_p),
        None,
        ctypes.pointer(debuginfo_path),
    )
    fd = os.open(core, os.O_RDONLY | os.O_CLOEXEC)
    core_elf = None
    dwfl = None
    try:
        core_elf = elf.elf_begin(fd, _ELF_C_READ_MMAP, None)
        if not core_elf:
            raise OSError("libelf cannot read this core")
        dwfl = dw.dwfl_begin(ctypes.byref(callbacks))
        if not dwfl:
            raise OSError(_errmsg(dw))
        dw.dwfl_report_begin(dwfl)
        exe = os.fsencode(executable) if executable else None
        if dw.dwfl_core_file_report(dwfl, core_elf, exe) < 0:
            raise OSError(_errmsg(dw))
        dw.dwfl_report_end(dwfl, None, None)
        # Without an unwinder for the architecture (MIPS in libdw 0.188) the core does not
        # attach, but its modules and their symbol tables are there to name addresses.
        attached = dw.dwfl_core_file_attach(dwfl, core_elf) >= 0
        yield dw, dwfl, None if attached else _errmsg(dw)
    finally:
        if dwfl:
            dw.dwfl_end(dwfl)
        if core_elf:
            elf.elf_end(core_elf)
        os.close(fd)
        del finder


def dwfl_stacks(
    core: str,
    executable: str | None,
    find_local: Callable[[str], str | None],
    name_pcs: Sequence[tuple[int, bool]] = (),
    unwind: bool = True,
) -> DwflStacks:
    """Every thread's frames as libdwfl unwinds them (eu-stack's frames), up to
    :data:`MAX_THREADS` threads of :data:`MAX_FRAMES` frames; ``error`` says why none. Also
    the names of ``name_pcs``, (address, is a return address) pairs; ``unwind=False`` only names.
    """
    out = DwflStacks()
    try:
        with _session(core, executable, find_local) as (dw, dwfl, not_attached):
            for pc, is_return in name_pcs:
                name = _name(dw, dwfl, pc, not is_return)
                if name:
                    out.names[pc] = name
            if not unwind:
                return out
            if not_attached is not None:
                out.error = f"libdwfl: {not_attached}"
                return out

            def on_frame(frame: int | None, arg: int | None) -> int:
                pc = ctypes.c_uint64()
                activation = ctypes.c_bool()
                if not dw.dwfl_frame_pc(frame, ctypes.byref(pc), ctypes.byref(activation)):
                    return _DWARF_CB_ABORT
                frames.append((pc.value, _name(dw, dwfl, pc.value, activation.value)))
                return _DWARF_CB_ABORT if len(frames) >= MAX_FRAMES else _DWARF_CB_OK

            def on_thread(thread: int | None, arg: int | None) -> int:
                frames.clear()
                # An error here ends this thread's frames (the outermost frame, a pc 0, an
                # address without CFI); what was unwound before it stands, as in eu-stack.
                dw.dwfl_thread_getframes(thread, frame_cb, None)
                out.threads[int(dw.dwfl_thread_tid(thread))] = list(frames)
                return _DWARF_CB_ABORT if len(out.threads) >= MAX_THREADS else _DWARF_CB_OK

            frames: list[tuple[int, str | None]] = []
            frame_cb = _FRAME_CB(on_frame)
            thread_cb = _THREAD_CB(on_thread)
            if dw.dwfl_getthreads(dwfl, thread_cb, None) < 0 and not out.threads:
                out.error = f"libdwfl: {_errmsg(dw)}"
    except OSError as exc:
        out.error = f"libdwfl: {exc.strerror or exc}"
    return out


def _name(dw: Any, dwfl: Any, pc: int, activation: bool) -> str | None:
    # A return address points after the call; the call itself (pc - 1) is in the caller, which
    # matters when the call is the function's last instruction (eu-stack does the same).
    lookup = pc if activation else pc - 1
    module = dw.dwfl_addrmodule(dwfl, lookup)
    if not module:
        return None
    name = dw.dwfl_module_addrname(module, lookup)
    return demangle(name.decode("utf-8", "replace")) if name else None
