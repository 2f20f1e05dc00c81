"""``corecensus agent handle-core %P %i %I %s %t %h %e``: the kernel's core_pattern pipe handler.

While the kernel holds the dying process (it sleeps in the pipe write until the handler has read
the core, and with ``core_pipe_limit`` set until the handler lets go of the pipe), the handler:

1. reads what only exists now from ``/proc/<pid>`` (the CPU the thread last ran on, the CPUs it
   was allowed, who it was) and that CPU's model, microcode and physical core;
2. streams the core from stdin into a zstd file (size-capped) and into the pattern it replaced;
3. lets go of the pipe -- at EOF, or when its time budget runs out (then the kernel stops
   writing, the process dies, and the record says the core was cut short).

Only then does it do the slow work: import the parser, read the head of the stored core into a
crash record (register and anomaly pass, no drgn), spool the record and prune old cores. A failure
at any step still spools a minimal record with the reason; nothing here ever raises to the kernel.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import select
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corecensus.agent.chain import CoreSink, CrashArgs, open_chain
from corecensus.agent.config import AgentConfig
from corecensus.agent.corepattern import KernelFiles, load_state
from corecensus.agent.corestore import CoreWriter, prune_cores
from corecensus.agent.facts import BOOT_ID, crash_facts, read_identity
from corecensus.agent.killswitch import DEFAULT_DISABLE_FILE, disabled_reason
from corecensus.agent.spool import LossReason, Spool
from corecensus.model import CrashRecord, ParseStatus, Problem, ProblemKind, Severity, status_of

__all__ = ["CRASH_KIND", "HandleResult", "handle_core", "minimal_record"]

CRASH_KIND = "crash"
_CHUNK = 1 << 20


@dataclass(slots=True)
class HandleResult:
    """What one handler run did; ``held_s`` is how long the dying process waited on it.

    ``problems`` go into the crash record; ``notes`` are about the host's own core handling
    (the chained pattern), not about the crash."""

    record: CrashRecord | None = None
    spooled: str | None = None
    core_path: Path | None = None
    held_s: float = 0.0
    core_bytes: int = 0
    timed_out: bool = False
    disabled: str | None = None
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _core_name(args: CrashArgs, uid: int | None, boot_id: str | None) -> str:
    """systemd-coredump's file name (``core.<comm>.<uid>.<boot id>.<pid>.<µs>``), so ``ingest``
    reads the same metadata from these files as from systemd's (coredump.c make_filename)."""
    comm = "".join(c if c.isalnum() or c in "-_" else f"\\x{ord(c):02x}" for c in args.comm)
    boot = boot_id if boot_id and len(boot_id) == 32 else "0" * 32
    return f"core.{comm or 'unknown'}.{uid if uid is not None else 0}.{boot}.{args.pid}.{args.time_s * 1_000_000}"


def minimal_record(metadata: Mapping[str, str], problems: list[Problem]) -> CrashRecord:
    """The record of a crash whose core could not be read: its metadata and why (DESIGN.md:
    bad input gets a stored ``unparsed`` record with the reason). Its id is a hash of host,
    boot, pid and time, so a retried upload of it is stored once."""
    key = "|".join(
        metadata.get(k, "")
        for k in ("COREDUMP_HOSTNAME", "COREDUMP_BOOT_ID", "COREDUMP_PID", "COREDUMP_TIMESTAMP")
    )
    cpu = metadata.get("CORECENSUS_CPU")
    return CrashRecord(
        core_id=hashlib.sha256(key.encode()).hexdigest()[:32],
        status=ParseStatus.UNPARSED,
        problems=tuple(dict.fromkeys(problems)),
        cpu=int(cpu) if cpu and cpu.isdigit() else None,
        metadata=dict(metadata),
    )


def _with_problems(record: CrashRecord, extra: list[Problem]) -> CrashRecord:
    """``record`` with the handler's problems added; the status only ever gets worse."""
    if not extra:
        return record
    order = [ParseStatus.OK, ParseStatus.PARTIAL, ParseStatus.UNPARSED]
    worst = max(record.status, status_of(extra), key=order.index)
    return dataclasses.replace(
        record, problems=tuple(dict.fromkeys([*record.problems, *extra])), status=worst
    )


