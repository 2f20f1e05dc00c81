"""Run one SDC screen of this host: topology -> one pinned worker per CPU -> analysis -> record.

Everything from outside is a parameter with a production default: the topology (or the /sys and
/proc roots it is read from), the workers' environment, the interpreter, the clocks, the sleep
and the random source. Tests use that to inject a fault shim through ``LD_PRELOAD`` and fake
topologies; nothing here reads the process environment unless the caller leaves ``env`` unset.
"""

from __future__ import annotations

import os
import platform
import random
import socket
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import corecensus
from corecensus.screening.checks import CheckRegistry, default_registry
from corecensus.screening.golden import GoldenValues
from corecensus.screening.modes import ScreenConfig
from corecensus.screening.outcome import Mode
from corecensus.screening.result import CpuReport, ScreenResult
from corecensus.screening.runner import WorkerOutcome, supervise
from corecensus.screening.topology import Topology, read_topology
from corecensus.screening.verdict import analyze
from corecensus.screening.wire import WorkerJob

__all__ = ["ScreenRun", "run_screen", "worker_environment"]

# Libraries that would otherwise start a thread per CPU inside a worker pinned to one CPU.
_SINGLE_THREADED = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}


@dataclass(frozen=True, slots=True)
class ScreenRun:
    """A finished screen, and the golden values it leaves: the given ones plus those it added."""

    result: ScreenResult
    golden: GoldenValues
    golden_added: int


def worker_environment(
    env: Mapping[str, str], overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a worker: ``env``, single-threaded math libraries, this corecensus on
    ``PYTHONPATH`` (so the worker runs the same code as the screen), then ``overrides``."""
    out = dict(env)
    out.update(_SINGLE_THREADED)
    src = str(Path(corecensus.__file__).resolve().parent.parent)
    existing = out.get("PYTHONPATH", "")
    out["PYTHONPATH"] = src + (os.pathsep + existing if existing else "")
    out.update(overrides or {})
    return out


def run_screen(
    config: ScreenConfig,
    *,
    topology: Topology | None = None,
    sys_root: Path = Path("/sys"),
    proc_root: Path = Path("/proc"),
    registry: CheckRegistry | None = None,
    env: Mapping[str, str] | None = None,
    worker_env: Mapping[str, str] | None = None,
    python: str = sys.executable,
    golden: GoldenValues | None = None,
    hostname: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> ScreenRun:
    """Screen the CPUs of ``config`` (default: every online CPU) and decide.

    Returns within the jitter plus ``config.overall(n)`` seconds whatever the workers do.
    """
    config.validate()
    rng = rng or random.SystemRandom()
    topo = topology or read_topology(sys_root, proc_root)
    cpus = topo.select(config.cpus)
    registry = registry or default_registry()
    if config.checks is not None:
        registry = registry.subset(config.checks)
    names = registry.names()
    seed = config.seed if config.seed is not None else rng.getrandbits(62)
    golden = golden or GoldenValues()

    if config.jitter_s > 0:
        sleep(rng.uniform(0.0, config.jitter_s))

    partners = {cpu: topo.partner(cpu, cpus) for cpu in cpus}
    order = list(cpus)
    if config.mode is Mode.PERIODIC:
        rng.shuffle(order)  # no CPU is always screened first (or always cut off by the budget)
    jobs = [
        WorkerJob(
            cpu=cpu,
            partner=partners[cpu],
            checks=tuple((n, registry.spec(n)) for n in names),
            scale=config.scale,
            rounds=config.rounds,
            deadline=0.0,
            seed=seed,
            retries=config.retries,
            background=config.background,
        )
        for cpu in order
    ]
    started_wall = wall_clock()
    t0 = clock()
    outcomes = supervise(
        jobs,
        budget_s=config.budget_s,
        overall_deadline=t0 + config.overall(len(cpus)),
        concurrency=config.concurrency or len(cpus),
        env=worker_environment(os.environ if env is None else env, worker_env),
        python=python,
        grace_s=config.grace_s,
        clock=clock,
    )
    elapsed = clock() - t0
    analysis = analyze(
        cpus=cpus,
        checks=names,
        topology=topo,
        outcomes=outcomes,
        partners=partners,
        scale=config.scale,
        golden=golden,
    )
    result = ScreenResult(
        screen_id=uuid.UUID(int=rng.getrandbits(128), version=4).hex,
        host=hostname or socket.gethostname(),
        started_at=int(started_wall * 1_000_000),
        seconds=elapsed,
        mode=config.mode,
        budget_s=config.budget_s,
        seed=seed,
        scale=config.scale,
        kernel=_kernel(proc_root),
        version=corecensus.__version__,
        cpus=tuple(_cpu_report(cpu, topo, outcomes[cpu], partners[cpu]) for cpu in cpus),
        results=analysis.results,
        decision=analysis.decision,
    )
    new_golden = golden.with_entries(analysis.golden_candidates)
    return ScreenRun(result=result, golden=new_golden, golden_added=len(analysis.golden_candidates))


def _kernel(proc_root: Path) -> str | None:
    try:
        return (proc_root / "sys" / "kernel" / "osrelease").read_text().strip() or None
    except OSError:
        return platform.release() or None


def _cpu_report(cpu: int, topo: Topology, out: WorkerOutcome, partner: int | None) -> CpuReport:
    info = topo.get(cpu)
    return CpuReport(
        cpu=cpu,
        model_key=info.model_key,
        model_name=info.model_name,
        microcode=info.microcode,
        package_id=info.package_id,
        core_id=info.core_id,
        thread_siblings=info.thread_siblings,
        status=out.status,
        verified_cpu=out.verified_cpu,
        partner=partner,
        rounds=len({r.round for r in out.runs}),
        runs=len(out.runs),
        seconds=out.seconds,
        cpu_seconds=sum(r.cpu_seconds for r in out.runs),
        restarts=out.restarts,
        detail=out.detail,
        duty=out.duty,
    )
