"""Generate a fleet with known truth, as /work/shared/FLEET_SIM.md (docs/fleet_sim.md) specifies.

Everything is vectorized over hosts, exposure rows and crashes; a 10,000-host, 30-day fleet
takes well under a second. Interpretation choices where the spec is silent are listed in
``INTERPRETATION`` and printed with the results.
"""

from __future__ import annotations

import csv
import dataclasses
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from corecensus.epidemiology import (
    HARDWARE_ANOMALIES,
    Categorical,
    CrashTable,
    Deploys,
    ExposureTable,
)
from corecensus.ingest.crashfacts import read_crash_facts_csv
from corecensus.ingest.tables import read_exposure
from corecensus.model import ANOMALY_NAMES

DAY_US = 86_400 * 1_000_000
HOUR_US = 3_600 * 1_000_000
T0_US = 1_704_067_200 * 1_000_000  # 2024-01-01T00:00:00Z

INTERPRETATION = (
    "Background anomaly rate: one rate per seed drawn from U(0.02, 0.03), every ordinary crash "
    "anomalous with that probability.",
    "Every anomalous crash, whatever its source (background, faulty CPU, confounder), carries "
    "one anomaly drawn uniformly from the hardware-flavoured names, so names cannot tell "
    "sources apart.",
    "Processes per host are rounded to integers; exposure is one row per host-day (split at a "
    "version switch), in process-hours.",
    "CPU model (4), kernel (3), microcode (2 per model) and CPU count (32 or 64) are drawn "
    "independently per host; the CPU count is passed as host facts.",
    "Every host runs service 'api'; version 2 rolls out to a random half of the hosts, each "
    "switching at day 15 + U(0, 48 h). deploys.csv records version 1 ten days before the window "
    "and version 2 at day 15.",
    "A faulty host's rate is drawn uniformly from the scenario's set; its crash count over "
    "[onset, day 30] is Poisson; 90% land on the bad CPU, the rest uniformly on the others; "
    "signatures uniform over the 40 background signatures.",
    "Hard confounder: service 'cache' (one process) runs on 30 random hosts with exposure; its "
    "bug crashes 0.3 times per host-day, 90% anomalous, random CPUs, one signature.",
)


@dataclass(frozen=True, slots=True)
class Scenario:
    """One situation. The first four fields are FLEET_SIM.md's easy and hard scenarios; the
    rest switch on the production situations of issue 9 (all off: easy/hard unchanged, draw
    for draw)."""

    name: str
    faulty_rates: tuple[float, ...]
    faulty_anomalous: float
    confounder: bool
    description: str = ""
    # host facts in the crash-facts table: online CPUs, the process's allowed CPU list,
    # physical cores (SMT: siblings i and i + n/2)
    host_facts: bool = True
    allowed_facts: bool = False
    smt: bool = False
    # CPU counts per host (None: 32 or 64 as FLEET_SIM.md) and their weights
    cpu_counts: tuple[int, ...] | None = None
    cpu_weights: tuple[float, ...] | None = None
    uneven: bool = False  # processes grow with the CPU count; 5 % of hosts lack exposure rows
    pinned_hosts: float = 0.0  # share of hosts running service 'pinned' on one CPU
    pinned_rates: tuple[float, ...] = (0.03, 0.1, 0.3)  # its bug, crashes per host-day
    pinned_anomalous: float = 0.03
    cpuset_hosts: float = 0.0  # share of hosts running 'batch' in a 2-4-CPU cpuset
    loops: int = 0  # crash loops of 10-500 crashes within an hour on one CPU
    bad_cpus: int = 1  # per faulty host
    shared_faulty: int = 0  # faulty hosts crashing in one shared signature (bad stepping)
    faulty_busy: bool = False  # faulty hosts among the busiest 1 %
    stop_after_microcode: bool = False  # faults stop at a microcode update
    microcode_fixes: bool = True  # False: the update comes, the fault goes on (a live fault)
    # exposure through exposure.csv with the microcode and kernel each host ran (the agent's
    # heartbeats carry them): a microcode update shows there even when the host never crashes
    # again
    exposure_facts: bool = False
    # hosts switched off for whole days (no crashes, no exposure): this share of the faulty
    # hosts after their onset, and 3 % of all hosts anywhere
    dark_faulty: float = 0.0


EASY = Scenario("easy", (0.1, 0.2, 0.5, 1.0), 0.8, confounder=False)
HARD = Scenario("hard", (0.05, 0.1, 0.2, 0.5), 0.4, confounder=True)
SCENARIOS = {"easy": EASY, "hard": HARD}


@dataclass(frozen=True, slots=True)
class FleetConfig:
    hosts: int = 10_000
    days: int = 30
    signatures: int = 40
    zipf: float = 1.1
    base_rate: float = 5e-4  # crashes per process-hour
    regression_rate: float = 5e-5
    hot_fraction: float = 0.01
    hot_factor: float = 8.0
    faulty_hosts: int = 10
    confounder_hosts: int = 30
    confounder_rate: float = 0.3  # per host-day
    rollout_day: float = 15.0
    rollout_hours: float = 48.0
    onset_days: tuple[float, float] = (2.0, 20.0)


