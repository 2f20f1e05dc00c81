"""Where a crash *could* have run: the cells of the per-host CPU test and how many there are.

The host test (:mod:`~corecensus.epidemiology.hosttest`) asks whether a host's crashes pile up
on one CPU more than chance allows. "Chance" is uniform over the CPUs the crashing process could
use, not over the host's CPUs, and never over a count guessed from other hosts (issue 9: a
2-CPU host tested as a 384-CPU one, services pinned to one CPU, 2-4-CPU cpusets). The rules,
each conservative where a fact is missing (a smaller set of cells can only raise p-values:
the largest cell of a multinomial is stochastically larger when the cell probabilities are
less even, Schur-convexity of ``P(max >= m)``; Rinott 1973, "Multivariate majorization and
rearrangement inequalities with some applications to probability and statistics", Israel J.
Math. 15:60-77):

1. **Allowed set.** A crash's allowed CPUs are its ``Cpus_allowed_list``; a crash pinned to one
   CPU carries no evidence about that CPU (cell ``-1``, its anomalies still count). Unknown:
   the host's online CPU count, else (no host facts) the largest CPU index seen on that host
   plus one, a lower bound of the host's CPUs (rounded down to 2^j or 1.5 * 2^j). Never
   another host's count.
2. **One set per host.** Crashes with different allowed sets are not exchangeable, so each
   host is tested on the set most of its crashes with a CPU ran under (its *stratum*); the
   others keep their anomalies but not their CPU.
3. **Pinning and cpusets without the fact.** A service whose crashes sit within
   ``CONFINED_SPAN`` adjacent CPUs of a host (all of 2 or 3 crashes, all but a quarter of
   more: a pinned task is moved while its CPU is offline) on more hosts than chance allows
   (Poisson upper tail at most ``PINNED_ALPHA`` against the sum over its hosts of the chance
   of that for uniform CPUs: exact for "all", a union bound over windows otherwise; at least
   ``PINNED_MIN_HOSTS`` such hosts) is pinned or confined somewhere; where such a service's
   crashes without a known allowed set sit that close together on a host, those in the window
   lose their CPU (a faulty core there can still show through its anomalies).
   **3b.** A service that runs confined (an allowed set smaller than the host) on at least 90 %
   of the hosts that report the set and the host's CPUs (at least 3) runs in a cpuset: on a
   host whose crashes of it do not report the set, they lose their CPU (they ran under a set
   of their own, not the host's stratum: rule 2).
   **3c.** A (host, service) pair without the fact whose crashes all sit in one NUMA half of a
   host of 16 or more CPUs (lower or upper half, or quarters 0 and 2 or 1 and 3 under split
   SMT numbering), at least 10 of them off its busiest CPU, gets that half as its allowed set
   (``cells_source`` 4).
4. **SMT.** When the physical core of the crashes is known, cells are cores, and a set of ``a``
   logical CPUs is tested as ``floor(a / 2)`` cores: x86 has at most two threads per core, so
   no core holds more than ``2 / a`` of the set, and uniform cells of ``1 / floor(a / 2)``
   majorize any such law (``ceil`` did not: a 3-CPU set on sibling pair 20-21 and CPU 22 is
   2/3 : 1/3 over two cores, and tested as 1/2 : 1/2 a busy service there piled up on core
   10; bench/fleet_adversary.py, *cpusets*). A faulty core fails on both siblings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from corecensus.cpulist import cpu_list_size
from corecensus.epidemiology.poisson import poisson_upper
from corecensus.epidemiology.segments import Groups, pair_key, radix_argsort
from corecensus.epidemiology.tails import binomial_upper

__all__ = ["CONFINED_SPAN", "PINNED_ALPHA", "PINNED_MIN_HOSTS", "Placement", "place_crashes"]

I64 = NDArray[np.int64]
B = NDArray[np.bool_]

PINNED_ALPHA = 1e-3
PINNED_MIN_HOSTS = 3
# Cpusets and pinning confine a service to a few adjacent CPUs (taskset -c 4-7, a cpuset
# cgroup's cpuset.cpus); pairs whose crashes all fit in this many adjacent CPUs are "confined".
CONFINED_SPAN = 4
# Rule 3b: a service confined (allowed set smaller than the host) on at least this share of
# at least this many hosts that report both facts is taken as confined where they are missing.
CONFINED_FACT_SHARE = 0.9
CONFINED_FACT_HOSTS = 3
# Rule 3c: hosts of at least this many CPUs have NUMA halves; a pair needs this many crashes
# off its busiest CPU, all in one half, to look bound to it.
NUMA_MIN_CPUS = 16
NUMA_MIN_SPREAD = 10
# Threads per physical core assumed when cores are known (x86 SMT: 2).
SMT_WAYS = 2


@dataclass(frozen=True, slots=True, eq=False)
class Placement:
    """Per crash ``cell`` (the CPU, or physical core, it counts on in its host's test; ``-1``
    none); per host ``cells`` (how many cells the null law is uniform over), ``core_level``
    (cells are physical cores), ``cells_source`` (0 allowed set, 1 host's online CPUs, 2 the
    host's own largest CPU index + 1, 3 ``default_cpus``, 4 a NUMA half, inferred by rule 3c,
    -1 no crash with a CPU), and the
    counts of crashes that lost their CPU: ``pinned`` (allowed set of one CPU), ``inferred``
    (rule 3), ``other_sets`` (outside the host's stratum). ``pinned_services`` names the
    services rule 3 found pinned."""

    cell: NDArray[np.int32]
    cells: I64
    core_level: B
    cells_source: I64
    pinned: I64
    inferred: I64
    other_sets: I64
    pinned_services: tuple[int, ...]
    allowed_size: NDArray[np.int32]  # per crash, 0 unknown


def place_crashes(
    *,
    host: NDArray[Any],
    cpu: NDArray[Any],
    service: NDArray[Any],
    n_hosts: int,
    host_cpus: NDArray[Any] | None = None,
    cpus_allowed: NDArray[Any] | None = None,
    cpus_allowed_sets: tuple[str, ...] = (),
    cpu_core: NDArray[Any] | None = None,
    default_cpus: int = 0,
) -> Placement:
    """Apply the rules of the module docstring (arrays per crash, ``host_cpus`` per host)."""
    # the columns as narrow as they came (int32 codes and CPUs: ten million crashes)
    h = np.asarray(host)
    c = np.asarray(cpu)
    n = h.size
    given = np.zeros(n_hosts, dtype=np.int64)
    if host_cpus is not None:
        hc = np.asarray(host_cpus, dtype=np.int64)
        given[: min(hc.size, n_hosts)] = hc[:n_hosts]
    seen = np.zeros(n_hosts, dtype=np.int64)  # largest CPU index on the host + 1
    known = c >= 0
    if known.any():
        # (values of the target's dtype: NumPy's fast path for ufunc.at; narrow CPU codes took
        # the slow one, 0.5 s at ten million crashes)
        np.maximum.at(seen, h[known], c[known].astype(np.int64) + 1)

    # rule 1: the allowed set's size per crash (0 unknown)
    sizes = np.array([cpu_list_size(s) for s in cpus_allowed_sets] + [0], dtype=np.int32)
    code = np.full(n, -1, dtype=np.int32)
    if cpus_allowed is not None:
        code = np.asarray(cpus_allowed)
    size = sizes[code]  # code -1 picks the trailing 0
    pinned_crash = known & (size == 1)
    usable = known & ~pinned_crash

    # rule 3: services pinned somewhere, seen without the fact
    svc = np.asarray(service)
    unknown_set = usable & (code < 0)
    inferred_crash, pinned_services, pair_cpus = _inferred_pinning(
        h, c, svc, unknown_set, n_hosts, np.maximum(np.where(given > 0, given, seen), 1)
    )
    # rule 3b: services the hosts that say so show confined, where the fact is missing
    inferred_crash |= unknown_set & _confined_by_facts(h, svc, size, given, n_hosts)[svc]
    usable &= ~inferred_crash
    # rule 3c: a service bound to one NUMA socket without the fact: its crashes get that half
    # of the host as their allowed set (codes after the recorded sets')
    half_code, half_sizes = _numa_halves(
        pair_cpus, usable, np.where(given > 0, given, seen), sizes.size - 1, n
    )
    n_recorded = sizes.size - 1
    if half_sizes.size:
        sizes = np.r_[sizes[:-1], half_sizes, 0].astype(np.int32)
        code = np.where(half_code >= 0, half_code, code)
        size = sizes[code]

    # rule 2: each host's stratum, the allowed set (or "unknown") most of its usable crashes
    # share; ties go to a known set, then to the lower code
    stratum = np.full(n_hosts, -2, dtype=np.int64)
    if usable.any():
        width = sizes.size  # every code, and -1 shifted to 0
        g = Groups.of(pair_key(h[usable], code[usable] + 1, width))
        g_host = g.keys // width
        g_code = g.keys % width - 1
        order = np.lexsort((g_code, g_code < 0, -g.counts, g_host))
        lead = order[np.r_[True, g_host[order][1:] != g_host[order][:-1]]]
        stratum[g_host[lead]] = g_code[lead]
    in_stratum = usable & (code == stratum[h])
    other = usable & ~in_stratum

    # cells per host, and where the count came from
    strat = stratum.copy()
    set_size = np.where(strat >= 0, sizes[np.maximum(strat, 0)], 0)
    source = np.full(n_hosts, -1, dtype=np.int64)
    cells = np.zeros(n_hosts, dtype=np.int64)
    has = strat > -2
    from_set = has & (set_size > 0)
    from_host = has & ~from_set & (given > 0)
    from_default = has & ~from_set & ~from_host & (default_cpus > 0)
    from_seen = has & ~from_set & ~from_host & ~from_default
    cells[from_set] = set_size[from_set]
    # an allowed set cannot be larger than the host (a stale fact): take the smaller
    cap = from_set & (given > 0)
    cells[cap] = np.minimum(cells[cap], given[cap])
    cells[from_host] = given[from_host]
    cells[from_default] = np.maximum(default_cpus, seen[from_default])
    # A count guessed from the host's own crashes is rounded down to 2^j or 1.5 * 2^j (still a
    # lower bound, hence conservative): hosts without facts otherwise bring hundreds of distinct
    # counts, each its own largest-cell law to compute.
    cells[from_seen] = _round_down(seen[from_seen])
    source[from_set] = np.where(strat[from_set] >= n_recorded, 4, 0)
    source[from_host] = 1
    source[from_seen] = 2
    source[from_default] = 3

    # rule 4: physical cores where known
    cell = np.where(in_stratum, c, -1)
    core_level = np.zeros(n_hosts, dtype=bool)
    if cpu_core is not None:
        core = np.asarray(cpu_core, dtype=np.int64)
        with_core = in_stratum & (core >= 0)
        core_level[np.unique(h[with_core])] = True
        # A host whose crashes show more distinct cores than floor(a / 2) does not pair its
        # CPUs two to a core (no SMT, or an odd set): its cores are not the cells the law
        # counts (a 2-CPU host without SMT, two crashes on cores 0 and 1, was tested over one
        # cell and got p = 0; bench/fleet_adversary.py, thread-per-core), so it is tested
        # over its logical CPUs, the exact law of its allowed set.
        if with_core.any():
            hc = np.unique(pair_key(h[with_core], core[with_core], int(core.max()) + 1))
            distinct = np.bincount(hc // (int(core.max()) + 1), minlength=n_hosts)
            core_level &= distinct <= cells // SMT_WAYS
            with_core &= core_level[h]
        # crashes of such hosts without the core: the core another crash of the host on the
        # same CPU reported, else no cell
        mapped = _core_of_cpu(h, c, core, with_core, in_stratum & core_level[h] & (core < 0))
        on_core = in_stratum & core_level[h]
        cell = np.where(on_core, np.where(core >= 0, core, mapped), cell)
        cells = np.where(core_level, cells // SMT_WAYS, cells)
    return Placement(
        cell=cell.astype(np.int32, copy=False),  # kept with the analysis: 40 MB at 1e7
        cells=np.maximum(cells, 1),
        core_level=core_level,
        cells_source=source,
        pinned=np.bincount(h[pinned_crash], minlength=n_hosts).astype(np.int64),
        inferred=np.bincount(h[inferred_crash], minlength=n_hosts).astype(np.int64),
        other_sets=np.bincount(h[other], minlength=n_hosts).astype(np.int64),
        pinned_services=pinned_services,
        allowed_size=size,
    )


def _round_down(count: I64) -> I64:
    """The largest of 1, 2, 3, 4, 6, 8, 12, 16, 24, ... not above ``count`` (``count >= 1``)."""
    c = np.maximum(count, 1)
    power = np.left_shift(1, np.floor(np.log2(c)).astype(np.int64))
    out: I64 = np.where(c >= power + power // 2, power + power // 2, power)
    return out


def _core_of_cpu(h: I64, c: I64, core: I64, with_core: B, need: B) -> I64:
    """For crashes in ``need``: the core another crash of the same host and CPU reported."""
    out = np.full(h.size, -1, dtype=np.int64)
    if not need.any() or not with_core.any():
        return out
    width = int(c.max()) + 1
    known_key = pair_key(h[with_core], c[with_core], width)
    order = radix_argsort(known_key)
    keys = known_key[order]
    want = pair_key(h[need], c[need], width)
    pos = np.clip(np.searchsorted(keys, want), 0, keys.size - 1)
    hit = keys[pos] == want
    vals = core[with_core][order][pos]
    out[np.flatnonzero(need)[hit]] = vals[hit]
    return out


@dataclass(frozen=True, slots=True, eq=False)
class _PairCpus:
    """Crashes without an allowed set grouped by (service, host): ``pick`` the crashes (indices),
    ``groups`` over them, ``cpu`` theirs and ``top`` each group's most crashes on one CPU."""

    pick: I64
    groups: Groups
    cpu: I64
    top: I64


def _inferred_pinning(
    h: I64, c: I64, svc: I64, sel: B, n_hosts: int, cells: I64
) -> tuple[B, tuple[int, ...], _PairCpus | None]:
    """Rule 3: crashes of confined-looking (host, service) pairs of services confined
    somewhere (pinned, or in a small cpuset): a pair is confined-looking when its busiest
    ``CONFINED_SPAN`` adjacent CPUs hold all of its crashes, or all but a quarter once it has
    four (:func:`_confined_need`); the crashes in that window lose their CPU, the others keep
    it."""
    drop = np.zeros(h.size, dtype=bool)
    pick = sel & (svc >= 0)
    if not pick.any():
        return drop, (), None
    n_svc = int(svc[pick].max()) + 1
    g = Groups.of(pair_key(svc[pick], h[pick], n_hosts))
    cp = c[pick].astype(np.int64)
    best, start, top = _busiest_window(g, cp, CONFINED_SPAN)
    stats = _PairCpus(np.flatnonzero(pick), g, cp, top)
    need = _confined_need(g.counts)
    narrow = best >= need
    g_svc = g.keys // n_hosts
    g_host = g.keys % n_hosts
    multi = g.counts >= 2
    observed = np.bincount(g_svc[multi & narrow], minlength=n_svc)
    chance = np.where(multi, _window_chance(g.counts, need, cells[g_host], CONFINED_SPAN), 0.0)
    expected = np.bincount(g_svc, weights=chance, minlength=n_svc)
    p = poisson_upper(observed, expected)
    confined = (observed >= PINNED_MIN_HOSTS) & (p <= PINNED_ALPHA)
    if not confined.any():
        return drop, (), stats
    bad_pair = (confined[g_svc] & narrow)[g.inverse]
    lo = start[g.inverse]
    inside = bad_pair & (cp >= lo) & (cp < lo + CONFINED_SPAN)
    drop[stats.pick[inside]] = True
    return drop, tuple(int(s) for s in np.flatnonzero(confined)), stats


def _confined_by_facts(
    h: I64, svc: NDArray[Any], size: NDArray[Any], given: I64, n_hosts: int
) -> B:
    """Rule 3b, per service code (plus a trailing ``False`` for unknown, index ``-1``): on at
    least ``CONFINED_FACT_HOSTS`` hosts its crashes report an allowed set and a host CPU count,
    and on at least ``CONFINED_FACT_SHARE`` of them every such crash's set is smaller than the
    host. Such a service runs in a cpuset (a Kubernetes CPU manager's, a taskset); on a host
    whose crashes of it do not say which, its crashes ran under a set of their own, not the
    host's: rule 2 takes their CPU, as for any crash outside the host's stratum (valid: which
    crashes lose their CPU depends on the service and the facts only, never on the CPU). A
    cpuset of 5-8 CPUs is wider than rule 3's window, and one the CPU manager moved mid-month
    is two windows: a busy service in one piled up on its few CPUs tested against the whole
    host (``bench/fleet_adversary.py``, *cpusets*)."""
    n_svc = int(svc.max()) + 1 if svc.size else 0
    out = np.zeros(n_svc + 1, dtype=bool)
    told = (size > 0) & (svc >= 0) & (given[h] > 0)
    if not told.any():
        return out
    g = Groups.of(pair_key(svc[told], h[told], n_hosts))
    wide = g.count_where(size[told] >= given[h[told]]) > 0  # some crash ran host-wide
    g_svc = g.keys // n_hosts
    hosts = np.bincount(g_svc, minlength=n_svc)
    narrow = np.bincount(g_svc[~wide], minlength=n_svc)
    out[:n_svc] = (hosts >= CONFINED_FACT_HOSTS) & (narrow >= CONFINED_FACT_SHARE * hosts)
    return out


def _numa_halves(
    stats: _PairCpus | None, keep: B, host_cpus: I64, first_code: int, n: int
) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
    """Rule 3c: per crash (``n``), the code of the NUMA half its (host, service) pair is bound
    to (``-1`` none; only crashes in ``keep`` get one), and the sizes of the new codes. A pair
    (rule 3's groups) is bound when all its crashes sit in one half of a host of at least
    ``NUMA_MIN_CPUS`` (a multiple of 4): the lower or upper half (sockets numbered first) or
    quarters 0 and 2 or 1 and 3 (each socket's cores, then their SMT siblings), with at least
    ``NUMA_MIN_SPREAD`` of them off its busiest CPU. Uniform over the host, that is at most
    ``4 * 2^-10`` = 0.4 % likely, and the busiest CPU aside a faulty core's pile-up cannot
    make it. A service bound to one socket (``numactl --cpunodebind``, a NUMA-aware scheduler)
    runs on half the cells; tested over all of them a busy one piled up
    (``bench/fleet_adversary.py``, *numa*), and rule 3's window is 4 CPUs."""
    out = np.full(n, -1, dtype=np.int32)
    none = np.zeros(0, dtype=np.int32)
    if stats is None:
        return out, none
    g, cp = stats.groups, stats.cpu
    g_host = g.keys % host_cpus.size
    big = host_cpus[g_host]
    able = (big >= NUMA_MIN_CPUS) & (big % 4 == 0) & (g.counts - stats.top >= NUMA_MIN_SPREAD)
    if not able.any():
        return out, none
    mine = able[g.inverse]
    inv, cpu = g.inverse[mine], cp[mine]
    quarter = np.minimum((cpu * 4) // big[inv], 3)
    halves = (quarter < 2, quarter >= 2, quarter % 2 == 0, quarter % 2 == 1)
    which = np.full(len(g), -1, dtype=np.int64)
    for j in range(len(halves) - 1, -1, -1):  # the first that holds them all wins
        inside = np.bincount(inv[halves[j]], minlength=len(g))
        which[able & (inside == g.counts)] = j
    bound = (which[g.inverse] >= 0) & keep[stats.pick]
    if not bound.any():
        return out, none
    key = big[g.inverse][bound] * 4 + which[g.inverse][bound]
    kinds, idx = np.unique(key, return_inverse=True)
    out[stats.pick[bound]] = (first_code + idx).astype(np.int32)
    return out, (kinds // 4 // 2).astype(np.int32)


def _confined_need(k: I64) -> I64:
    """How many of a pair's ``k`` crashes its busiest window must hold to look confined: all
    of 2 or 3, all but a quarter of more. A pinned service whose CPU went offline for a while
    (hotplug, a resized VM: the kernel breaks the affinity) leaves a few crashes elsewhere,
    and required to fit all in one window, such a pair kept its CPU and piled up on it
    (bench/fleet_adversary.py, *recall*: five of the healthy hosts it flagged)."""
    out: I64 = k - k // 4
    return out


def _busiest_window(g: Groups, cpu: I64, w: int) -> tuple[I64, I64, I64]:
    """Per group: the most crashes within ``w`` adjacent CPUs, the lowest CPU of that window
    (the first such window), and the most crashes on one CPU."""
    width = int(cpu.max()) + w + 1 if cpu.size else 1
    key = g.inverse * width + cpu
    order = radix_argsort(key)
    sk = key[order]
    # crashes at or after each one in its window [cpu, cpu + w) of the same group
    count = np.searchsorted(sk, sk + w, side="left") - np.arange(sk.size)
    grp = g.inverse[order]
    best = np.zeros(len(g), dtype=np.int64)
    np.maximum.at(best, grp, count)
    # the first crash (lowest CPU) whose window reaches the group's best
    at = count == best[grp]
    start = np.full(len(g), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(start, grp[at], cpu[order][at])
    # the busiest single CPU: the longest run of equal keys (rule 3c)
    top = np.zeros(len(g), dtype=np.int64)
    if sk.size:
        run = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
        np.maximum.at(top, grp[run], np.diff(np.r_[run, sk.size]))
    return best, start, top


def _window_chance(k: I64, need: I64, cells: I64, w: int) -> NDArray[np.float64]:
    """``P(some w adjacent CPUs hold >= need of k uniform CPUs)``: exact when ``need == k``
    (:func:`_range_within`), else the union bound over the ``C - w + 1`` windows (larger than
    the chance, so the fleet-level test stays conservative)."""
    exact = _range_within(k, cells, w)
    cc = np.maximum(cells.astype(np.float64), 1.0)
    ww = np.minimum(float(w), cc)
    bound = np.minimum(1.0, (cc - ww + 1.0) * binomial_upper(need, k, ww / cc))
    out: NDArray[np.float64] = np.where(need >= k, exact, bound)
    return out


def _range_within(k: I64, cells: I64, w: int) -> NDArray[np.float64]:
    """``P(max - min < w)`` for ``k`` CPUs drawn uniformly from ``cells``: the sequences whose
    smallest value is ``m`` and that fit in ``[m, m + w)``, summed over ``m``,
    ``((C - w + 1) w^k - (C - w) (w - 1)^k) / C^k`` (1 when ``C <= w``)."""
    kk = k.astype(np.float64)
    cc = np.maximum(cells.astype(np.float64), 1.0)
    ww = np.minimum(float(w), cc)
    with np.errstate(over="ignore", invalid="ignore"):
        out = (cc - ww + 1.0) * (ww / cc) ** kk - (cc - ww) * ((ww - 1.0) / cc) ** kk
    res: NDArray[np.float64] = np.clip(np.nan_to_num(out, nan=1.0), 0.0, 1.0)
    return res
