"""The worker process of one CPU: ``python -m corecensus.screening.worker`` (job on stdin).

It pins itself to its CPU and proves it got there before running anything, then runs the
battery round after round with the seeds of :func:`~corecensus.screening.wire.run_seed`, retries
every failure with new seeds, and reports each run as a JSON line. It never decides anything:
classification and the host decision are the parent's, which sees every CPU.

Background mode runs at ``SCHED_IDLE`` (it gets a CPU only when nothing else wants it; Linux
sched(7)) in short slices paced to a CPU-time budget, and measures its own duty cycle.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from collections.abc import Iterator
from typing import IO, Any

from corecensus.errors import CorecensusError
from corecensus.screening.affinity import current_cpu, pin
from corecensus.screening.checks import Check, CheckContext, CheckNotApplicable, load_check
from corecensus.screening.wire import (
    BackgroundPlan,
    DutyReport,
    RunRecord,
    RunStatus,
    WorkerJob,
    run_seed,
)

__all__ = ["main"]


class _Emitter:
    """Writes protocol lines to a private copy of the original stdout.

    fd 1 is then pointed at stderr, so a check (or a library) that prints cannot corrupt the
    protocol.
    """

    def __init__(self) -> None:
        sys.stdout.flush()
        self._out: IO[bytes] = os.fdopen(os.dup(1), "wb", buffering=0)
        os.dup2(2, 1)

    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, **fields}, separators=(",", ":")) + "\n"
        self._out.write(line.encode())


class _Runner:
    def __init__(self, job: WorkerJob, out: _Emitter, checks: dict[str, Check]) -> None:
        self.job = job
        self.out = out
        self.checks = checks
        self.estimate: dict[str, float] = {}

    def one(self, name: str, round_: int, attempt: int) -> RunRecord:
        job = self.job
        seed = run_seed(job.seed, round_, name, attempt)
        self.out.emit("start", check=name, round=round_, attempt=attempt)
        before = current_cpu()
        t0, c0 = time.monotonic(), time.process_time()
        ctx = CheckContext(seed=seed, scale=job.scale, cpu=job.cpu, partner=job.partner)
        status = RunStatus.PASSED
        expected = observed = fingerprint = detail = ""
        try:
            obs = self.checks[name].run(ctx)
        except CheckNotApplicable as exc:
            status, detail = RunStatus.SKIPPED, str(exc)
        except Exception as exc:
            # A library raising on data it computed itself (a bad tag, a corrupt stream) is how
            # corruption often shows: a failed run, with the exception as what was observed.
            status = RunStatus.FAILED
            expected = "no exception"
            observed = f"{type(exc).__name__}: {exc}"
            detail = "".join(traceback.format_exception_only(exc)).strip()[:500]
        else:
            status = RunStatus.PASSED if obs.ok else RunStatus.FAILED
            expected, observed = obs.expected, obs.observed
            fingerprint, detail = obs.fingerprint, obs.detail
        seconds = time.monotonic() - t0
        record = RunRecord(
            cpu=job.cpu,
            check=name,
            round=round_,
            attempt=attempt,
            seed=seed,
            status=status,
            expected=expected,
            observed=observed,
            fingerprint=fingerprint,
            detail=detail,
            seconds=seconds,
            cpu_seconds=time.process_time() - c0,
            ran_on=(before, current_cpu()),
        )
        self.estimate[name] = max(self.estimate.get(name, 0.0), seconds)
        self.out.emit("run", **record.to_json())
        return record

    def with_retries(self, name: str, round_: int) -> None:
        record = self.one(name, round_, 0)
        attempt = 1
        while record.status is RunStatus.FAILED and attempt <= self.job.retries:
            if not self.fits(name):
                break
            record_retry = self.one(name, round_, attempt)
            attempt += 1
            if record_retry.status is RunStatus.FAILED:
                # Reproduced: one more failing retry adds nothing to the classification.
                break

    def fits(self, name: str) -> bool:
        return time.monotonic() + self.estimate.get(name, 0.0) < self.job.deadline

    def sequence(self) -> Iterator[tuple[int, str]]:
        """(round, check) pairs in order, skipping what a crashed predecessor finished."""
        job = self.job
        done = set(job.done)
        names = [n for n in self.checks if n not in job.exclude]
        if not names:
            return
        round_ = job.start_round
        while job.rounds is None or round_ < job.rounds:
            for name in names:
                if (round_, name) not in done:
                    yield round_, name
            round_ += 1

    def foreground(self) -> None:
        for round_, name in self.sequence():
            if not self.fits(name):
                break
            self.with_retries(name, round_)

    def background(self, plan: BackgroundPlan, startup_cpu: float) -> None:
        job = self.job
        w0, c0 = time.monotonic(), time.process_time()
        allowance = plan.duty_cycle * max(0.0, job.deadline - w0)
        # A slice ends once it has used slice_cpu_s, overshooting by at most one run; the
        # estimate grows to the largest slice actually measured.
        slice_estimate = 1.25 * plan.slice_cpu_s
        slices = 0
        max_cpu = max_wall = 0.0
        work = self.sequence()
        pending: tuple[int, str] | None = next(work, None)
        while pending is not None:
            # Start a slice only if the whole window can still pay for it at the duty cycle.
            if (time.process_time() - c0) + slice_estimate > allowance:
                break
            s_wall, s_cpu = time.monotonic(), time.process_time()
            while pending is not None:
                round_, name = pending
                unit = self.estimate.get(name, 0.0)
                used = time.process_time() - s_cpu
                if used > 0 and (used >= plan.slice_cpu_s or used + unit > plan.max_slice_s):
                    break
                self.with_retries(name, round_)
                pending = next(work, None)
            slices += 1
            cpu_used = time.process_time() - s_cpu
            max_cpu = max(max_cpu, cpu_used)
            max_wall = max(max_wall, time.monotonic() - s_wall)
            slice_estimate = max(slice_estimate, cpu_used)
            # Pay for the slice: sleep until total CPU / elapsed is back at the duty cycle.
            wake = w0 + (time.process_time() - c0) / plan.duty_cycle
            time.sleep(max(0.0, min(wake, job.deadline) - time.monotonic()))
        # Sit out the rest of the window: the duty cycle is measured over all of it.
        time.sleep(max(0.0, job.deadline - time.monotonic()))
        window = time.monotonic() - w0
        cpu = time.process_time() - c0
        report = DutyReport(
            window_s=window,
            cpu_s=cpu,
            duty_cycle=cpu / window if window > 0 else 0.0,
            slices=slices,
            max_slice_cpu_s=max_cpu,
            max_slice_wall_s=max_wall,
            startup_cpu_s=startup_cpu,
            idle_priority=os.sched_getscheduler(0) == os.SCHED_IDLE,
        )
        self.out.emit("duty", **report.to_json())


def _load(job: WorkerJob, out: _Emitter) -> dict[str, Check]:
    checks: dict[str, Check] = {}
    for name, spec in job.checks:
        try:
            checks[name] = load_check(spec)
        except CorecensusError as exc:
            out.emit("unavailable", check=name, detail=str(exc))
    return checks


def main(stdin: IO[str] | None = None) -> int:
    # A check that crashes the worker on purpose (or a corrupted core that does) must not leave a
    # core file in whatever directory the screen was started from.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    out = _Emitter()
    try:
        job = WorkerJob.from_json(json.loads((stdin or sys.stdin).read()))
    except (ValueError, CorecensusError) as exc:
        out.emit("error", detail=f"bad job: {exc}")
        return 2
    if job.background is not None and job.background.idle_priority:
        # Before the heavy imports, so even start-up only takes CPU nobody else wants.
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    try:
        pin(job.cpu)
    except CorecensusError as exc:
        out.emit("pin_failed", cpu=job.cpu, detail=str(exc))
        return 3
    checks = _load(job, out)
    out.emit("loaded", families={name: check.family for name, check in checks.items()})
    startup_cpu = time.process_time()
    out.emit("ready", cpu=job.cpu, ran_on=current_cpu(), pid=os.getpid(), startup_cpu_s=startup_cpu)
    runner = _Runner(job, out, checks)
    if job.background is not None:
        runner.background(job.background, startup_cpu)
    else:
        runner.foreground()
    out.emit("done", cpu=job.cpu)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
