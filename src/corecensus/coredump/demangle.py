"""C++ names as gdb and eu-stack print them: ``cxxfunc(int)``, not ``_Z7cxxfunci``.

DWARF's ``DW_AT_name`` of a C++ function is the bare ``cxxfunc``; the parameter list lives only
in the mangled linkage name of the ELF symbol. eu-stack demangles that with the C++ runtime's
own demangler (``__cxa_demangle``, elfutils src/stack.c); so does corecensus, through ctypes on
``libstdc++.so.6`` (present wherever g++ or any C++ program is), loaded on the first mangled
name only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

__all__ = ["demangle"]


@functools.cache
def _runtime() -> tuple[Any, Any] | None:
    try:
        cxx = ctypes.CDLL(ctypes.util.find_library("stdc++") or "libstdc++.so.6")
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    fn = cxx.__cxa_demangle
    fn.restype = ctypes.c_void_p
    fn.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.free.restype = None
    return fn, libc.free


@functools.lru_cache(maxsize=4096)
def demangle(name: str) -> str:
    """The demangled form of an Itanium-ABI mangled name (``_Z...``); any other name as is."""
    if not name.startswith("_Z"):
        return name
    rt = _runtime()
    if rt is None:
        return name
    fn, free = rt
    status = ctypes.c_int()
    out = fn(name.encode(), None, None, ctypes.byref(status))
    if not out or status.value != 0:
        return name
    try:
        text = ctypes.string_at(out).decode("utf-8", "replace")
    finally:
        free(out)
    return text
