"""Crash loops: a service that crashes, restarts and crashes again, tens to hundreds of times.

A loop is one fault, however many cores it leaves: counted crash by crash it looks like a CPU
pile-up (the restarted process often lands on the same CPU) and a host in excess. Crash
reporting systems fold such bursts (Sentry groups repeated events of one issue; systemd stops
restarting a unit after ``StartLimitBurst`` failures within ``StartLimitIntervalSec``). Here a
*burst* is a run of crashes of one (host, service, population) with gaps of at most
``gap_us``; the host tests see the first crash of each burst only (an *event*), and bursts of at
least ``min_crashes`` that are far denser than the rest of their (host, service, population)'s
crashes (Poisson tail at most :data:`LOOP_ALPHA`) are reported as loops. A loop that recurs
(a nightly cron job dying at start) is one event in all: once a (host, service, population)
has a loop, only its first burst of a loop's size is an event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from corecensus.epidemiology.poisson import poisson_upper
from corecensus.epidemiology.segments import radix_argsort

__all__ = ["LOOP_ALPHA", "Bursts", "find_bursts"]

# How surprising a burst must be, given the rest of its (host, service, population)'s crashes
# at a constant rate, to be reported as a loop.
LOOP_ALPHA = 1e-6

I64 = NDArray[np.int64]
B = NDArray[np.bool_]


@dataclass(frozen=True, slots=True, eq=False)
class Bursts:
    """``event`` per crash (the first crash of its burst); ``burst`` per crash (burst id);
    per loop (bursts of at least ``min_crashes``): ``host``, ``population``, ``service``,
    ``crashes``, ``start_us``, ``end_us``, ``cpu`` (the most common CPU, -1 none),
    ``cpu_crashes`` (crashes on it)."""

    event: B
    burst: NDArray[np.int32]
    host: I64
    population: I64
    service: I64
    crashes: I64
    start_us: I64
    end_us: I64
    cpu: I64
    cpu_crashes: I64

    def __len__(self) -> int:
        return int(self.host.size)


def find_bursts(
    *,
    host: NDArray[Any],
    service: NDArray[Any],
    population: NDArray[Any],
    time_us: NDArray[Any],
    cpu: NDArray[Any],
    gap_us: int,
    min_crashes: int,
    time_order: NDArray[Any] | None = None,
) -> Bursts:
    """Group crashes into bursts (see the module docstring); ``gap_us <= 0`` disables it.
    ``time_order`` is a stable argsort of ``time_us`` when the caller has one."""
    h = np.asarray(host)
    n = h.size
    if gap_us <= 0 or n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Bursts(np.ones(n, dtype=bool), np.arange(n, dtype=np.int32), *(empty,) * 8)
    svc = np.asarray(service)
    pop = np.asarray(population)
    t = np.asarray(time_us, dtype=np.int64)
    # (host, service, population) then time: a stable radix sort of the key over the time
    # order (a four-key lexsort cost seconds at ten million crashes); the key is built in
    # place, one int64 array (the columns stay as narrow as they came)
    by_time = np.argsort(t, kind="stable") if time_order is None else np.asarray(time_order)
    n_pop = int(pop.max()) + 2
    n_svc = int(svc.max()) + 2
    key = h.astype(np.int64)
    key *= n_svc
    key += svc
    key += 1
    key *= n_pop
    key += pop
    key += 1
    key = key[by_time]
    sub = radix_argsort(key)
    key = key[sub]
    order = by_time[sub]
    del sub
    ts = t[order]
    new = np.ones(n, dtype=bool)
    # equal keys: the same (host, service, population)
    same = key[1:] == key[:-1]
    del key
    new[1:] = ~same
    new[1:] |= ts[1:] - ts[:-1] > gap_us
    burst = np.empty(n, dtype=np.int32)  # int32: kept with the analysis (40 MB at 1e7)
    burst[order] = np.cumsum(new) - 1
    event = np.zeros(n, dtype=bool)
    event[order[new]] = True
    starts = np.flatnonzero(new)
    sizes = np.diff(np.append(starts, n))
    loop = np.flatnonzero(sizes >= max(min_crashes, 2))
    # A burst is reported as a loop only when it is far denser than its (host, service,
    # population)'s own crashes elsewhere: a busy host crashing one signature every few minutes
    # all month chains into bursts too, but that is its rate, not a loop (it is still folded).
    if loop.size:
        pair_new = np.ones(n, dtype=bool)
        pair_new[1:] = ~same
        pair_id = np.cumsum(pair_new) - 1
        pair_size = np.bincount(pair_id)
        window = max(int(ts.max() - ts.min()), 1)
        k = sizes[loop]
        span = ts[starts[loop] + k - 1] - ts[starts[loop]]
        rest = pair_size[pair_id[starts[loop]]] - k
        rate = rest / np.maximum(window - span, gap_us)
        width = np.maximum(span, gap_us)
        # the burst was picked as the densest stretch: Bonferroni over the window's positions
        # (the scan statistic's first-order correction; Naus 1982, "Approximations for
        # distributions of scan statistics", JASA 77:177-183)
        looks = np.maximum(window / width, 1.0)
        sized = loop
        loop = loop[poisson_upper(k, rate * width) * looks <= LOOP_ALPHA]
        # A loop that comes back (a cron job or a timer restarting a unit that dies at start,
        # night after night) is one software fault however often it fires. Each restart lands
        # where the scheduler puts a new process on an idle host, often the same CPU every
        # night, and its loops piled up there like a bad core's crashes (bench/fleet_adversary,
        # *loops*: every host of a nightly cron loop was flagged). Once a (host, service,
        # population) has a loop, only its first burst of a loop's size stays an event: the
        # nights whose burst was too short to be reported on its own (5-6 crashes against
        # the pair's own dense rate) are the same fault. Pairs without a loop, and bursts
        # below a loop's size, are untouched, so a bad core's separate crashes count one by one.
        if loop.size:
            looping = np.zeros(int(pair_id[-1]) + 1, dtype=bool)
            looping[pair_id[starts[loop]]] = True
            sized = sized[looping[pair_id[starts[sized]]]]
            lp = pair_id[starts[sized]]  # bursts run in (pair, time) order
            again = sized[np.r_[False, lp[1:] == lp[:-1]]]
            event[order[starts[again]]] = False
    first = starts[loop]
    last = first + sizes[loop] - 1
    # the most common CPU of each loop
    cpu_of = np.full(loop.size, -1, dtype=np.int64)
    cpu_n = np.zeros(loop.size, dtype=np.int64)
    c = np.asarray(cpu)
    for i, (lo, hi) in enumerate(zip(first.tolist(), (last + 1).tolist(), strict=True)):
        vals = c[order[lo:hi]].astype(np.int64)
        vals = vals[vals >= 0]
        if vals.size:
            u, k = np.unique(vals, return_counts=True)
            cpu_of[i] = int(u[np.argmax(k)])
            cpu_n[i] = int(k.max())
    lead = order[first]
    return Bursts(
        event=event,
        burst=burst,
        host=h[lead].astype(np.int64),
        population=pop[lead].astype(np.int64),
        service=svc[lead].astype(np.int64),
        crashes=sizes[loop].astype(np.int64),
        start_us=ts[first],
        end_us=ts[last],
        cpu=cpu_of,
        cpu_crashes=cpu_n,
    )
