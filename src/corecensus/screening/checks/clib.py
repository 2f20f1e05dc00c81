"""C library functions as a real program sees them.

Functions are resolved through the process's global symbol scope (``dlsym(RTLD_DEFAULT)``, which
is what ``ctypes.CDLL(None)`` gives), not through a handle on ``libm.so.6``: a lookup on a library
handle searches only that library and its dependencies, so it would skip an ``LD_PRELOAD``
interposer -- and the screen must see exactly the function every dynamically linked program calls.
libm is loaded ``RTLD_GLOBAL`` first so its symbols are in that scope even in a process that does
not link it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from functools import cache

from corecensus.errors import ScreeningError

__all__ = ["double_fn", "float_fn"]


@cache
def _global_scope() -> ctypes.CDLL:
    name = ctypes.util.find_library("m") or "libm.so.6"
    try:
        ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        raise ScreeningError(f"cannot load the C math library {name}: {exc}") from exc
    return ctypes.CDLL(None)


def _fn(
    name: str, ctype: type[ctypes.c_double] | type[ctypes.c_float], arity: int
) -> Callable[..., float]:
    try:
        fn = getattr(_global_scope(), name)
    except AttributeError as exc:
        raise ScreeningError(f"the C library has no {name}()") from exc
    fn.restype = ctype
    fn.argtypes = [ctype] * arity
    return fn  # type: ignore[no-any-return]


@cache
def double_fn(name: str, arity: int = 1) -> Callable[..., float]:
    """A ``double f(double, ...)`` from the C library, e.g. ``double_fn("pow", 2)``."""
    return _fn(name, ctypes.c_double, arity)


@cache
def float_fn(name: str, arity: int = 1) -> Callable[..., float]:
    """A ``float f(float, ...)`` from the C library, e.g. ``float_fn("expf")``."""
    return _fn(name, ctypes.c_float, arity)
