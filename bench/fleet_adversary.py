"""An independent adversary of the host verdicts (issue 9): healthy fleets shaped like production,
written as crash-facts files and judged by the public command, as a user would run it.

The project's simulator (``bench/fleet_sim``) was written by the same hands as the detector;
this generator shares no code with it (it imports nothing from ``bench.fleet_sim`` and nothing
from ``corecensus``: it writes files and runs ``python -m corecensus analyze --crashes FILE
--exposure CSV --json``). Every fleet is 10,000 hosts x 30 days with no faulty CPU (or, in
*recall*, ten planted faults), and every situation adds its own mess on top of a messy base:

* **base** (in every situation): hosts of 2 to 384 logical CPUs, SMT enumerated as ``i, i + n/2``
  (most) or ``2i, 2i + 1``; three agent generations (no host facts / online CPUs only / online
  CPUs, the allowed list and the physical core), rows missing ``cpu``, ``cpus_allowed`` or
  ``host_cpus`` at random; a main service plus two sidecars per host; per-host crash rates with
  a heavy tail (lognormal frailty and 0.5 % of hosts with 30-300x the median on one service from
  a bad config); signatures shared by services (``abort``) and per service, some of them wild-
  pointer bugs whose crashes carry hardware-flavoured anomalies; version rollouts; diurnal
  load; duplicate rows (re-uploads, some with the time a few seconds off); rows out of time
  order and host clocks off by hours; 3 % of hosts without exposure rows.
* **irq-skew**: on 30 % of hosts ordinary crashes are 1.5-3x more likely on CPU 0.
* **cpusets**: a Kubernetes-like service in 2-8-CPU cpusets on 20 % of hosts; the CPU manager
  moves half of them to other CPUs mid-month (``cpus_allowed`` differs between crashes).
* **numa**: the main service bound to one socket's CPUs on 40 % of hosts of 32 CPUs or more.
* **pinned-multi**: a packet poller pinned to one CPU on 25 % of hosts, a 2-CPU-set exporter on
  30 %, each with its own bug; the allowed list known only where the agent is new.
* **hotplug**: 5 % of hosts run half their CPUs offline for 3-15 days; 2 % are resized mid-month.
* **thread-per-core**: a Seastar-like database (one thread pinned per CPU, the process's list
  wide) on 20 % of hosts whose shard 0 does 3-5x the work.
* **loops**: 20 crash loops of 10-500 crashes in 5-60 minutes over 1-3 CPUs; 10 hosts with a
  cron job that crash-loops every night (its first crash on the CPU the idle host's scheduler
  favours, 70 %); 5 hosts with a nightly cron job that dies once at start (no loop), on that CPU
  70 % of nights; 3 hosts whose bad unit restarts every hour and dies 3-5 times each time.
* **sw-anomaly**: version 7.3 of ``ledger`` has a stack-smash bug (``sp_off_by_8`` on 70 % of
  its crashes) on every host that runs it; the pinned poller has a wild-pointer bug
  (``fault_address_mismatch`` on 60 %), so its anomalies sit on one CPU per host.
* **recall**: all of the above at once, plus ten faulty hosts
  (one bad physical core; 0.05-0.5 faulty crashes a day from a random onset; half of them with a
  hardware-flavoured anomaly; both SMT siblings fail).

Counted per fleet: hosts called ``hardware-suspect`` that have no planted fault (false flags per
10,000 hosts per 30 days), populations called ``hardware-suspect`` that are software (fewer than
half of their crashes faulty), loop hosts flagged as hardware, loops reported as ``crash-loop``,
and recall by the number of faulty crashes. Every false flag is listed with its host's
situation tags and the JSON's evidence (``--details``).

Run: ``python bench/fleet_adversary.py`` (``--seeds N``, ``--situations a,b``, ``--out FILE``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HOSTS = 10_000
DAYS = 30
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
T0_US = 1_790_812_800_000_000  # 2026-10-01T00:00:00Z
SPAN_US = DAYS * DAY_US
REPO = Path(__file__).resolve().parent.parent

CPU_COUNTS = np.array([2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384])
CPU_WEIGHTS = np.array([3, 6, 10, 14, 6, 14, 10, 12, 8, 8, 4, 3, 2], dtype=float)
HW_ANOMALIES = (
    "sp_off_by_8",
    "bit_flip_candidate",
    "fault_address_mismatch",
    "pc_not_executable",
    "sigbus_memory_error",
)
SW_ANOMALIES = ("pc_zero", "returned_to_bad_address", "sp_outside_stack")
SHARED_SIGNATURES = (
    "raise | abort | __libc_message",
    "malloc_consolidate | _int_free",
    "std::terminate",
)
BINS = ((1, 2), (3, 4), (5, 9), (10, 10**9))
BIN_NAMES = ("1-2", "3-4", "5-9", "10+")


@dataclass(frozen=True, slots=True)
class Situation:
    name: str
    description: str
    irq_skew: float = 0.0  # share of hosts with ordinary crashes skewed to CPU 0
    cpusets: float = 0.0  # share of hosts with a k8s service in a 2-8-CPU cpuset
    numa: float = 0.0  # share of >= 32-CPU hosts whose main service is bound to one socket
    pinned_multi: bool = False
    hotplug: bool = False
    thread_per_core: float = 0.0
    loops: bool = False
    sw_anomaly: bool = False
    faulty: int = 0


SITUATIONS = {
    s.name: s
    for s in (
        Situation("base", "the messy base alone (see the module docstring)"),
        Situation(
            "irq-skew",
            "base; ordinary crashes 1.5-3x likelier on CPU 0 on 30 % of hosts",
            irq_skew=0.3,
        ),
        Situation(
            "cpusets",
            "base; a k8s service in 2-8-CPU cpusets on 20 % of hosts, half moved mid-month",
            cpusets=0.2,
        ),
        Situation(
            "numa",
            "base; the main service bound to one socket on 40 % of hosts of 32+ CPUs",
            numa=0.4,
        ),
        Situation(
            "pinned-multi",
            "base; a poller pinned to one CPU (25 %), an exporter in a 2-CPU set (30 %)",
            pinned_multi=True,
        ),
        Situation(
            "hotplug",
            "base; half the CPUs offline for 3-15 days on 5 %, resized mid-month on 2 %",
            hotplug=True,
        ),
        Situation(
            "thread-per-core",
            "base; a thread-per-core database with a 3-5x busier shard 0 on 20 %",
            thread_per_core=0.2,
        ),
        Situation(
            "loops",
            "base; 20 loops over 1-3 CPUs, 10 nightly cron loops, 5 nightly single cron crashes, 3 hourly restart loops",
            loops=True,
        ),
        Situation(
            "sw-anomaly",
            "base; sp_off_by_8 on 70 % of ledger 7.3's crashes, a pinned poller's wild pointer",
            pinned_multi=True,
            sw_anomaly=True,
        ),
    )
}
# all of the above at once, and ten faulty hosts: its false flags are the healthy hosts flagged
SITUATIONS["recall"] = Situation(
    "recall",
    "all of the above at once; 10 faulty hosts (one bad physical core)",
    irq_skew=0.3,
    cpusets=0.2,
    numa=0.4,
    pinned_multi=True,
    hotplug=True,
    thread_per_core=0.2,
    loops=True,
    sw_anomaly=True,
    faulty=10,
)


# --------------------------------------------------------------------------- the fleet


@dataclass
class Service:
    name: str
    rate: float  # crashes per process-hour
    signatures: list[str]
    weights: np.ndarray
    hw_prop: np.ndarray  # per signature: share of crashes with a hardware-flavoured anomaly


@dataclass
class Pair:
    """One service on one host: its processes, its allowed CPUs (one or two periods), rate
    multiplier, versions and how its crashes pick a CPU."""

    host: int
    service: str
    processes: float
    mult: float
    sets: list[tuple[int, np.ndarray]]  # (from time_us, allowed CPUs), in time order
    versions: list[tuple[int, str]]  # (from time_us, version)
    shard0: float = 1.0  # thread-per-core: weight of the lowest allowed CPU
    tags: set[str] = field(default_factory=set)


@dataclass
class Host:
    cpus: int
    smt: str  # "split", "adjacent" or "" (no SMT)
    agent: int  # 0 old (no facts), 1 online CPUs, 2 + allowed list and physical core
    model: str
    microcode: str
    kernel: str
    skew: float = 1.0  # weight of CPU 0 for ordinary crashes
    offline: tuple[int, int] | None = None  # half the CPUs offline in [start, end)
    resized_at: int | None = None  # ran on half the CPUs before this time
    clock_us: int = 0
    exposure: bool = True
    tags: set[str] = field(default_factory=set)


@dataclass
class Fleet:
    hosts: list[Host]
    pairs: list[Pair]
    rows: list[tuple]
    faulty: dict[int, int]  # host -> faulty crashes
    faulty_pops: dict[str, int]
    loop_hosts: set[int]


def _services(rng: np.random.Generator) -> dict[str, Service]:
    out: dict[str, Service] = {}
    spec = {
        "api": 3e-4, "search": 3e-4, "ledger": 3e-4, "cache": 2e-4, "stream": 3e-4,
        "db": 3e-4, "infer": 4e-4, "log-shipper": 1.2e-4, "metrics-agent": 0.8e-4,
        "kube-job": 4e-4, "nic-poller": 1.5e-3, "exporter": 1e-3, "report-cron": 1e-4,
    }  # fmt: skip
    for name, rate in spec.items():
        k = int(rng.integers(6, 16))
        own = [f"{name}::{w}" for w in _words(rng, k)]
        sigs = list(SHARED_SIGNATURES) + own
        w = np.r_[np.array([0.12, 0.08, 0.05]), 0.75 * _zipf(k, 1.2)]
        prop = np.full(len(sigs), 0.01)
        wild = rng.random(len(sigs)) < 0.15
        prop[wild] = rng.uniform(0.1, 0.4, int(wild.sum()))
        out[name] = Service(name, rate, sigs, w / w.sum(), prop)
    return out


def _words(rng: np.random.Generator, k: int) -> list[str]:
    verbs = ("Parse", "Flush", "Encode", "Compact", "Lookup", "Merge", "Send", "Decode", "Evict")
    nouns = ("Request", "Block", "Index", "Frame", "Batch", "Page", "Slot", "Key", "Record")
    return [
        f"{verbs[rng.integers(len(verbs))]}{nouns[rng.integers(len(nouns))]}_{i}" for i in range(k)
    ]


def _zipf(k: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, k + 1) ** s
    return w / w.sum()


def _socket(n: int, smt: str, which: int) -> np.ndarray:
    """One socket's logical CPUs of a two-socket host (Linux numbers sockets' cores first,
    then their SMT siblings, under "split" enumeration)."""
    if smt == "split":
        q = n // 4
        base = np.r_[np.arange(q), n // 2 + np.arange(q)]
        return base + which * q
    half = n // 2
    return np.arange(half) + which * half


def _core_of(host: Host, cpu: int) -> int:
    if host.smt == "split":
        return cpu % (host.cpus // 2)
    if host.smt == "adjacent":
        return cpu // 2
    return cpu


def _siblings(host: Host, core: int) -> list[int]:
    if host.smt == "split":
        return [core, core + host.cpus // 2]
    if host.smt == "adjacent":
        return [2 * core, 2 * core + 1]
    return [core]


def _cpu_list(cpus: np.ndarray) -> str:
    """``Cpus_allowed_list`` spelling: sorted ranges."""
    c = np.unique(cpus)
    parts = []
    start = prev = int(c[0])
    for x in [*c[1:].tolist(), None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        parts.append(f"{start}-{prev}" if prev > start else f"{start}")
        if x is not None:
            start = prev = x
    return ",".join(parts)


def build_fleet(seed: int, sit: Situation) -> Fleet:
    rng = np.random.default_rng([seed, 0xAD5E])
    svc = _services(rng)
    hosts: list[Host] = []
    counts = rng.choice(CPU_COUNTS, size=HOSTS, p=CPU_WEIGHTS / CPU_WEIGHTS.sum())
    models = ("icx-8380", "spr-8480", "milan-7763", "genoa-9654", "skx-6148")
    for i in range(HOSTS):
        n = int(counts[i])
        smt = (
            "" if n < 4 or rng.random() < 0.15 else ("split" if rng.random() < 0.75 else "adjacent")
        )
        agent = int(rng.choice(3, p=[0.25, 0.35, 0.40]))
        m = int(rng.integers(len(models)))
        h = Host(
            cpus=n,
            smt=smt,
            agent=agent,
            model=models[m],
            microcode=f"0x{0x2B000100 + m * 16 + int(rng.integers(2)):x}",
            kernel=("6.1.112", "6.6.58", "5.15.0-124")[int(rng.integers(3))],
            exposure=rng.random() >= 0.03,
        )
        if rng.random() < 0.01:
            h.clock_us = int(rng.integers(-6, 7)) * HOUR_US + int(rng.integers(-90, 90)) * 1_000_000
        if sit.irq_skew and rng.random() < sit.irq_skew:
            h.skew = float(rng.uniform(1.5, 3.0))
            h.tags.add("irq-skew")
        if sit.hotplug:
            u = rng.random()
            if u < 0.05 and n >= 4:
                a = int(rng.uniform(0, DAYS - 3) * DAY_US)
                h.offline = (a, min(SPAN_US, a + int(rng.uniform(3, 15) * DAY_US)))
                h.tags.add("hotplug")
            elif u < 0.07 and n >= 4:
                h.resized_at = int(rng.uniform(3, 27) * DAY_US)
                h.tags.add("resized")
        hosts.append(h)

    # frailty: lognormal (median 1) and a bad-config tail on one service
    frail = rng.lognormal(-0.5, 1.0, HOSTS)  # mean 1
    pairs: list[Pair] = []
    mains = ["api", "search", "ledger", "cache", "stream", "db", "infer"]
    rollout: dict[str, tuple[int, float]] = {}
    for name in [*mains, "log-shipper", "metrics-agent", "kube-job", "nic-poller", "exporter"]:
        if rng.random() < 0.5:
            rollout[name] = (int(rng.uniform(5, 25) * DAY_US), float(rng.uniform(0.3, 0.9)))
    ledger_bug_day = int(10 * DAY_US)
    for i, h in enumerate(hosts):
        n = h.cpus
        every = np.arange(n)
        main = mains[int(rng.integers(len(mains)))]
        tpc = bool(sit.thread_per_core) and rng.random() < sit.thread_per_core
        if tpc:
            main = "db"
        procs = float(np.clip(rng.lognormal(np.log(2 + n / 8), 0.7), 1, 256))
        mult = float(frail[i])
        p_main = Pair(i, main, procs, mult, [(0, every)], _versions(rng, main, rollout))
        if main == "ledger" and sit.sw_anomaly and rng.random() < 0.5:
            p_main.versions = [
                (0, "7.2.9"),
                (ledger_bug_day + int(rng.uniform(0, 48) * HOUR_US), "7.3.0"),
            ]
            p_main.tags.add("ledger-7.3")
        if sit.numa and n >= 32 and rng.random() < sit.numa:
            p_main.sets = [(0, _socket(n, h.smt or "adjacent", int(rng.integers(2))))]
            p_main.tags.add("numa")
        if tpc:
            p_main.shard0 = float(rng.uniform(3, 5))
            p_main.tags.add("thread-per-core")
        host_pairs = [p_main]
        for side in ("log-shipper", "metrics-agent"):
            host_pairs.append(Pair(i, side, 1.0, mult, [(0, every)], _versions(rng, side, rollout)))
        if sit.cpusets and rng.random() < sit.cpusets and n >= 4:
            w = int(rng.integers(2, min(8, n // 2) + 1))
            start = int(rng.integers(0, n - w + 1))
            sets = [(0, np.arange(start, start + w))]
            tags = {"cpuset"}
            if rng.random() < 0.5:
                s2 = int(rng.integers(0, n - w + 1))
                sets.append((int(rng.uniform(5, 25) * DAY_US), np.arange(s2, s2 + w)))
                tags.add("cpuset-moved")
            p = Pair(
                i,
                "kube-job",
                float(rng.integers(1, 4)),
                mult,
                sets,
                _versions(rng, "kube-job", rollout),
            )
            p.tags |= tags
            host_pairs.append(p)
        if sit.pinned_multi and n >= 4:
            if rng.random() < 0.25:
                cpu = int(rng.choice([1, n - 1, int(rng.integers(n))]))
                p = Pair(
                    i,
                    "nic-poller",
                    1.0,
                    mult,
                    [(0, np.array([cpu]))],
                    _versions(rng, "nic-poller", rollout),
                )
                p.tags.add("pinned")
                host_pairs.append(p)
            if rng.random() < 0.3:
                a = int(rng.integers(0, n - 1))
                p = Pair(
                    i,
                    "exporter",
                    1.0,
                    mult,
                    [(0, np.array([a, a + 1]))],
                    _versions(rng, "exporter", rollout),
                )
                p.tags.add("2-cpu-set")
                host_pairs.append(p)
        if rng.random() < 0.005:
            bad = host_pairs[int(rng.integers(len(host_pairs)))]
            bad.mult = float(rng.uniform(30, 300))  # x the median host, whatever its frailty
            bad.tags.add("bad-config")
        pairs.extend(host_pairs)

    rows: list[tuple] = []
    for p in pairs:
        _crashes_of(rng, hosts[p.host], p, svc[p.service], sit, rows)
    faulty: dict[int, int] = {}
    loop_hosts: set[int] = set()
    if sit.sw_anomaly:
        _sw_anomaly(rng, hosts, pairs, sit, rows)
    if sit.loops:
        loop_hosts = _loops(rng, hosts, pairs, svc, rows)
    if sit.faulty:
        faulty = _faults(rng, hosts, pairs, svc, sit.faulty, rows)
    faulty_pops: dict[str, int] = {}
    for r in rows:
        if r[-1]:
            faulty_pops[r[6]] = faulty_pops.get(r[6], 0) + 1
    return Fleet(hosts, pairs, rows, faulty, faulty_pops, loop_hosts)


def _versions(
    rng: np.random.Generator, name: str, rollout: dict[str, tuple[int, float]]
) -> list[tuple[int, str]]:
    out = [(0, "1.0")]
    if name in rollout and rng.random() < rollout[name][1]:
        out.append((rollout[name][0] + int(rng.uniform(0, 48) * HOUR_US), "2.0"))
    return out


def _diurnal_times(rng: np.random.Generator, k: int, lo: int = 0, hi: int = SPAN_US) -> np.ndarray:
    """Crash times in [lo, hi): more by day (load), by rejection."""
    out = np.empty(0, dtype=np.int64)
    while out.size < k:
        t = rng.integers(lo, hi, size=2 * (k - out.size) + 4)
        phase = (t % DAY_US) / DAY_US
        keep = rng.random(t.size) < (1 + 0.6 * np.sin(2 * np.pi * (phase - 0.3))) / 1.6
        out = np.r_[out, t[keep]]
    return out[:k]


def _version_at(p: Pair, t: int) -> str:
    v = p.versions[0][1]
    for start, name in p.versions:
        if t >= start:
            v = name
    return v


def _allowed_at(p: Pair, t: int) -> np.ndarray:
    a = p.sets[0][1]
    for start, s in p.sets:
        if t >= start:
            a = s
    return a


def _online(h: Host, t: int) -> int:
    if h.offline and h.offline[0] <= t < h.offline[1]:
        return h.cpus // 2
    if h.resized_at is not None and t < h.resized_at:
        return h.cpus // 2
    return h.cpus


def _pick_cpu(rng: np.random.Generator, h: Host, p: Pair, t: int) -> tuple[int, np.ndarray]:
    allowed = _allowed_at(p, t)
    online = _online(h, t)
    live = allowed[allowed < online]
    if live.size == 0:
        live = allowed % online  # the kernel moves a task off an offlined CPU
    w = np.ones(live.size)
    if h.skew != 1.0:
        w[live == 0] = h.skew
    if p.shard0 != 1.0:
        w[0] *= p.shard0
    cpu = int(live[rng.choice(live.size, p=w / w.sum())]) if live.size > 1 else int(live[0])
    return cpu, allowed


def _row(
    rng: np.random.Generator,
    h: Host,
    hi: int,
    p: Pair,
    t: int,
    cpu: int,
    allowed: np.ndarray,
    sig: str,
    anomalies: str,
    faulty: bool = False,
) -> tuple:
    """One crash-facts row, with the host's facts as its agent generation reports them and the
    random gaps of real data."""
    online = _online(h, t)
    host_cpus = online if h.agent >= 1 and rng.random() >= 0.03 else None
    cpus_allowed = _cpu_list(allowed) if h.agent == 2 and rng.random() >= 0.03 else None
    core = _core_of(h, cpu) if h.agent == 2 else None
    shown_cpu: int | None = cpu
    if rng.random() < 0.03:
        shown_cpu = None
        core = None
    return (
        f"host-{hi:05d}",
        t + T0_US + h.clock_us,
        shown_cpu,
        cpus_allowed,
        host_cpus,
        core,
        sig,
        p.service,
        _version_at(p, t),
        anomalies,
        h.model,
        h.microcode,
        h.kernel,
        faulty,
    )


def _anomaly(rng: np.random.Generator, hw_prop: float) -> str:
    u = rng.random()
    if u < hw_prop:
        return HW_ANOMALIES[int(rng.integers(len(HW_ANOMALIES)))]
    if u < hw_prop + 0.05:
        return SW_ANOMALIES[int(rng.integers(len(SW_ANOMALIES)))]
    return ""


def _crashes_of(
    rng: np.random.Generator, h: Host, p: Pair, s: Service, sit: Situation, rows: list[tuple]
) -> None:
    hours = DAYS * 24.0
    k = int(rng.poisson(s.rate * p.processes * p.mult * hours))
    if not k:
        return
    sig_idx = rng.choice(len(s.signatures), size=k, p=s.weights)
    for t, j in zip(_diurnal_times(rng, k).tolist(), sig_idx.tolist(), strict=True):
        cpu, allowed = _pick_cpu(rng, h, p, t)
        sig = s.signatures[j]
        if _version_at(p, t) == "2.0" and rng.random() < 0.1:
            sig = f"{s.name}::Regression_v2"
        rows.append(
            _row(rng, h, p.host, p, t, cpu, allowed, sig, _anomaly(rng, float(s.hw_prop[j])))
        )


def _sw_anomaly(
    rng: np.random.Generator,
    hosts: list[Host],
    pairs: list[Pair],
    sit: Situation,
    rows: list[tuple],
) -> None:
    """Software bugs whose crashes carry hardware-flavoured register anomalies."""
    for p in pairs:
        h = hosts[p.host]
        if "ledger-7.3" in p.tags:
            start = p.versions[1][0]
            rate = float(rng.lognormal(np.log(0.1), 0.8))  # crashes a day
            k = int(rng.poisson(rate * (SPAN_US - start) / DAY_US))
            for t in _diurnal_times(rng, k, start).tolist():
                cpu, allowed = _pick_cpu(rng, h, p, t)
                a = "sp_off_by_8" if rng.random() < 0.7 else ""
                rows.append(_row(rng, h, p.host, p, t, cpu, allowed, "ledger::Parse | memcpy", a))
            h.tags.add("ledger-7.3")
        if p.service == "nic-poller" and rng.random() < 0.5:
            rate = float(rng.lognormal(np.log(0.08), 0.7))
            k = int(rng.poisson(rate * DAYS))
            for t in _diurnal_times(rng, k).tolist():
                cpu, allowed = _pick_cpu(rng, h, p, t)
                a = "fault_address_mismatch" if rng.random() < 0.6 else ""
                rows.append(
                    _row(
                        rng, h, p.host, p, t, cpu, allowed, "nic-poller::RxBurst | ring_dequeue", a
                    )
                )
            h.tags.add("poller-bug")


def _loops(
    rng: np.random.Generator,
    hosts: list[Host],
    pairs: list[Pair],
    svc: dict[str, Service],
    rows: list[tuple],
) -> set[int]:
    by_host: dict[int, list[Pair]] = {}
    for p in pairs:
        by_host.setdefault(p.host, []).append(p)
    out: set[int] = set()
    chosen = rng.choice(HOSTS, size=38, replace=False).tolist()
    for n, hi in enumerate(chosen):
        h = hosts[hi]
        p = by_host[hi][int(rng.integers(len(by_host[hi])))]
        s = svc[p.service]
        sig = s.signatures[int(rng.choice(len(s.signatures), p=s.weights))]
        allowed = _allowed_at(p, 0)
        fav = rng.choice(allowed, size=min(3, allowed.size), replace=False)
        if n < 20:  # one loop: 10-500 crashes in 5-60 min, over 1-3 CPUs
            k = int(np.exp(rng.uniform(np.log(10), np.log(500))))
            start = int(rng.uniform(0, DAYS - 1) * DAY_US)
            times = np.sort(start + rng.integers(0, int(rng.uniform(5, 60) * 60e6), size=k))
            for t in times.tolist():
                cpu = int(fav[rng.choice(fav.size, p=_share(fav.size))])
                rows.append(_row(rng, h, hi, p, t, cpu, allowed, sig, _anomaly(rng, 0.01)))
            h.tags.add("loop")
        elif n < 30:  # a nightly cron job that crash-loops 5-30 times at 03:00
            cron = Pair(hi, "report-cron", 1.0, 1.0, [(0, np.arange(h.cpus))], [(0, "1.0")])
            sig = "report-cron::Render | png_write_row"
            idle = int(rng.integers(h.cpus))
            for day in range(DAYS):
                if rng.random() < 0.15:
                    continue
                t0 = day * DAY_US + 3 * HOUR_US + int(rng.integers(0, 120)) * 1_000_000
                k = int(rng.integers(5, 31))
                times = t0 + np.sort(rng.integers(0, 120_000_000, size=k))
                for j, t in enumerate(times.tolist()):
                    cpu = idle if (j == 0 and rng.random() < 0.7) else int(rng.integers(h.cpus))
                    rows.append(_row(rng, h, hi, cron, t, cpu, cron.sets[0][1], sig, ""))
            h.tags.add("cron-loop")
        elif n < 35:  # a nightly cron job that dies once at start (no loop at all)
            cron = Pair(hi, "report-cron", 1.0, 1.0, [(0, np.arange(h.cpus))], [(0, "1.0")])
            sig = "report-cron::LoadTemplate | yaml_parse"
            idle = int(rng.integers(h.cpus))
            for day in range(DAYS):
                if rng.random() < 0.3:
                    continue
                t = day * DAY_US + 3 * HOUR_US + int(rng.integers(0, 120)) * 1_000_000
                cpu = idle if rng.random() < 0.7 else int(rng.integers(h.cpus))
                rows.append(_row(rng, h, hi, cron, t, cpu, cron.sets[0][1], sig, ""))
            h.tags.add("cron-single")
            continue  # not a loop
        else:  # a unit restarted every hour by a timer, dying 3-5 times each time
            for hour in range(DAYS * 24):
                t0 = hour * HOUR_US + int(rng.integers(0, 60)) * 1_000_000
                for j in range(int(rng.integers(3, 6))):
                    t = t0 + j * 200_000
                    cpu, _ = _pick_cpu(rng, h, p, t)
                    rows.append(_row(rng, h, hi, p, t, cpu, allowed, sig, ""))
            h.tags.add("hourly-restart")
            continue  # sparse for its own rate: folded, not a loop to report
        out.add(hi)
    return out


def _share(k: int) -> np.ndarray:
    return np.array([0.7, 0.2, 0.1][:k]) / sum([0.7, 0.2, 0.1][:k])


def _faults(
    rng: np.random.Generator,
    hosts: list[Host],
    pairs: list[Pair],
    svc: dict[str, Service],
    count: int,
    rows: list[tuple],
) -> dict[int, int]:
    by_host: dict[int, list[Pair]] = {}
    for p in pairs:
        by_host.setdefault(p.host, []).append(p)
    out: dict[int, int] = {}
    cands = [i for i, h in enumerate(hosts) if h.cpus >= 4]
    for hi in rng.choice(cands, size=count, replace=False).tolist():
        h = hosts[hi]
        core = int(rng.integers(h.cpus // 2 if h.smt else h.cpus))
        bad = _siblings(h, core)
        onset = int(rng.uniform(2, 20) * DAY_US)
        rate = float(rng.choice([0.05, 0.1, 0.2, 0.5]))
        k = int(rng.poisson(rate * (SPAN_US - onset) / DAY_US))
        made = 0
        for t in _diurnal_times(rng, k, onset).tolist():
            # which of the host's services could run on the bad core then
            able = [p for p in by_host[hi] if np.isin(bad, _allowed_at(p, t)).any()]
            if not able:
                continue
            w = np.array([p.processes for p in able])
            p = able[int(rng.choice(len(able), p=w / w.sum()))]
            allowed = _allowed_at(p, t)
            on = [c for c in bad if c in set(allowed.tolist())]
            cpu = (
                int(on[int(rng.integers(len(on)))])
                if rng.random() < 0.85
                else int(rng.choice(allowed))
            )
            s = svc[p.service]
            sig = s.signatures[int(rng.choice(len(s.signatures), p=s.weights))]
            a = HW_ANOMALIES[int(rng.integers(len(HW_ANOMALIES)))] if rng.random() < 0.5 else ""
            rows.append(_row(rng, h, hi, p, t, cpu, allowed, sig, a, faulty=True))
            made += 1
        out[hi] = made
        h.tags.add("FAULTY")
    return out


# --------------------------------------------------------------------------- files


HEADER = (
    "host", "time", "cpu", "cpus_allowed", "host_cpus", "cpu_core", "signature", "service",
    "version", "anomalies", "cpu_model", "microcode", "kernel", "crash_id",
)  # fmt: skip


def write_files(fleet: Fleet, seed: int, directory: Path, parquet: bool) -> tuple[Path, Path]:
    rng = np.random.default_rng([seed, 0xF11E])
    rows = fleet.rows
    # duplicates: 1 % re-uploaded as is, 0.5 % with the time a few seconds off
    n = len(rows)
    dup = rng.choice(n, size=n // 100, replace=False).tolist()
    shifted = rng.choice(n, size=n // 200, replace=False).tolist()
    out = list(rows) + [rows[i] for i in dup]
    out += [
        (*rows[i][:1], rows[i][1] + int(rng.integers(1, 6)) * 1_000_000, *rows[i][2:])
        for i in shifted
    ]
    order = rng.permutation(len(out))  # rows out of time order
    path = directory / "crashes.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for j, i in enumerate(order.tolist()):
            r = out[i]
            w.writerow([("" if v is None else v) for v in r[:13]] + [f"c{j}"])
    crashes = path
    if parquet:
        crashes = directory / "crashes.parquet"
        _to_parquet(path, crashes)
    exposure = directory / "exposure.csv"
    with open(exposure, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["host", "start", "end", "service", "version", "cpu_model", "processes"])
        for p in fleet.pairs:
            h = fleet.hosts[p.host]
            if not h.exposure:
                continue
            bounds = [v[0] for v in p.versions] + [SPAN_US]
            for (start, version), end in zip(p.versions, bounds[1:], strict=True):
                w.writerow(
                    [
                        f"host-{p.host:05d}",
                        _iso(start),
                        _iso(end),
                        p.service,
                        version,
                        h.model,
                        f"{p.processes:.2f}",
                    ]
                )
    return crashes, exposure


def _iso(t: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((T0_US + t) / 1e6))


def _to_parquet(src: Path, dst: Path) -> None:
    """Typed Parquet as a user's warehouse exports it: a timestamp, integer CPU columns."""
    import duckdb

    con = duckdb.connect()
    con.execute(
        f"""COPY (SELECT host, make_timestamp(time) AS time, cpu, cpus_allowed, host_cpus, cpu_core,
              signature, service, version, anomalies, cpu_model, microcode, kernel, crash_id
            FROM read_csv('{src}', header=true, all_varchar=false,
              types={{'time': 'BIGINT', 'cpu': 'INTEGER', 'host_cpus': 'INTEGER',
                      'cpu_core': 'INTEGER', 'cpus_allowed': 'VARCHAR', 'version': 'VARCHAR',
                      'anomalies': 'VARCHAR', 'microcode': 'VARCHAR', 'kernel': 'VARCHAR'}}))
           TO '{dst}' (FORMAT parquet)"""
    )
    con.close()


