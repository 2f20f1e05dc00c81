"""Supervising the per-CPU worker processes under hard time budgets.

Each worker is a fresh interpreter (``subprocess``, not ``fork``): it gets exactly the environment
the caller gives it -- which is how a test injects an ``LD_PRELOAD`` fault shim -- and it can be
killed as a whole process group. The supervisor never blocks on a worker: it waits on all their
pipes at once with a timeout equal to the nearest deadline, kills a worker whose CPU budget is
spent (``timed_out``), notices one that died (``crashed``) and restarts it once for the checks it
had not reached. The screen therefore returns within its overall budget, whatever the workers do
-- the lesson of the boot-time diagnostic that outlived its timeout and kept nodes out of a
cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from corecensus.errors import CorecensusError, ScreeningError
from corecensus.screening.outcome import WorkerStatus
from corecensus.screening.wire import DutyReport, RunRecord, WorkerJob

__all__ = ["Interrupted", "WorkerOutcome", "supervise"]

_READ_CHUNK = 1 << 16
# Below this much time left, a crashed worker is not restarted: start-up alone costs ~0.3 s.
_MIN_RESTART_S = 1.0


@dataclass(frozen=True, slots=True)
class Interrupted:
    """A run that never finished: ``reason`` is ``crashed`` or ``timed_out``."""

    check: str
    round: int
    attempt: int
    reason: WorkerStatus
    detail: str


@dataclass(frozen=True, slots=True)
class WorkerOutcome:
    """Everything one CPU's worker(s) reported, and how they ended."""

    cpu: int
    status: WorkerStatus
    runs: tuple[RunRecord, ...] = ()
    interrupted: tuple[Interrupted, ...] = ()
    unavailable: tuple[tuple[str, str], ...] = ()
    families: tuple[tuple[str, str], ...] = ()
    duty: DutyReport | None = None
    verified_cpu: int | None = None
    detail: str = ""
    restarts: int = 0
    seconds: float = 0.0


@dataclass
class _Live:
    """A running worker and what it has said so far (mutable bookkeeping of the supervisor)."""

    cpu: int
    job: WorkerJob
    proc: subprocess.Popen[bytes]
    hard_deadline: float
    stderr: Path
    started: float
    buffer: bytes = b""
    runs: list[RunRecord] = field(default_factory=list)
    in_progress: tuple[str, int, int] | None = None
    ready: bool = False
    done: bool = False
    pin_failed: str | None = None
    verified_cpu: int | None = None
    duty: DutyReport | None = None
    unavailable: list[tuple[str, str]] = field(default_factory=list)
    families: dict[str, str] = field(default_factory=dict)


@dataclass
class _CpuState:
    runs: list[RunRecord] = field(default_factory=list)
    interrupted: list[Interrupted] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    families: dict[str, str] = field(default_factory=dict)
    restarts: int = 0
    first_start: float | None = None
    soft_deadline: float = 0.0
    hard_deadline: float = 0.0
    duty: DutyReport | None = None
    verified_cpu: int | None = None
    status: WorkerStatus | None = None
    detail: str = ""
    seconds: float = 0.0


def _signal_name(returncode: int) -> str:
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


def _tail(path: Path, limit: int = 400) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-limit:].strip()