def _stream(
    fd: int,
    sinks: list[Any],
    writer: CoreWriter | None,
    deadline: float,
    clock: Callable[[], float],
) -> tuple[int, bool]:
    """Copy ``fd`` to the sinks until EOF or the deadline; (bytes read, timed out)."""
    total = 0
    while True:
        if writer is not None and writer.full and not sinks:
            return total, False  # nothing more to keep: let the process go now
        remaining = deadline - clock()
        if remaining <= 0:
            return total, True
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            return total, True
        data = os.read(fd, _CHUNK)
        if not data:
            return total, False
        total += len(data)
        if writer is not None:
            writer.write(data)
        for sink in sinks:
            sink.write(data)


def _release(fd: int) -> None:
    """Let go of the kernel's pipe (the dying process is then reaped), keeping ``fd`` valid."""
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def _parse(
    path: Path, metadata: Mapping[str, str], budget_s: float
) -> tuple[CrashRecord | None, Problem | None]:
    """The head of the stored core as a crash record (no drgn), within ``budget_s``.

    The parse runs in a daemon thread: past the budget the handler spools a minimal record and
    exits, and the thread ends with the process.
    """
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            # Imported only now, after the dying process was released: the parser's imports
            # (capstone, numpy) cost more than the rest of the handler.
            from corecensus.coredump import inspect_core

            box["record"] = inspect_core(path, symbolize=False, metadata=metadata)
        except Exception as exc:  # a parser bug must still leave a record
            box["error"] = Problem(
                ProblemKind.CORRUPT, f"parser failed: {type(exc).__name__}: {exc}"
            )

    thread = threading.Thread(target=work, name="parse-core", daemon=True)
    thread.start()
    thread.join(budget_s)
    if thread.is_alive():
        return None, Problem(
            ProblemKind.TIMED_OUT, f"timed_out: parsing the core took longer than {budget_s:g} s"
        )
    return box.get("record"), box.get("error")


