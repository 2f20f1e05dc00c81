"""How ``analyze`` scales with the number of crash records.

Run: ``PYTHONPATH=src python bench/analyze_scale.py [--sizes 1e5,1e6,1e7]``.

For each size a fresh subprocess generates N crash records from 10,000 hosts over 30 days
(2,000 populations with Zipf(1.1) weights, each in one of 4 services and crashing on that
service's hosts by exposure times a Gamma frailty; 3 versions rolled out over time, 4 CPU
models, 3% hardware-flavoured anomalies, one exposure row per host-day = 300,000 rows), then
times ``analyze`` and reads its peak resident memory (``ru_maxrss``, minus the resident size
before the call). Two peers run on the same records in the same process:

* **dict group-by** — the naive baseline: a Python loop counting crashes per (population, host)
  in a ``dict`` (nothing else: no statistics);
* **np.unique** — one vectorized group-by of (population, host) keys with counts, the cost floor
  of any sort-based analysis.

The table gives seconds, the ratio of ``analyze`` to each peer, and the growth exponent
``d log(time) / d log(N)`` between successive sizes (1 = linear). Targets: 1e6 records under
10 s and 1e7 under 60 s on a 2-core machine.

**End to end** (``--store-dir DIR``, the path a user runs): the same crash records are written
to a corecensus DuckDB store (schema by :func:`corecensus.store.open_store`; the rows with one
``INSERT ... SELECT`` from the arrays, since the store's 1000-row insert batches would take
hours at 1e7 — setup, not timed; a store already in ``DIR`` is reused), then
``corecensus analyze --db STORE --json`` runs as its own process: wall time, CPU time (user +
system, all threads) and peak RSS (``RUSAGE_CHILDREN`` of a process whose only child it is).
On a shared machine CPU time is the steadier figure. The in-memory peer is ``analyze`` on
the same crashes without exposure (the end-to-end run has none), in the ``--one`` process.
Targets: 1e6 crashes from the store within 6 s, 1e7 within 45 s, peak RSS at most 2 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

HOSTS = 10_000
DAYS = 30
POPULATIONS = 2_000
T0_US = 1_704_067_200 * 1_000_000
DAY_US = 86_400 * 1_000_000


def make_tables(n: int, seed: int = 0) -> tuple[object, object, object]:
    from corecensus.epidemiology import Categorical, CrashTable, Deploys, ExposureTable
    from corecensus.epidemiology.params import HARDWARE_ANOMALIES
    from corecensus.model import ANOMALY_NAMES

    rng = np.random.default_rng(seed)
    procs = np.clip(np.rint(rng.lognormal(np.log(4), 0.8, HOSTS)), 1, 64)
    service = rng.integers(0, 4, HOSTS)
    cpu_model = rng.integers(0, 4, HOSTS)
    ncpu = np.where(cpu_model < 2, 32, 64)
    kernel = rng.integers(0, 3, HOSTS)
    # version v starts on each host at a random time: v2 from day 10-12, v3 from day 20-22
    v2 = T0_US + ((10 + 2 * rng.random(HOSTS)) * DAY_US).astype(np.int64)
    v3 = T0_US + ((20 + 2 * rng.random(HOSTS)) * DAY_US).astype(np.int64)

    e_host = np.repeat(np.arange(HOSTS), DAYS)
    e_start = T0_US + np.tile(np.arange(DAYS), HOSTS) * DAY_US
    e_ver = (e_start >= v2[e_host]).astype(np.int64) + (e_start >= v3[e_host])
    e_hours = 24.0 * procs[e_host] * rng.uniform(0.8, 1.2, e_host.size)

    # each population belongs to one service (a signature includes its executable) and
    # crashes on that service's hosts in proportion to exposure times a Gamma frailty
    weight = procs * rng.gamma(2.0, 0.5, HOSTS)
    z = 1.0 / np.arange(1, POPULATIONS + 1) ** 1.1
    pop = rng.choice(POPULATIONS, n, p=z / z.sum())
    pop_service = rng.integers(0, 4, POPULATIONS)
    host = np.zeros(n, dtype=np.int64)
    for s in range(4):
        mine = np.flatnonzero(pop_service[pop] == s)
        on = np.flatnonzero(service == s)
        host[mine] = on[rng.choice(on.size, mine.size, p=weight[on] / weight[on].sum())]
    t = T0_US + (rng.random(n) * DAYS * DAY_US).astype(np.int64)
    ver = (t >= v2[host]).astype(np.int64) + (t >= v3[host])
    names = np.array([1 << ANOMALY_NAMES.index(a) for a in HARDWARE_ANOMALIES], np.uint16)
    mask = np.where(rng.random(n) < 0.03, names[rng.integers(0, names.size, n)], 0)
    hosts = tuple(f"host-{i:05d}" for i in range(HOSTS))
    versions = ("1", "2", "3")
    services = ("api", "db", "cache", "search")
    crashes = CrashTable.from_arrays(
        time_us=t,
        host=Categorical(host.astype(np.int32), hosts),
        population=Categorical(
            pop.astype(np.int32), tuple(f"pop-{i:04d}" for i in range(POPULATIONS))
        ),
        cpu=(rng.random(n) * ncpu[host]).astype(np.int32),
        cpu_model=Categorical(cpu_model[host].astype(np.int32), ("a", "b", "c", "d")),
        kernel=Categorical(kernel[host].astype(np.int32), ("6.1", "6.6", "6.8")),
        service=Categorical(service[host].astype(np.int32), services),
        version=Categorical(ver.astype(np.int32), versions),
        anomaly_mask=mask.astype(np.uint16),
    )
    exposure = ExposureTable.from_arrays(
        host=Categorical(e_host.astype(np.int32), hosts),
        start_us=e_start,
        end_us=e_start + DAY_US,
        hours=e_hours,
        service=Categorical(service[e_host].astype(np.int32), services),
        version=Categorical(e_ver.astype(np.int32), versions),
        cpu_model=Categorical(cpu_model[e_host].astype(np.int32), ("a", "b", "c", "d")),
    )
    deploys = Deploys(
        time_us=np.array([T0_US + 10 * DAY_US, T0_US + 20 * DAY_US], dtype=np.int64),
        service=Categorical(np.array([-1, -1], dtype=np.int32), ()),
        version=Categorical(np.array([1, 2], dtype=np.int32), versions),
    )
    return crashes, exposure, deploys


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def one(n: int) -> dict[str, float]:
    from corecensus.epidemiology import analyze

    crashes, exposure, deploys = make_tables(n)
    before = rss_mib()
    t0 = time.perf_counter()
    result = analyze(crashes, exposure, deploys)  # type: ignore[arg-type]
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), time.process_time()
    bare = analyze(crashes)  # type: ignore[arg-type]
    bare_secs, bare_cpu = time.perf_counter() - t0, time.process_time() - c0
    pop = crashes.population.codes  # type: ignore[attr-defined]
    host = crashes.host.codes  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    counts: dict[tuple[int, int], int] = {}
    for key in zip(pop.tolist(), host.tolist(), strict=True):
        counts[key] = counts.get(key, 0) + 1
    dict_secs = time.perf_counter() - t0
    t0 = time.perf_counter()
    np.unique(pop.astype(np.int64) * HOSTS + host, return_counts=True)
    unique_secs = time.perf_counter() - t0
    return {
        "n": n,
        "analyze_s": secs,
        "dict_s": dict_secs,
        "unique_s": unique_secs,
        "peak_mib": peak,
        "extra_mib": peak - before,
        "populations": len(result.populations),
        "flagged": len(result.hosts),
        "bare_s": bare_secs,
        "bare_cpu_s": bare_cpu,
        "bare_populations": len(bare.populations),
    }


def write_store(path: Path, n: int) -> None:
    """The crash records of :func:`make_tables` as a corecensus DuckDB store at ``path``."""
    import duckdb

    from corecensus.store import open_store

    crashes = make_tables(n)[0]
    open_store(path).close()  # the schema, as the store creates it
    columns = {
        "i": np.arange(n, dtype=np.int64),
        "t": crashes.time_us,  # type: ignore[attr-defined]
        "cpu": crashes.cpu,  # type: ignore[attr-defined]
        "m": crashes.anomaly_mask,  # type: ignore[attr-defined]
    }
    vocab: dict[str, dict[str, np.ndarray]] = {}
    for name in ("host", "population", "cpu_model", "kernel", "service", "version"):
        cat = getattr(crashes, name)
        columns[name] = cat.codes
        vocab[name] = {
            "code": np.arange(len(cat.vocab), dtype=np.int32),
            "name": np.array(cat.vocab),
        }
    con = duckdb.connect(str(path))
    for name, table in vocab.items():
        con.register(f"v_{name}", table)  # type: ignore[arg-type]
    con.register("c", columns)  # type: ignore[arg-type]
    con.execute(
        # columns named: later schema versions add columns (NULL here)
        "INSERT INTO crashes (core_id, time_us, host, cpu, cpu_model, microcode, kernel, "
        "service, version, exe, signal, status, anomalies, anomaly_mask, sig_address, "
        "sig_symbolic, sig_anomaly_class, sig_program, sig_signal, sig_unwind_failed, "
        "sig_notes, sig_version, pop_anomaly, pop_symbolic, pop_address, ingested_us, "
        "record_json) SELECT md5(c.i::VARCHAR) AS core_id, c.t AS time_us, "
        "v_host.name AS host, c.cpu, v_cpu_model.name AS cpu_model, NULL AS microcode, "
        "v_kernel.name AS kernel, v_service.name AS service, v_version.name AS version, "
        "'/usr/bin/' || v_service.name AS exe, 11 AS signal, 'ok' AS status, "
        "[]::VARCHAR[] AS anomalies, c.m AS anomaly_mask, v_population.name AS sig_address, "
        "v_population.name || ' | main' AS sig_symbolic, 'none' AS sig_anomaly_class, "
        "v_service.name AS sig_program, 'SIGSEGV' AS sig_signal, false AS sig_unwind_failed, "
        "[]::VARCHAR[] AS sig_notes, 1 AS sig_version, 'none' AS pop_anomaly, "
        "v_population.name AS pop_symbolic, v_population.name AS pop_address, "
        "0 AS ingested_us, '{}' AS record_json FROM c "
        "JOIN v_host ON v_host.code = c.host "
        "JOIN v_population ON v_population.code = c.population "
        "JOIN v_cpu_model ON v_cpu_model.code = c.cpu_model "
        "JOIN v_kernel ON v_kernel.code = c.kernel "
        "JOIN v_service ON v_service.code = c.service "
        "JOIN v_version ON v_version.code = c.version"
    )
    con.close()


def end_to_end(path: Path) -> dict[str, float]:
    """``corecensus analyze --db path --json`` as its own process: wall seconds, peak RSS."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "corecensus", "analyze", "--db", str(path), "--json"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    secs = time.perf_counter() - t0
    doc = json.loads(out.stdout)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "e2e_s": secs,
        "e2e_cpu_s": usage.ru_utime + usage.ru_stime,
        "e2e_peak_mib": usage.ru_maxrss / 1024,
        "e2e_populations": len(doc["populations"]),
        "e2e_crashes": doc["crashes"],
    }


