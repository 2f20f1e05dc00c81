"""Demangle C++ (Itanium ABI) and legacy Rust symbol names with the toolchain's own demangler.

Frames named from ELF symbol tables carry mangled names (``_ZN3foo3barEv``); the frame lists are
written against demangled names (``std::__throw_length_error``, ``operator new``). Rather than
write a demangler, we call ``__cxa_demangle`` from libstdc++ (the same code as libiberty's
``cp-demangle.c``, which stops deeply nested hostile input at ``DEMANGLE_RECURSION_LIMIT``).
The library is loaded on first use, not at import; where it is missing, names stay as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

__all__ = ["demangle"]

# Longer "symbols" are damage or hostile input; real ones are far shorter.
MAX_MANGLED_BYTES = 16 * 1024

_Demangler = Callable[[bytes], bytes | None]


@functools.cache
def _load() -> _Demangler | None:
    name = ctypes.util.find_library("stdc++")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    cxa = lib.__cxa_demangle
    cxa.restype = ctypes.c_void_p
    cxa.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.POINTER(ctypes.c_int),
    ]
    free = libc.free
    free.argtypes = [ctypes.c_void_p]
    free.restype = None

    def run(mangled: bytes) -> bytes | None:
        status = ctypes.c_int(0)
        out = cxa(mangled, None, None, ctypes.byref(status))
        if not out:
            return None
        try:
            return ctypes.string_at(out) if status.value == 0 else None
        finally:
            free(out)

    return run


def demangle(name: str) -> str:
    """The demangled form of ``name``, or ``name`` itself if it is not a mangled symbol."""
    if not name.startswith("_Z") or "\x00" in name:
        return name
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > MAX_MANGLED_BYTES:
        return name
    run = _load()
    if run is None:
        return name
    out = run(raw)
    return out.decode("utf-8", "replace") if out else name