def handle_core(
    args: CrashArgs,
    stdin_fd: int,
    config: AgentConfig,
    *,
    env: Mapping[str, str],
    proc_root: Path = Path("/proc"),
    sys_root: Path = Path("/sys"),
    disable_file: Path = DEFAULT_DISABLE_FILE,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> HandleResult:
    """Capture one crash; never raises (see the module docstring)."""
    start = clock()
    deadline = start + config.handler_budget_s
    out = HandleResult()
    kernel = KernelFiles(proc_root)
    identity = read_identity(args.pid, proc_root=proc_root)
    chain_args = CrashArgs(
        args.pid,
        args.tid_ns,
        args.tid,
        args.signal,
        args.time_s,
        args.hostname,
        args.comm,
        pid_ns=identity.pid_ns,
        uid=identity.uid,
        gid=identity.gid,
        exe=_readlink(proc_root / str(args.pid) / "exe"),
    )
    sinks: list[CoreSink] = []
    try:
        state = load_state(config.state_dir)
    except Exception as exc:
        state = None
        out.notes.append(str(exc))
    if state is not None:
        uses_pid = _read_flag(kernel.core_uses_pid)
        sink, problem = open_chain(
            state.previous_pattern,
            chain_args,
            identity,
            core_uses_pid=uses_pid,
            proc_root=proc_root,
        )
        if sink is not None:
            sinks.append(sink)
        if problem:
            out.notes.append(problem)

    out.disabled = disabled_reason(env, disable_file)
    if out.disabled is not None:
        # Kill switch: none of the agent's own work; the host's previous handling goes on.
        try:
            _stream(stdin_fd, list(sinks), None, deadline, clock)
        finally:
            for s in sinks:
                s.close()
            _release(stdin_fd)
            out.held_s = clock() - start
        return out

    metadata: dict[str, str] = {
        "COREDUMP_PID": str(args.pid),
        "COREDUMP_SIGNAL": str(args.signal),
        "COREDUMP_TIMESTAMP": str(args.time_s * 1_000_000),
        "COREDUMP_HOSTNAME": config.hostname or args.hostname,
        "COREDUMP_COMM": args.comm,
    }
    if identity.uid is not None:
        metadata["COREDUMP_UID"] = str(identity.uid)
    if identity.gid is not None:
        metadata["COREDUMP_GID"] = str(identity.gid)
    writer: CoreWriter | None = None
    try:
        facts = crash_facts(args.pid, args.tid, proc_root=proc_root, sys_root=sys_root)
        metadata.update(facts.fields)
        out.problems.extend(
            Problem(ProblemKind.METADATA, f"fact unknown: {n}") for n in facts.notes
        )
        for svc in config.services:
            if svc.matches(metadata.get("COREDUMP_EXE"), args.comm):
                metadata["CORECENSUS_SERVICE"] = svc.name
                if svc.version:
                    metadata["CORECENSUS_VERSION"] = svc.version
                break
        try:
            writer = CoreWriter(
                config.cores,
                _core_name(args, identity.uid, metadata.get(BOOT_ID)),
                config.core_max_bytes,
                config.zstd_level,
            )
        except OSError as exc:
            out.problems.append(
                Problem(
                    ProblemKind.UNREADABLE,
                    f"cannot store the core under {config.cores}: {exc.strerror}",
                )
            )
        try:
            out.core_bytes, out.timed_out = _stream(stdin_fd, list(sinks), writer, deadline, clock)
        except OSError as exc:
            out.problems.append(
                Problem(
                    ProblemKind.TRUNCATED,
                    f"reading the core from the kernel failed: {exc.strerror}",
                )
            )
    finally:
        for s in sinks:
            problem = s.close()
            if problem:
                out.notes.append(problem)
        _release(stdin_fd)
        out.held_s = clock() - start

    if out.timed_out:
        out.problems.append(
            Problem(
                ProblemKind.TIMED_OUT,
                f"timed_out: stopped reading the core after {config.handler_budget_s:g} s "
                f"({out.core_bytes} bytes read); the process was released",
            )
        )
    if writer is not None and writer.kept < writer.seen:
        out.problems.append(
            Problem(
                ProblemKind.CAPPED,
                f"core cut at {writer.kept} of {writer.seen}+ bytes (core_max_bytes)",
            )
        )
    record: CrashRecord | None = None
    try:
        if writer is not None:
            out.core_path = writer.finish()
            _write_sidecar(out.core_path, metadata)
            record, parse_problem = _parse(out.core_path, metadata, config.parse_budget_s)
            if parse_problem is not None:
                out.problems.append(parse_problem)
    except OSError as exc:
        out.problems.append(
            Problem(ProblemKind.UNREADABLE, f"cannot store the core: {exc.strerror}")
        )
        if writer is not None:
            writer.abort()
            out.core_path = None
    if record is None:
        if not any(p.kind.severity is Severity.FATAL for p in out.problems):
            out.problems.append(
                Problem(ProblemKind.UNREADABLE, "no crash record could be read from the core")
            )
        record = minimal_record(metadata, out.problems)
    else:
        record = _with_problems(record, out.problems)
    out.record = record
    try:
        spool = Spool(config.spool_dir, config.spool_max_bytes)
        out.spooled = spool.put(CRASH_KIND, record.to_json())
    except OSError as exc:
        out.notes.append(f"cannot spool the record: {exc.strerror} ({LossReason.WRITE_FAILED})")
    try:
        prune_cores(
            config.cores,
            max_total_bytes=config.cores_max_total_bytes,
            max_age_s=config.cores_max_age_s,
            now=wall_clock(),
            keep=out.core_path,
        )
    except OSError as exc:
        out.notes.append(f"pruning stored cores failed: {exc.strerror}")
    return out


def _write_sidecar(core: Path, metadata: Mapping[str, str]) -> None:
    path = Path(f"{core}.json")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(metadata), indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _read_flag(path: Path) -> bool:
    try:
        return path.read_text().strip() not in ("", "0")
    except OSError:
        return False


def _readlink(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None