def supervise(
    jobs: Sequence[WorkerJob],
    *,
    budget_s: float,
    overall_deadline: float,
    concurrency: int,
    env: Mapping[str, str],
    python: str,
    grace_s: float = 1.0,
    max_restarts: int = 1,
    clock: Callable[[], float] = time.monotonic,
) -> dict[int, WorkerOutcome]:
    """Run ``jobs`` (one per CPU, their ``deadline`` is filled in at launch) and collect outcomes.

    Each worker gets ``budget_s`` seconds from its launch (soft: it starts nothing that would end
    later) and is killed ``grace_s`` after that (hard). Nothing runs past ``overall_deadline``
    (a ``time.monotonic()`` value). At most ``concurrency`` workers run at once.
    """
    if concurrency < 1:
        raise ScreeningError("concurrency must be at least 1")
    queue = list(jobs)
    states: dict[int, _CpuState] = {job.cpu: _CpuState() for job in jobs}
    live: dict[int, _Live] = {}  # fd -> worker
    sel = selectors.DefaultSelector()
    workdir = tempfile.TemporaryDirectory(prefix="corecensus-screen-")
    try:
        while queue or live:
            now = clock()
            while queue and len(live) < concurrency:
                job = queue.pop(0)
                st = states[job.cpu]
                if st.first_start is None:  # a first launch, not a restart after a crash
                    if overall_deadline - now < _MIN_RESTART_S:
                        st.status = WorkerStatus.NOT_STARTED
                        st.detail = "the screen's overall budget ran out before this CPU's turn"
                        continue
                    st.first_start = now
                    st.soft_deadline = min(now + budget_s, overall_deadline - grace_s)
                    st.hard_deadline = min(now + budget_s + grace_s, overall_deadline)
                w = _launch(
                    replace(job, deadline=st.soft_deadline),
                    st,
                    env=env,
                    python=python,
                    workdir=workdir.name,
                    now=now,
                )
                live[w.proc.stdout.fileno()] = w  # type: ignore[union-attr]
                sel.register(w.proc.stdout, selectors.EVENT_READ, w)  # type: ignore[arg-type]
            if not live:
                continue
            timeout = max(0.0, min(w.hard_deadline for w in live.values()) - clock())
            for key, _ in sel.select(timeout=timeout):
                w = key.data
                chunk = os.read(key.fd, _READ_CHUNK)
                if chunk:
                    _consume(w, chunk)
                    continue
                sel.unregister(key.fileobj)
                del live[key.fd]
                follow = _finish_exited(w, states[w.cpu], max_restarts, clock())
                if follow is not None:
                    queue.insert(0, follow)
            now = clock()
            for fd, w in list(live.items()):
                if now >= w.hard_deadline:
                    sel.unregister(w.proc.stdout)  # type: ignore[arg-type]
                    del live[fd]
                    _kill(w)
                    _finish_killed(w, states[w.cpu], now)
    finally:
        for w in live.values():
            _kill(w)
        sel.close()
        workdir.cleanup()
    return {cpu: _outcome(cpu, st) for cpu, st in states.items()}