def run_analyze(crashes: Path, exposure: Path) -> tuple[dict, float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable,
        "-m",
        "corecensus",
        "analyze",
        "--crashes",
        str(crashes),
        "--exposure",
        str(exposure),
        "--json",
    ]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    took = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"analyze failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout), took


# --------------------------------------------------------------------------- scoring


@dataclass
class Stats:
    false_flags: list[int] = field(default_factory=list)
    sw_hardware: int = 0
    sw_total: int = 0
    loops_flagged: int = 0
    loops_reported: int = 0
    loops_total: int = 0
    hits: np.ndarray = field(default_factory=lambda: np.zeros(len(BINS), dtype=int))
    totals: np.ndarray = field(default_factory=lambda: np.zeros(len(BINS), dtype=int))
    seconds: list[float] = field(default_factory=list)
    crashes: list[int] = field(default_factory=list)
    details: list[str] = field(default_factory=list)


def score(report: dict, fleet: Fleet, sit: Situation, seed: int, st: Stats) -> None:
    hw = {h["host"]: h for h in report["hosts"] if h["kind"] == "hardware-suspect"}
    loops = {h["host"] for h in report["hosts"] if h["kind"] == "crash-loop"}
    faulty = {f"host-{i:05d}" for i in fleet.faulty}
    false = sorted(set(hw) - faulty)
    st.false_flags.append(len(false))
    for name in false:
        i = int(name.split("-")[1])
        h = fleet.hosts[i]
        tags = set(h.tags) | {t for p in fleet.pairs if p.host == i for t in p.tags}
        f = hw[name]
        st.details.append(
            f"{sit.name} seed {seed} {name}: {h.cpus} CPUs, smt {h.smt or 'no'}, agent {h.agent}, "
            f"tags {sorted(tags) or '-'}; crashes {f.get('crashes')}, cpu {f.get('cpu')} "
            f"({f.get('cpu_crashes')}), anomalous {f.get('anomalous')} (exp "
            f"{_fmt(f.get('expected_anomalous'))}), p {_fmt(f.get('p_value'))}; "
            + " / ".join(str(r) for r in f.get("reasons", [])[:3])
        )
    for p in report["populations"]:
        faulty_share = fleet.faulty_pops.get(p["id"], 0) / max(int(p["crashes"]), 1)
        if faulty_share >= 0.5:
            continue
        st.sw_total += 1
        if p["verdict"] == "hardware-suspect":
            st.sw_hardware += 1
            st.details.append(
                f"{sit.name} seed {seed} population {p['id']!r} hardware-suspect: "
                + " / ".join(p["evidence"][:2])
            )
    for i in fleet.loop_hosts:
        name = f"host-{i:05d}"
        st.loops_total += 1
        st.loops_flagged += name in hw
        st.loops_reported += name in loops
    for i, k in fleet.faulty.items():
        for b, (lo, hi) in enumerate(BINS):
            if lo <= k <= hi:
                st.totals[b] += 1
                st.hits[b] += f"host-{i:05d}" in hw