def store_for(n: int, directory: Path) -> Path:
    """The store of ``n`` crashes in ``directory``, written unless already there."""
    path = directory / f"analyze_scale-{n:.0e}.duckdb"
    if not path.exists():
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        subprocess.run(
            [sys.executable, str(HERE), "--write-store", str(n), str(partial)], check=True
        )
        partial.rename(path)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="analyze scaling benchmark")
    ap.add_argument("--sizes", default="1e5,1e6,1e7")
    ap.add_argument(
        "--store-dir",
        help="also time `corecensus analyze --db` end to end on stores kept in this directory "
        "('' for a temporary one)",
    )
    ap.add_argument("--one", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--write-store", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--e2e", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one(int(args.one))))
        return 0
    if args.write_store:
        write_store(Path(args.write_store[1]), int(float(args.write_store[0])))
        return 0
    if args.e2e:
        print(json.dumps(end_to_end(Path(args.e2e))))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        store_dir = None
        if args.store_dir is not None:
            store_dir = Path(args.store_dir) if args.store_dir else Path(scratch)
            store_dir.mkdir(parents=True, exist_ok=True)
        for size in (int(float(s)) for s in args.sizes.split(",")):
            out = subprocess.run(
                [sys.executable, str(HERE), "--one", str(size)],
                check=True,
                capture_output=True,
                text=True,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"  {size:.0e}: analyze {r['analyze_s']:.2f} s", file=sys.stderr)
            if store_dir is not None:
                path = store_for(size, store_dir)
                out = subprocess.run(
                    [sys.executable, str(HERE), "--e2e", str(path)],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                r |= json.loads(out.stdout.strip().splitlines()[-1])
                assert r["e2e_crashes"] == size and r["e2e_populations"] == r["bare_populations"]
                print(f"  {size:.0e}: end to end {r['e2e_s']:.2f} s", file=sys.stderr)
    print(
        f"analyze scaling: {HOSTS} hosts, {DAYS} days, {POPULATIONS} populations, "
        f"{HOSTS * DAYS} exposure rows"
    )
    print(
        "| records | analyze s | dict group-by s | np.unique s | analyze / dict | "
        "analyze / np.unique | growth exponent | peak RSS MiB | RSS added by analyze MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows):
        growth = "-"
        if i:
            prev = rows[i - 1]
            growth = (
                f"{np.log(r['analyze_s'] / prev['analyze_s']) / np.log(r['n'] / prev['n']):.2f}"
            )
        print(
            f"| {r['n']:.0e} | {r['analyze_s']:.2f} | {r['dict_s']:.2f} | {r['unique_s']:.2f} | "
            f"{r['analyze_s'] / r['dict_s']:.2f} | {r['analyze_s'] / r['unique_s']:.1f} | "
            f"{growth} | "
            f"{r['peak_mib']:.0f} | {r['extra_mib']:.0f} |"
        )
    if "e2e_s" in rows[0]:
        print(
            "\nend to end: `corecensus analyze --db STORE --json` (no exposure) against "
            "`analyze()` on the same crashes in memory (no exposure)"
        )
        print(
            "| crashes | from the store s (CPU s) | in memory s (CPU s) | store / memory "
            "(CPU) | peak RSS MiB |"
        )
        print("|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['n']:.0e} | {r['e2e_s']:.2f} ({r['e2e_cpu_s']:.2f}) | "
                f"{r['bare_s']:.2f} ({r['bare_cpu_s']:.2f}) | "
                f"{r['e2e_s'] / r['bare_s']:.2f} ({r['e2e_cpu_s'] / r['bare_cpu_s']:.2f}) | "
                f"{r['e2e_peak_mib']:.0f} |"
            )
    if len(rows) > 1:
        slope = np.polyfit(
            np.log([r["n"] for r in rows]), np.log([r["analyze_s"] for r in rows]), 1
        )
        print(f"\nfitted growth exponent over all sizes: {slope[0]:.2f} (1 = linear)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
