"""Pinning a thread to one CPU and proving it ran there.

``os.sched_setaffinity`` only states a wish; a cpuset cgroup, an offline CPU or a hypervisor can
overrule it. So every pin is followed by reading back the mask *and* asking the kernel which CPU
the thread is on right now (``sched_getcpu``, glibc; the ``rdpid``/``rdtscp`` fast path), and the
worker records that CPU with every result.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

from corecensus.errors import ScreeningError

__all__ = ["current_cpu", "on_cpu", "pin"]


@cache
def _sched_getcpu() -> Callable[[], int]:
    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.sched_getcpu
    fn.restype = ctypes.c_int
    fn.argtypes = []
    return fn


def current_cpu() -> int:
    """The CPU the calling thread runs on now (may change at once unless it is pinned)."""
    cpu = int(_sched_getcpu()())
    if cpu < 0:
        raise ScreeningError(f"sched_getcpu failed: {os.strerror(ctypes.get_errno())}")
    return cpu


def pin(cpu: int) -> None:
    """Pin the calling thread to ``cpu`` and verify it now runs there.

    Linux applies ``sched_setaffinity(0, ...)`` to the calling thread only; threads started later
    inherit the mask. Raises :class:`ScreeningError` if the CPU cannot be used.
    """
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:
        raise ScreeningError(f"cannot pin to CPU {cpu}: {exc.strerror}") from exc
    mask = os.sched_getaffinity(0)
    if mask != {cpu}:
        raise ScreeningError(f"pinned to CPU {cpu} but the affinity mask reads {sorted(mask)}")
    now = current_cpu()
    if now != cpu:
        raise ScreeningError(f"pinned to CPU {cpu} but the thread runs on CPU {now}")


@contextmanager
def on_cpu(cpu: int, home: int) -> Iterator[None]:
    """Run the body on ``cpu``, then return to ``home`` (the cross-core check's migration)."""
    pin(cpu)
    try:
        yield
    finally:
        pin(home)