def _fmt(x: object) -> str:
    return f"{x:.3g}" if isinstance(x, int | float) else str(x)


def render(results: dict[str, Stats], seeds: int, load: str) -> str:
    rows = [
        f"{HOSTS} hosts x {DAYS} days, {seeds} seeds per situation (even seeds CSV, odd seeds "
        f"Parquet), `python -m corecensus analyze --crashes FILE --exposure CSV --json`, default "
        f"parameters. Load during the run: {load}.\n",
        "| situation | false flags /10k/30d (mean ± sd) | flagged | software pops hardware-suspect "
        "| loop hosts flagged hardware | loop hosts reported as loops | "
        + " | ".join(f"recall {b}" for b in BIN_NAMES)
        + " | crashes/fleet | analyze s |",
        "|---|---|---|---|---|---|" + "---|" * len(BINS) + "---|---|",
    ]
    for name, st in results.items():
        ff = np.asarray(st.false_flags, dtype=float)
        sd = ff.std(ddof=1) if ff.size > 1 else 0.0
        rec = [
            f"{h / t:.2f} ({h}/{t})" if t else "–"
            for h, t in zip(st.hits.tolist(), st.totals.tolist(), strict=True)
        ]
        lp = f"{st.loops_flagged}/{st.loops_total}" if st.loops_total else "–"
        lr = f"{st.loops_reported}/{st.loops_total}" if st.loops_total else "–"
        rows.append(
            f"| {name} | {ff.mean():.2f} ± {sd:.2f} | {int(ff.sum())} | {st.sw_hardware}/{st.sw_total} | "
            f"{lp} | {lr} | "
            + " | ".join(rec)
            + f" | {int(np.mean(st.crashes))} | {np.mean(st.seconds):.1f} |"
        )
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--situations", default=",".join(SITUATIONS))
    ap.add_argument("--out", default=None, help="also write the table and details here")
    ap.add_argument("--details", action="store_true", help="print every false flag")
    ap.add_argument("--keep", default=None, help="write the fleets' files under this directory")
    args = ap.parse_args(argv)
    names = [s.strip() for s in args.situations.split(",") if s.strip()]
    unknown = [s for s in names if s not in SITUATIONS]
    if unknown:
        print(
            f"unknown situation(s): {', '.join(unknown)}; known: {', '.join(SITUATIONS)}",
            file=sys.stderr,
        )
        return 2
    load = os.getloadavg()
    cpu0 = time.process_time()
    results: dict[str, Stats] = {}
    with tempfile.TemporaryDirectory(prefix="fleet-adversary-") as scratch:
        for name in names:
            sit = SITUATIONS[name]
            st = Stats()
            for seed in range(args.seeds):
                fleet = build_fleet(seed, sit)
                where = Path(args.keep or scratch) / f"{name}-{seed}"
                where.mkdir(parents=True, exist_ok=True)
                crashes, exposure = write_files(fleet, seed, where, parquet=seed % 2 == 1)
                report, took = run_analyze(crashes, exposure)
                st.seconds.append(took)
                st.crashes.append(len(fleet.rows))
                score(report, fleet, sit, seed, st)
                print(
                    f"  {name} seed {seed}: {st.false_flags[-1]} false flags, {took:.1f} s",
                    file=sys.stderr,
                )
            results[name] = st
    load2 = os.getloadavg()
    text = render(
        results, args.seeds, f"load average {load[0]:.1f} at start, {load2[0]:.1f} at end"
    )
    details = [d for st in results.values() for d in st.details]
    print(text)
    if args.details:
        print("\n".join(details))
    print(f"generator CPU {time.process_time() - cpu0:.0f} s", file=sys.stderr)
    if args.out:
        Path(args.out).write_text(
            text + "\nDetails:\n\n" + "\n".join(f"- {d}" for d in details) + "\n", encoding="utf-8"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