@dataclass(frozen=True, slots=True, eq=False)
class FaultyTruth:
    host: NDArray[np.int64]
    cpu: NDArray[np.int64]
    onset_us: NDArray[np.int64]
    rate: NDArray[np.float64]
    crash_times: tuple[NDArray[np.int64], ...]  # per faulty host, sorted
    stop_us: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    cpu2: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass(frozen=True, slots=True, eq=False)
class Fleet:
    crashes: CrashTable
    exposure: ExposureTable
    deploys: Deploys
    faulty: FaultyTruth
    confounder_hosts: NDArray[np.int64]
    hot_hosts: NDArray[np.int64]
    regression_population: str = "regression-v2"
    confounder_population: str = "cache-corruption"
    rollout_us: int = 0
    software_populations: tuple[str, ...] = field(default_factory=tuple)
    special: dict[str, NDArray[np.int64]] = field(default_factory=dict)
    host_names: tuple[str, ...] = ()


def simulate(
    seed: int,
    scenario: Scenario,
    *,
    faulty: bool = True,
    config: FleetConfig = FleetConfig(),
    workdir: Path | None = None,
) -> Fleet:
    """One fleet. ``faulty=False`` is the null fleet (same configuration, no faulty hosts).

    The crashes reach ``analyze`` as users' do: written as a crash-facts CSV (DESIGN.md) and
    read back by :func:`corecensus.ingest.crashfacts.read_crash_facts_csv`."""
    rng = np.random.default_rng(seed)
    cfg = config
    sc = scenario
    H, D = cfg.hosts, cfg.days
    procs = np.clip(np.rint(rng.lognormal(np.log(4.0), 0.8, H)), 1, 64)
    cpu_model = rng.integers(0, 4, H)
    kernel = rng.integers(0, 3, H)
    microcode = cpu_model * 2 + rng.integers(0, 2, H)
    if sc.cpu_counts is None:
        ncpu = rng.choice(np.array([32, 64]), H)
    else:
        w = np.asarray(sc.cpu_weights or [1.0] * len(sc.cpu_counts), dtype=float)
        ncpu = rng.choice(np.array(sc.cpu_counts), H, p=w / w.sum())
    if sc.uneven:  # bigger hosts run more processes
        procs = np.clip(np.rint(procs * np.sqrt(ncpu / 32.0)), 1, 256)
    frailty = rng.gamma(2.0, 0.5, H)
    hot = rng.choice(H, round(cfg.hot_fraction * H), replace=False)
    frailty[hot] *= cfg.hot_factor
    anomaly_p = rng.uniform(0.02, 0.03)

    # version 2 on a random half, switching over 48 h from day 15
    v2 = rng.random(H) < 0.5
    switch_us = np.full(H, np.iinfo(np.int64).max // 4, dtype=np.int64)
    rollout_us = T0_US + int(cfg.rollout_day * DAY_US)
    switch_us[v2] = rollout_us + (rng.random(int(v2.sum())) * cfg.rollout_hours * HOUR_US).astype(
        np.int64
    )

    # exposure: host-day rows of service api, split at the switch
    hd_host = np.repeat(np.arange(H), D)
    hd_day = np.tile(np.arange(D), H)
    day_start = T0_US + hd_day * DAY_US
    day_end = day_start + DAY_US
    hours_day = 24.0 * procs[hd_host] * rng.uniform(0.8, 1.2, H * D)
    sw = switch_us[hd_host]
    split = (sw > day_start) & (sw < day_end)
    # part A: [start, min(end, switch)) at v1 if start < switch else v2
    a_end = np.where(split, sw, day_end)
    a_ver = np.where(day_start >= sw, 1, 0)
    a_hours = hours_day * (a_end - day_start) / DAY_US
    b_idx = np.flatnonzero(split)
    e_host = np.concatenate([hd_host, hd_host[b_idx]])
    e_start = np.concatenate([day_start, sw[b_idx]])
    e_end = np.concatenate([a_end, day_end[b_idx]])
    e_ver = np.concatenate([a_ver, np.ones(b_idx.size, dtype=np.int64)])
    e_hours = np.concatenate([a_hours, hours_day[b_idx] * (day_end[b_idx] - sw[b_idx]) / DAY_US])
    e_svc = np.zeros(e_host.size, dtype=np.int64)

    confounder = np.zeros(0, dtype=np.int64)
    if scenario.confounder:
        confounder = rng.choice(H, cfg.confounder_hosts, replace=False)
        c_host = np.repeat(confounder, D)
        c_day = np.tile(np.arange(D), confounder.size)
        c_start = T0_US + c_day * DAY_US
        e_host = np.concatenate([e_host, c_host])
        e_start = np.concatenate([e_start, c_start])
        e_end = np.concatenate([e_end, c_start + DAY_US])
        e_ver = np.concatenate([e_ver, np.full(c_host.size, 2)])
        e_hours = np.concatenate([e_hours, 24.0 * rng.uniform(0.8, 1.2, c_host.size)])
        e_svc = np.concatenate([e_svc, np.ones(c_host.size, dtype=np.int64)])

    parts: list[dict[str, NDArray[np.int64]]] = []
    api = e_svc == 0
    # background software crashes, per exposure row of the api service
    lam = cfg.base_rate * e_hours[api] * frailty[e_host[api]]
    parts.append(
        _crashes_in_rows(
            rng, lam=lam, host=e_host[api], start=e_start[api], end=e_end[api], ver=e_ver[api]
        )
    )
    weights = 1.0 / np.arange(1, cfg.signatures + 1) ** cfg.zipf
    bg = parts[0]
    bg["pop"] = rng.choice(cfg.signatures, bg["host"].size, p=weights / weights.sum())
    bg["anom"] = (rng.random(bg["host"].size) < anomaly_p).astype(np.int64)
    # the regression: only on version 2 rows
    on_v2 = api & (e_ver == 1)
    lam = cfg.regression_rate * e_hours[on_v2] * frailty[e_host[on_v2]]
    reg = _crashes_in_rows(
        rng,
        lam=lam,
        host=e_host[on_v2],
        start=e_start[on_v2],
        end=e_end[on_v2],
        ver=e_ver[on_v2],
    )
    reg["pop"] = np.full(reg["host"].size, cfg.signatures)
    reg["anom"] = (rng.random(reg["host"].size) < anomaly_p).astype(np.int64)
    parts.append(reg)
    for part in parts:
        part["cpu"] = (rng.random(part["host"].size) * ncpu[part["host"]]).astype(np.int64)
        part["svc"] = np.zeros(part["host"].size, dtype=np.int64)

    if scenario.confounder:
        k = rng.poisson(cfg.confounder_rate * D, confounder.size)
        host = np.repeat(confounder, k)
        t = T0_US + (rng.random(host.size) * D * DAY_US).astype(np.int64)
        parts.append(
            {
                "host": host,
                "time": t,
                "ver": np.full(host.size, 2),
                "pop": np.full(host.size, cfg.signatures + 1),
                "anom": (rng.random(host.size) < 0.9).astype(np.int64),
                "cpu": (rng.random(host.size) * ncpu[host]).astype(np.int64),
                "svc": np.ones(host.size, dtype=np.int64),
            }
        )

    truth = FaultyTruth(
        host=np.zeros(0, np.int64),
        cpu=np.zeros(0, np.int64),
        onset_us=np.zeros(0, np.int64),
        rate=np.zeros(0),
        crash_times=(),
    )
    end = T0_US + D * DAY_US
    stop_us = np.zeros(0, dtype=np.int64)
    bad2 = np.zeros(0, dtype=np.int64)
    if faulty:
        fh = rng.choice(hot if sc.faulty_busy else H, cfg.faulty_hosts, replace=False)
        half = ncpu[fh] // 2 if sc.smt else ncpu[fh]  # SMT: the bad CPU is a physical core
        bad = (rng.random(fh.size) * half).astype(np.int64)
        onset = T0_US + (rng.uniform(*cfg.onset_days, fh.size) * DAY_US).astype(np.int64)
        rate = rng.choice(np.array(scenario.faulty_rates), fh.size)
        k = rng.poisson(rate * (end - onset) / DAY_US)
        host = np.repeat(fh, k)
        which = np.repeat(np.arange(fh.size), k)
        t = onset[which] + (rng.random(host.size) * (end - onset[which])).astype(np.int64)
        on_bad = rng.random(host.size) < 0.9
        other = (rng.random(host.size) * (ncpu[host] - 1)).astype(np.int64)
        other = np.where(other >= bad[which], other + 1, other)
        pops = rng.integers(0, cfg.signatures, host.size)
        anom = (rng.random(host.size) < scenario.faulty_anomalous).astype(np.int64)
        bad_cpu = bad[which]
        if sc.smt:  # either sibling of the bad core
            sib = rng.random(host.size) < 0.5
            bad_cpu = np.where(sib, bad_cpu + ncpu[host] // 2, bad_cpu)
            other = np.where(
                (other % (ncpu[host] // 2)) == bad[which], (other + 1) % ncpu[host], other
            )
        if sc.bad_cpus == 2:  # a second bad CPU, half the faulty crashes on each
            bad2 = (bad + 1 + (rng.random(fh.size) * (ncpu[fh] - 1)).astype(np.int64)) % ncpu[fh]
            second = rng.random(host.size) < 0.5
            bad_cpu = np.where(second, bad2[which], bad_cpu)
            other = np.where(other == bad2[which], (other + 1) % ncpu[host], other)
            other = np.where(other == bad[which], (other + 1) % ncpu[host], other)
        if sc.shared_faulty:  # the first few faulty hosts fail in one shared signature
            pops = np.where(which < sc.shared_faulty, cfg.signatures + 2, pops)
        keep = np.ones(host.size, dtype=bool)
        stop_us = np.full(fh.size, end, dtype=np.int64)
        if sc.stop_after_microcode:  # a microcode update 3-12 days after onset ends the fault
            stop_us = np.minimum(
                end, onset + (rng.uniform(3, 12, fh.size) * DAY_US).astype(np.int64)
            )
            if sc.microcode_fixes:
                keep = t < stop_us[which]
        cpu_f = np.where(on_bad, bad_cpu, other)
        parts.append(
            {
                "host": host[keep],
                "time": t[keep],
                "ver": np.where(t >= switch_us[host], 1, 0)[keep],
                "pop": pops[keep],
                "anom": anom[keep],
                "cpu": cpu_f[keep],
                "svc": np.zeros(int(keep.sum()), dtype=np.int64),
            }
        )
        truth = FaultyTruth(
            host=fh.astype(np.int64),
            cpu=bad,
            onset_us=onset,
            rate=rate.astype(np.float64),
            crash_times=tuple(np.sort(t[keep & (which == i)]) for i in range(fh.size)),
            stop_us=stop_us if sc.microcode_fixes else np.full(fh.size, end, dtype=np.int64),
            cpu2=bad2,
        )

    if faulty and sc.stop_after_microcode and sc.exposure_facts:
        # the update is a moment in the host's record: split its exposure row there
        e_host, e_start, e_end, e_ver, e_hours, e_svc = _split_rows(
            (e_host, e_start, e_end, e_ver, e_hours, e_svc), truth.host, stop_us
        )

    # -- production situations (issue 9), drawn after everything above ----------------------
    special: dict[str, NDArray[np.int64]] = {}
    for part in parts:
        part["alo"] = np.full(part["host"].size, -1, dtype=np.int64)
        part["ahi"] = np.full(part["host"].size, -1, dtype=np.int64)
    svc_names = ["api", "cache", "pinned", "batch"]
    if sc.pinned_hosts > 0:  # a service pinned to one CPU, with an ordinary bug
        ph = rng.choice(H, round(sc.pinned_hosts * H), replace=False)
        pin = (rng.random(ph.size) * ncpu[ph]).astype(np.int64)
        prate = rng.choice(np.array(sc.pinned_rates), ph.size)
        k = rng.poisson(prate * D)
        host = np.repeat(ph, k)
        cpu = np.repeat(pin, k)
        t = T0_US + (rng.random(host.size) * D * DAY_US).astype(np.int64)
        parts.append(
            _extra(
                host,
                t,
                cfg.signatures + 3,
                rng.random(host.size) < sc.pinned_anomalous,
                cpu,
                2,
                cpu,
                cpu,
                switch_us,
            )
        )
        special["pinned"] = ph.astype(np.int64)
        e_host, e_start, e_end, e_ver, e_hours, e_svc = _service_exposure(
            rng, (e_host, e_start, e_end, e_ver, e_hours, e_svc), ph, D, 2, 1.0
        )
    if sc.cpuset_hosts > 0:  # a service in a 2-4-CPU cpuset, background crashes only
        ch = rng.choice(H, round(sc.cpuset_hosts * H), replace=False)
        width = rng.integers(2, 5, ch.size)
        lo = (rng.random(ch.size) * (ncpu[ch] - width + 1)).astype(np.int64)
        k = rng.poisson(cfg.base_rate * 24.0 * 4 * D * frailty[ch])
        host = np.repeat(ch, k)
        w = np.repeat(width, k)
        base = np.repeat(lo, k)
        cpu = base + (rng.random(host.size) * w).astype(np.int64)
        t = T0_US + (rng.random(host.size) * D * DAY_US).astype(np.int64)
        pops = rng.choice(cfg.signatures, host.size, p=weights / weights.sum())
        parts.append(
            _extra(
                host,
                t,
                pops,
                rng.random(host.size) < anomaly_p,
                cpu,
                3,
                base,
                base + w - 1,
                switch_us,
            )
        )
        special["cpuset"] = ch.astype(np.int64)
        e_host, e_start, e_end, e_ver, e_hours, e_svc = _service_exposure(
            rng, (e_host, e_start, e_end, e_ver, e_hours, e_svc), ch, D, 3, 4.0
        )
    loop_pops: list[str] = []
    if sc.loops:  # crash loops: tens to hundreds of crashes within an hour, one CPU
        lh = rng.choice(H, sc.loops, replace=False)
        sizes = np.rint(np.exp(rng.uniform(np.log(10), np.log(500), lh.size))).astype(np.int64)
        start = T0_US + (rng.uniform(1, D - 1, lh.size) * DAY_US).astype(np.int64)
        span = (rng.uniform(5, 60, lh.size) * 60e6).astype(np.int64)
        lcpu = (rng.random(lh.size) * ncpu[lh]).astype(np.int64)
        anomalous_loop = rng.random(lh.size) < 0.4  # some loops are memory corruption
        host = np.repeat(lh, sizes)
        which = np.repeat(np.arange(lh.size), sizes)
        t = start[which] + (rng.random(host.size) * span[which]).astype(np.int64)
        pops = cfg.signatures + 4 + which
        loop_pops = [f"loop-{i + 1}" for i in range(lh.size)]
        parts.append(
            _extra(host, t, pops, anomalous_loop[which], lcpu[which], 0, None, None, switch_us)
        )
        special["loops"] = lh.astype(np.int64)
    if not sc.stop_after_microcode:
        stop_us = np.full(truth.host.size, end, dtype=np.int64)

    cols = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    n = cols["host"].size
    anomalous = cols["anom"].astype(bool)
    names = np.array([1 << ANOMALY_NAMES.index(a) for a in HARDWARE_ANOMALIES], dtype=np.uint16)
    mask = np.where(anomalous, names[rng.integers(0, names.size, n)], 0).astype(np.uint16)
    populations = (
        *(f"sig-{i + 1:02d}" for i in range(cfg.signatures)),
        "regression-v2",
        "cache-corruption",
        "stepping",
        "pinned-bug",
        *loop_pops,
    )
    hosts = tuple(f"host-{i:05d}" for i in range(H))
    h = cols["host"]
    # the microcode update that ends a fault: that host's crashes after it carry the next one
    mc = microcode[h].copy()
    if faulty and sc.stop_after_microcode:
        row = np.full(H, -1, dtype=np.int64)
        row[truth.host] = np.arange(truth.host.size)
        r = row[h]
        after = (r >= 0) & (cols["time"] >= stop_us[np.maximum(r, 0)])
        mc = np.where(after, mc + 8, mc)
    version_vocab = ("1", "2", "c1")
    facts = {
        "host": np.array(hosts, dtype=object)[h],
        "time": cols["time"],
        "cpu": cols["cpu"],
        "service": np.array(svc_names, dtype=object)[cols["svc"]],
        "version": np.array(version_vocab, dtype=object)[cols["ver"]],
        "signature": np.array(populations, dtype=object)[cols["pop"]],
        "cpu_model": np.array(("model-a", "model-b", "model-c", "model-d"), dtype=object)[
            cpu_model[h]
        ],
        "microcode": np.array([f"0x{i:02x}" for i in range(16)], dtype=object)[mc],
        "kernel": np.array(("6.1.0", "6.6.0", "6.8.0"), dtype=object)[kernel[h]],
    }
    dark_from = np.zeros(H, dtype=np.int64)
    dark_to = np.zeros(H, dtype=np.int64)
    if sc.dark_faulty > 0:
        dark_from, dark_to = _dark_days(rng, sc, H, D, truth)
        day = (cols["time"] - T0_US) // DAY_US
        up = ~((day >= dark_from[h]) & (day < dark_to[h]))
        facts = {k: v[up] for k, v in facts.items()}
        mask, h = mask[up], h[up]
        cols = {k: v[up] for k, v in cols.items()}
        truth = _truth_while_up(truth, dark_from, dark_to)
    facts["anomalies"] = _anomaly_text(mask)
    if sc.host_facts:
        facts["host_cpus"] = ncpu[h]
    if sc.allowed_facts:
        lo_a = np.where(cols["alo"] >= 0, cols["alo"], 0)
        hi_a = np.where(cols["ahi"] >= 0, cols["ahi"], ncpu[h] - 1)
        facts["cpus_allowed"] = _cpu_lists(lo_a, hi_a)
    if sc.smt:
        facts["cpu_core"] = cols["cpu"] % (ncpu[h] // 2)
    crashes = _through_facts(facts, workdir)
    if sc.exposure_facts:
        e_day = (e_start - T0_US) // DAY_US
        up = ~((e_day >= dark_from[e_host]) & (e_day < dark_to[e_host]))
        e_mc = microcode[e_host]
        if faulty and sc.stop_after_microcode:
            row = np.full(H, -1, dtype=np.int64)
            row[truth.host] = np.arange(truth.host.size)
            r = row[e_host]
            e_mc = np.where((r >= 0) & (e_start >= stop_us[np.maximum(r, 0)]), e_mc + 8, e_mc)
        keep = np.flatnonzero(up)
        m = _merge_rows(
            e_host[keep], e_svc[keep], e_ver[keep], e_mc[keep], e_start[keep], e_end[keep]
        )
        e_h, e_s, e_v, e_m = (x[keep][m.first] for x in (e_host, e_svc, e_ver, e_mc))
        e_a, e_b = e_start[keep][m.first], m.end
        e_x = np.add.reduceat(e_hours[keep][m.order], m.first_sorted)
        exposure = _exposure_csv(
            {
                "host": np.array(hosts, dtype=object)[e_h],
                "start": e_a,
                "end": e_b,
                "service": np.array(svc_names, dtype=object)[e_s],
                "version": np.array(version_vocab, dtype=object)[e_v],
                "cpu_model": np.array(("model-a", "model-b", "model-c", "model-d"), dtype=object)[
                    cpu_model[e_h]
                ],
                "processes": e_x / ((e_b - e_a) / HOUR_US),
                "microcode": np.array([f"0x{i:02x}" for i in range(16)], dtype=object)[e_m],
                "kernel": np.array(("6.1.0", "6.6.0", "6.8.0"), dtype=object)[kernel[e_h]],
            },
            workdir,
        )
    else:
        exposure = _exposure(
            rng,
            sc,
            e_host,
            e_start,
            e_end,
            e_hours,
            e_svc,
            e_ver,
            hosts,
            svc_names,
            version_vocab,
            cpu_model,
        )
    deploys = Deploys(
        time_us=np.array([T0_US - 10 * DAY_US, rollout_us, T0_US - 30 * DAY_US], dtype=np.int64),
        service=Categorical(np.array([0, 0, 1], dtype=np.int32), tuple(svc_names)),
        version=Categorical(np.array([0, 1, 2], dtype=np.int32), version_vocab),
    )
    if sc.dark_faulty > 0:
        special["dark"] = np.flatnonzero(dark_to > dark_from).astype(np.int64)
    software = populations[: cfg.signatures + 1 + int(scenario.confounder)]
    software += tuple(p for p in ("pinned-bug",) if sc.pinned_hosts > 0) + tuple(loop_pops)
    return Fleet(
        crashes=crashes,
        exposure=exposure,
        deploys=deploys,
        faulty=truth,
        confounder_hosts=confounder.astype(np.int64),
        hot_hosts=hot.astype(np.int64),
        rollout_us=rollout_us,
        software_populations=software,
        special=special,
        host_names=hosts,
    )


def _extra(
    host: NDArray[np.int64],
    t: NDArray[np.int64],
    pop: Any,
    anomalous: NDArray[np.bool_],
    cpu: NDArray[np.int64],
    svc: int,
    allowed_lo: NDArray[np.int64] | None,
    allowed_hi: NDArray[np.int64] | None,
    switch_us: NDArray[np.int64],
) -> dict[str, NDArray[np.int64]]:
    n = host.size
    return {
        "host": host,
        "time": t,
        "ver": np.where(t >= switch_us[host], 1, 0).astype(np.int64),
        "pop": np.broadcast_to(np.asarray(pop, dtype=np.int64), (n,)).copy(),
        "anom": anomalous.astype(np.int64),
        "cpu": cpu.astype(np.int64),
        "svc": np.full(n, svc, dtype=np.int64),
        "alo": np.full(n, -1, dtype=np.int64) if allowed_lo is None else allowed_lo,
        "ahi": np.full(n, -1, dtype=np.int64) if allowed_hi is None else allowed_hi,
    }


@dataclass(frozen=True, slots=True)
class _Merged:
    order: NDArray[np.int64]  # rows sorted by host, service, start
    first_sorted: NDArray[np.int64]  # each merged row's first position in ``order``
    first: NDArray[np.int64]  # ... as a row index
    end: NDArray[np.int64]  # each merged row's end


def _merge_rows(*cols: NDArray[Any]) -> _Merged:
    """Consecutive rows of one host and service with the same version and microcode, each
    starting where the last ended, as one row (an agent's heartbeats become intervals, not
    days: a few rows per host, as the collector would keep them)."""
    host, svc, start = cols[0], cols[1], cols[4]
    order = np.lexsort((start, svc, host))
    h, sv, v, m, a, b = (x[order] for x in cols)
    same = np.zeros(order.size, dtype=bool)
    same[1:] = (h[1:] == h[:-1]) & (sv[1:] == sv[:-1]) & (v[1:] == v[:-1]) & (m[1:] == m[:-1])
    same[1:] &= a[1:] == b[:-1]
    first_sorted = np.flatnonzero(~same)
    last_sorted = np.append(first_sorted[1:], order.size) - 1
    return _Merged(order, first_sorted, order[first_sorted], b[last_sorted])


def _split_rows(
    cols: tuple[NDArray[Any], ...], hosts: NDArray[np.int64], at_us: NDArray[np.int64]
) -> tuple[NDArray[Any], ...]:
    """Exposure rows of ``hosts[i]`` that contain ``at_us[i]`` split there (hours pro rata)."""
    e_host, e_start, e_end, e_ver, e_hours, e_svc = cols
    when = np.full(int(e_host.max(initial=0)) + 1, -1, dtype=np.int64)
    when[hosts] = at_us
    t = when[e_host]
    cut = (t > e_start) & (t < e_end)
    i = np.flatnonzero(cut)
    share = (t[i] - e_start[i]) / (e_end[i] - e_start[i])
    new_end = e_end.copy()
    new_end[i] = t[i]
    hours = e_hours.copy()
    hours[i] = e_hours[i] * share
    return (
        np.concatenate([e_host, e_host[i]]),
        np.concatenate([e_start, t[i]]),
        np.concatenate([new_end, e_end[i]]),
        np.concatenate([e_ver, e_ver[i]]),
        np.concatenate([hours, e_hours[i] * (1 - share)]),
        np.concatenate([e_svc, e_svc[i]]),
    )


def _dark_days(
    rng: np.random.Generator, sc: Scenario, hosts: int, days: int, truth: FaultyTruth
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Whole days ``[from, to)`` each host is switched off (``from == to``: never): 3 % of
    hosts for 2-10 days anywhere, and ``dark_faulty`` of the faulty hosts for 3-12 days from
    a day after their onset (often to the end of the window: a live fault that goes quiet only
    because its host is off)."""
    start = np.zeros(hosts, dtype=np.int64)
    stop = np.zeros(hosts, dtype=np.int64)
    some = np.flatnonzero(rng.random(hosts) < 0.03)
    start[some] = rng.integers(0, days - 2, some.size)
    stop[some] = np.minimum(days, start[some] + rng.integers(2, 11, some.size))
    fh = truth.host[rng.random(truth.host.size) < sc.dark_faulty]
    if fh.size:
        row = {int(x): i for i, x in enumerate(truth.host.tolist())}
        first = np.array(
            [int((truth.onset_us[row[int(x)]] - T0_US) // DAY_US) + 2 for x in fh.tolist()]
        )
        first = np.minimum(first, days - 3)
        start[fh] = first + (rng.random(fh.size) * (days - 3 - first + 1)).astype(np.int64)
        stop[fh] = np.minimum(days, start[fh] + rng.integers(3, 13, fh.size))
    return start, stop


def _truth_while_up(
    truth: FaultyTruth, dark_from: NDArray[np.int64], dark_to: NDArray[np.int64]
) -> FaultyTruth:
    """The faulty hosts' crashes without those of days they were off."""
    kept = []
    for h, t in zip(truth.host.tolist(), truth.crash_times, strict=True):
        day = (t - T0_US) // DAY_US
        kept.append(t[~((day >= dark_from[h]) & (day < dark_to[h]))])
    return dataclasses.replace(truth, crash_times=tuple(kept))


def _exposure_csv(columns: dict[str, NDArray[Any]], workdir: Path | None) -> ExposureTable:
    """Write ``exposure.csv`` (with the optional processes, microcode and kernel columns) and
    read it back through the public reader, as ``analyze --exposure`` does."""
    header = list(columns)
    text = dict(columns)
    for key in ("start", "end"):
        uniq, inv = np.unique(columns[key], return_inverse=True)
        iso = np.array([_iso(int(u)) for u in uniq.tolist()], dtype=object)
        text[key] = iso[inv]
    text["processes"] = np.array([repr(float(x)) for x in columns["processes"].tolist()])
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / "exposure.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(header)
            out.writerows(zip(*(text[k].tolist() for k in header), strict=True))
        return read_exposure(path)


def _iso(time_us: int) -> str:
    stamp = datetime.fromtimestamp(time_us // 1_000_000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{time_us % 1_000_000:06d}Z"


def _service_exposure(
    rng: np.random.Generator,
    cols: tuple[NDArray[Any], ...],
    hosts: NDArray[np.int64],
    days: int,
    svc: int,
    processes: float,
) -> tuple[NDArray[Any], ...]:
    """Host-day exposure rows of another service on ``hosts``."""
    e_host, e_start, e_end, e_ver, e_hours, e_svc = cols
    s_host = np.repeat(hosts, days)
    s_start = T0_US + np.tile(np.arange(days), hosts.size) * DAY_US
    return (
        np.concatenate([e_host, s_host]),
        np.concatenate([e_start, s_start]),
        np.concatenate([e_end, s_start + DAY_US]),
        np.concatenate([e_ver, np.zeros(s_host.size, dtype=np.int64)]),
        np.concatenate([e_hours, 24.0 * processes * rng.uniform(0.8, 1.2, s_host.size)]),
        np.concatenate([e_svc, np.full(s_host.size, svc, dtype=np.int64)]),
    )


def _exposure(
    rng: np.random.Generator,
    sc: Scenario,
    e_host: NDArray[Any],
    e_start: NDArray[Any],
    e_end: NDArray[Any],
    e_hours: NDArray[Any],
    e_svc: NDArray[Any],
    e_ver: NDArray[Any],
    hosts: tuple[str, ...],
    services: list[str],
    versions: tuple[str, ...],
    cpu_model: NDArray[Any],
) -> ExposureTable:
    keep = np.ones(e_host.size, dtype=bool)
    if sc.uneven:  # 5 % of hosts send no exposure (no agent heartbeats)
        silent = rng.random(len(hosts)) < 0.05
        keep = ~silent[e_host]
    return ExposureTable.from_arrays(
        host=Categorical(e_host[keep].astype(np.int32), hosts),
        start_us=e_start[keep],
        end_us=e_end[keep],
        hours=e_hours[keep],
        service=Categorical(e_svc[keep].astype(np.int32), tuple(services)),
        version=Categorical(e_ver[keep].astype(np.int32), versions),
        cpu_model=Categorical(
            cpu_model[e_host[keep]].astype(np.int32), ("model-a", "model-b", "model-c", "model-d")
        ),
    )


def _anomaly_text(mask: NDArray[np.uint16]) -> NDArray[Any]:
    """Anomaly names per crash, ``;``-separated, as a crash-facts column."""
    uniq, inv = np.unique(mask, return_inverse=True)
    text = np.array(
        [
            ";".join(a for i, a in enumerate(ANOMALY_NAMES) if int(m) >> i & 1)
            for m in uniq.tolist()
        ],
        dtype=object,
    )
    return text[np.asarray(inv).reshape(-1)]


def _cpu_lists(lo: NDArray[np.int64], hi: NDArray[np.int64]) -> NDArray[Any]:
    uniq, inv = np.unique(lo * 100_000 + hi, return_inverse=True)
    text = np.array(
        [
            f"{k // 100_000}" if k // 100_000 == k % 100_000 else f"{k // 100_000}-{k % 100_000}"
            for k in uniq.tolist()
        ],
        dtype=object,
    )
    return text[inv]


def _through_facts(facts: dict[str, NDArray[Any]], workdir: Path | None) -> CrashTable:
    """Write the crash-facts CSV and read it back through the public reader."""
    order = np.argsort(facts["time"], kind="stable")
    header = list(facts)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / "crashes.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(header)
            out.writerows(zip(*(facts[k][order].tolist() for k in header), strict=True))
        return read_crash_facts_csv(path)


def _crashes_in_rows(
    rng: np.random.Generator,
    *,
    lam: NDArray[np.float64],
    host: NDArray[np.int64],
    start: NDArray[np.int64],
    end: NDArray[np.int64],
    ver: NDArray[np.int64],
) -> dict[str, NDArray[np.int64]]:
    k = rng.poisson(lam)
    row = np.repeat(np.arange(lam.size), k)
    t = start[row] + (rng.random(row.size) * (end[row] - start[row])).astype(np.int64)
    return {"host": host[row], "time": t, "ver": ver[row]}


def _production(name: str, description: str, **knobs: Any) -> Scenario:
    """A production situation (issue 9): the hard scenario's fault rates with half of the
    faulty crashes anomalous unless overridden, no confounder."""
    base: dict[str, Any] = {
        "faulty_rates": (0.05, 0.1, 0.2, 0.5),
        "faulty_anomalous": 0.5,
        "confounder": False,
    }
    return Scenario(name=name, description=description, **(base | knobs))


_WIDE = (2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384)
_WIDE_W = (2, 4, 6, 10, 20, 10, 20, 8, 8, 5, 4, 3)
_MIX = (16, 24, 32, 48, 64, 96, 128)

PRODUCTION = {
    s.name: s
    for s in (
        _production(
            "cpus-2-384",
            "hosts of 2 to 384 CPUs, processes growing with CPUs, 5 % without exposure rows; "
            "no CPU facts at all (the CPU count is never taken from other hosts)",
            cpu_counts=_WIDE,
            cpu_weights=_WIDE_W,
            uneven=True,
            host_facts=False,
        ),
        _production(
            "cpus-2-384-facts",
            "the same fleet with host_cpus and cpus_allowed in the crash facts",
            cpu_counts=_WIDE,
            cpu_weights=_WIDE_W,
            uneven=True,
            allowed_facts=True,
        ),
        _production(
            "mix-16-128",
            "an ordinary 16-128-CPU mix, no CPU facts",
            cpu_counts=_MIX,
            host_facts=False,
        ),
        _production(
            "pinned",
            "service 'pinned' pinned to one CPU on 2 % of hosts, an ordinary bug (3 % "
            "anomalous) at 0.03 / 0.1 / 0.3 crashes a day; cpus_allowed recorded",
            pinned_hosts=0.02,
            allowed_facts=True,
        ),
        _production(
            "pinned-heavy",
            "the same with an anomaly-heavy bug (90 % anomalous); cpus_allowed recorded",
            pinned_hosts=0.02,
            pinned_anomalous=0.9,
            allowed_facts=True,
        ),
        _production(
            "pinned-nofacts",
            "the anomaly-heavy pinned bug without cpus_allowed (pinning inferred)",
            pinned_hosts=0.02,
            pinned_anomalous=0.9,
        ),
        _production(
            "cpuset",
            "service 'batch' (4 processes) in a 2-4-CPU cpuset on 10 % of hosts, background "
            "crashes only; cpus_allowed recorded",
            cpuset_hosts=0.1,
            allowed_facts=True,
        ),
        _production(
            "cpuset-nofacts",
            "the same cpusets without cpus_allowed",
            cpuset_hosts=0.1,
        ),
        _production(
            "loops",
            "five crash loops of 10-500 crashes within an hour on one CPU (40 % of them "
            "anomalous memory corruption)",
            loops=5,
            allowed_facts=True,
        ),
        _production(
            "smt",
            "a faulty physical core seen as two SMT siblings (cpu_core recorded)",
            smt=True,
            allowed_facts=True,
        ),
        _production("two-cpus", "two bad CPUs on each faulty host", bad_cpus=2, allowed_facts=True),
        _production(
            "shared",
            "5 of the 10 faulty hosts fail in one shared signature (one bad stepping)",
            shared_faulty=5,
            allowed_facts=True,
        ),
        _production(
            "busy", "faulty hosts among the busiest 1 %", faulty_busy=True, allowed_facts=True
        ),
        _production(
            "no-anomaly",
            "a fault that leaves no register anomaly at all",
            faulty_anomalous=0.0,
            allowed_facts=True,
        ),
        _production(
            "stops",
            "each fault stops 3-12 days after onset with a microcode update; exposure.csv "
            "carries each host's microcode and kernel; 40 % of the faulty hosts (and 3 % of "
            "all) are switched off for 3-12 whole days after onset (2-10 anywhere)",
            stop_after_microcode=True,
            allowed_facts=True,
            exposure_facts=True,
            dark_faulty=0.4,
        ),
        _production(
            "microcode-live",
            "a microcode update 3-12 days after onset that does not end the fault (every "
            "fault is live: none may be told to rescreen); exposure and hosts switched off as "
            "in stops",
            stop_after_microcode=True,
            microcode_fixes=False,
            allowed_facts=True,
            exposure_facts=True,
            dark_faulty=0.4,
        ),
    )
}