def _launch(
    job: WorkerJob,
    st: _CpuState,
    *,
    env: Mapping[str, str],
    python: str,
    workdir: str,
    now: float,
) -> _Live:
    stderr_path = Path(workdir) / f"cpu{job.cpu}-{st.restarts}.stderr"
    with stderr_path.open("wb") as err:
        try:
            proc = subprocess.Popen(
                [python, "-m", "corecensus.screening.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env=dict(env),
                cwd=workdir,  # a worker that dumps core anyway dumps it here, and it is removed
                start_new_session=True,  # its own process group: killing it kills its threads
                close_fds=True,
            )
        except OSError as exc:
            raise ScreeningError(f"cannot start a screening worker ({python}): {exc}") from exc
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(json.dumps(job.to_json()).encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass  # it died at once; the supervisor sees EOF and records the crash
    os.set_blocking(proc.stdout.fileno(), False)
    return _Live(
        cpu=job.cpu,
        job=job,
        proc=proc,
        hard_deadline=st.hard_deadline,
        stderr=stderr_path,
        started=now,
    )


def _consume(w: _Live, chunk: bytes) -> None:
    w.buffer += chunk
    *lines, w.buffer = w.buffer.split(b"\n")
    for raw in lines:
        if not raw.strip():
            continue
        try:
            event = json.loads(raw)
            kind = event.pop("event")
        except (ValueError, KeyError, AttributeError):
            continue  # not protocol (cannot happen: stdout is private); ignore rather than die
        try:
            _apply(w, kind, event)
        except (CorecensusError, KeyError, TypeError, ValueError):
            continue  # a malformed event proves nothing; the run it described stays unreported


def _apply(w: _Live, kind: str, event: dict[str, Any]) -> None:
    if kind == "start":
        w.in_progress = (str(event["check"]), int(event["round"]), int(event["attempt"]))
    elif kind == "run":
        w.runs.append(RunRecord.from_json(event))
        w.in_progress = None
    elif kind == "ready":
        w.ready = True
        w.verified_cpu = int(event["ran_on"])
    elif kind == "pin_failed":
        w.pin_failed = str(event.get("detail", "pinning failed"))
    elif kind == "loaded":
        w.families.update({str(k): str(v) for k, v in dict(event["families"]).items()})
    elif kind == "unavailable":
        w.unavailable.append((str(event["check"]), str(event["detail"])))
    elif kind == "duty":
        w.duty = DutyReport.from_json(event)
    elif kind == "done":
        w.done = True
    elif kind == "error":
        w.pin_failed = str(event.get("detail", "worker error"))


def _kill(w: _Live) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(w.proc.pid, signal.SIGKILL)
    w.proc.wait()
    if w.proc.stdout is not None:
        w.proc.stdout.close()


def _absorb(w: _Live, st: _CpuState, now: float) -> None:
    st.runs.extend(w.runs)
    for name, detail in w.unavailable:
        st.unavailable[name] = detail
    st.families.update(w.families)
    if w.verified_cpu is not None:
        st.verified_cpu = w.verified_cpu
    if w.duty is not None:
        st.duty = w.duty
    st.seconds += now - w.started


def _finish_exited(w: _Live, st: _CpuState, max_restarts: int, now: float) -> WorkerJob | None:
    """A worker closed its stdout: it finished, failed to pin, or died. Maybe restart it."""
    try:
        rc = w.proc.wait(timeout=max(0.0, w.hard_deadline - now))
    except subprocess.TimeoutExpired:
        _kill(w)
        rc = w.proc.returncode
    if w.proc.stdout is not None:
        w.proc.stdout.close()
    _absorb(w, st, now)
    if w.done and rc == 0:
        st.status = WorkerStatus.COMPLETED
        return None
    if w.pin_failed is not None:
        st.status = WorkerStatus.PIN_FAILED
        st.detail = w.pin_failed
        return None
    how = _signal_name(rc)
    tail = _tail(w.stderr)
    detail = f"worker died ({how})" + (f": {tail.splitlines()[-1]}" if tail else "")
    st.status = WorkerStatus.CRASHED
    st.detail = detail
    if w.in_progress is not None:
        name, round_, attempt = w.in_progress
        st.interrupted.append(Interrupted(name, round_, attempt, WorkerStatus.CRASHED, detail))
    if st.restarts >= max_restarts or st.soft_deadline - now < _MIN_RESTART_S:
        return None
    st.restarts += 1
    done = tuple(sorted({(r.round, r.check) for r in st.runs}))
    excluded = tuple(sorted({i.check for i in st.interrupted}))
    return replace(w.job, done=done, exclude=excluded, start_round=0)


def _finish_killed(w: _Live, st: _CpuState, now: float) -> None:
    _absorb(w, st, now)
    if w.done:
        st.status = WorkerStatus.COMPLETED
        return
    st.status = WorkerStatus.TIMED_OUT
    budget = now - (st.first_start if st.first_start is not None else w.started)
    if w.in_progress is not None:
        name, round_, attempt = w.in_progress
        st.detail = f"killed after {budget:.1f} s: {name} (round {round_}) never finished"
        st.interrupted.append(Interrupted(name, round_, attempt, WorkerStatus.TIMED_OUT, st.detail))
    elif not w.ready:
        st.detail = f"killed after {budget:.1f} s before it was ready (start-up too slow?)"
    else:
        st.detail = f"killed after {budget:.1f} s between runs"


def _outcome(cpu: int, st: _CpuState) -> WorkerOutcome:
    status = st.status or WorkerStatus.NOT_STARTED
    return WorkerOutcome(
        cpu=cpu,
        status=status,
        runs=tuple(st.runs),
        interrupted=tuple(st.interrupted),
        unavailable=tuple(sorted(st.unavailable.items())),
        families=tuple(sorted(st.families.items())),
        duty=st.duty,
        verified_cpu=st.verified_cpu,
        detail=st.detail,
        restarts=st.restarts,
        seconds=st.seconds,
    )
