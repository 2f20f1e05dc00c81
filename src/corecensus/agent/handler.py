"""The core handler's second half, after the dying process was released.

:mod:`corecensus.agent.corehold` holds the process only as long as it must: it reads what
vanishes with it from ``/proc``, drains the core into a raw spill file and into the pattern the
agent replaced, and lets go. Then :func:`finish` does the slow work: the crashing CPU's model,
microcode and physical core, the host's CPUs and kernel, the core compressed into the store
(zstd), its head read into a crash record (register and anomaly pass, no drgn), the record
spooled, old cores pruned. A failure at any step still spools a minimal record with the reason;
nothing here ever raises to the kernel.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corecensus.agent.config import AgentConfig
from corecensus.agent.corehold import CrashArgs, Held, HoldSettings, capture
from corecensus.agent.corestore import prune_cores, store_core
from corecensus.agent.facts import BOOT_ID, cpu_facts, host_facts, process_facts_from_text
from corecensus.agent.killswitch import DEFAULT_DISABLE_FILE
from corecensus.agent.spool import LossReason, Spool
from corecensus.errors import CorecensusError
from corecensus.model import CrashRecord, ParseStatus, Problem, ProblemKind, Severity, status_of

__all__ = ["CRASH_KIND", "HandleResult", "finish", "finish_main", "handle_core", "minimal_record"]

CRASH_KIND = "crash"


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

    def to_json(self) -> dict[str, Any]:
        """What ``handle-core --json`` prints (for tests and the bench)."""
        return {
            "spooled": self.spooled,
            "core": str(self.core_path) if self.core_path else None,
            "held_s": self.held_s,
            "core_bytes": self.core_bytes,
            "timed_out": self.timed_out,
            "disabled": self.disabled,
            "problems": [p.to_json() for p in self.problems],
            "notes": self.notes,
            "record": self.record.to_json() if self.record else None,
        }


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


def hold_settings(config: AgentConfig) -> HoldSettings:
    return HoldSettings(
        str(config.state_dir), str(config.cores), config.core_max_bytes, config.handler_budget_s
    )


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
    """Capture one crash in this process: the hold, then :func:`finish`; never raises."""
    held = capture(
        args,
        stdin_fd,
        hold_settings(config),
        env=env,
        proc_root=proc_root,
        disable_file=disable_file,
        clock=clock,
    )
    return finish(held, config, proc_root=proc_root, sys_root=sys_root, wall_clock=wall_clock)


def finish(
    held: Held,
    config: AgentConfig,
    *,
    proc_root: Path = Path("/proc"),
    sys_root: Path = Path("/sys"),
    wall_clock: Callable[[], float] = time.time,
) -> HandleResult:
    """The work after the release: facts, stored core, record, spool, pruning; never raises."""
    args = held.args
    out = HandleResult(held_s=held.held_s, core_bytes=held.seen, timed_out=held.timed_out)
    out.disabled = held.disabled
    out.notes.extend(held.notes)
    if held.disabled is not None:
        return out  # kill switch: none of the agent's own work (the chain was fed)
    identity = held.identity
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
    facts = process_facts_from_text(held.stat, held.status, proc_root / str(args.pid))
    cpu = facts.fields.get("CORECENSUS_CPU")
    if cpu is not None:
        facts.update(cpu_facts(int(cpu), proc_root=proc_root, sys_root=sys_root))
    facts.update(host_facts(proc_root=proc_root, sys_root=sys_root))
    if held.boot_id:
        facts.fields[BOOT_ID] = held.boot_id  # read during the hold; the same boot
    if held.exe:
        facts.fields["COREDUMP_EXE"] = held.exe
    if held.cmdline:
        facts.fields["COREDUMP_CMDLINE"] = " ".join(a for a in held.cmdline.split("\0") if a)
    metadata.update(facts.fields)
    out.problems.extend(Problem(ProblemKind.METADATA, f"fact unknown: {n}") for n in facts.notes)
    for svc in config.services:
        if svc.matches(metadata.get("COREDUMP_EXE"), args.comm):
            metadata["CORECENSUS_SERVICE"] = svc.name
            if svc.version:
                metadata["CORECENSUS_VERSION"] = svc.version
            break
    out.problems.extend(Problem(ProblemKind(kind), detail) for kind, detail in held.problems)
    if held.timed_out:
        out.problems.append(
            Problem(
                ProblemKind.TIMED_OUT,
                f"timed_out: stopped reading the core after {config.handler_budget_s:g} s "
                f"({held.seen} bytes read); the process was released",
            )
        )
    if held.spill is not None and held.kept < held.seen:
        out.problems.append(
            Problem(
                ProblemKind.CAPPED,
                f"core cut at {held.kept} of {held.seen}+ bytes (core_max_bytes)",
            )
        )
    record: CrashRecord | None = None
    if held.spill is not None:
        try:
            out.core_path = store_core(
                Path(held.spill),
                config.cores,
                _core_name(args, identity.uid, metadata.get(BOOT_ID)),
                config.zstd_level,
            )
            _write_sidecar(out.core_path, metadata)
        except OSError as exc:
            out.problems.append(
                Problem(ProblemKind.UNREADABLE, f"cannot store the core: {exc.strerror}")
            )
            Path(held.spill).unlink(missing_ok=True)
            out.core_path = None
    if out.core_path is not None:
        record, parse_problem = _parse(out.core_path, metadata, config.parse_budget_s)
        if parse_problem is not None:
            out.problems.append(parse_problem)
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


def finish_main(
    held: Held,
    values: Mapping[str, object],
    origin: str,
    *,
    env: Mapping[str, str],
    proc_root: str,
    sys_root: str,
    as_json: bool,
) -> int:
    """:func:`finish` for :func:`corecensus.agent.corehold.main`: the full settings (a broken
    config file must not cost the crash: the defaults, with the hold's state directory, and a
    note), then the JSON summary with ``--json``. Returns the exit status (0)."""
    del env  # the settings were read before the release; kept for the signature's symmetry
    notes: list[str] = []
    try:
        config = AgentConfig.from_mapping(values, origin)
    except CorecensusError as exc:
        notes.append(str(exc))
        state = values.get("state_dir")
        config = AgentConfig() if not state else AgentConfig(state_dir=Path(str(state)))
    result = finish(held, config, proc_root=Path(proc_root), sys_root=Path(sys_root))
    result.notes.extend(notes)
    if as_json:
        json.dump(result.to_json(), sys.stdout, indent=1)
        sys.stdout.write("\n")
        sys.stdout.flush()
    return 0


def _write_sidecar(core: Path, metadata: Mapping[str, str]) -> None:
    path = Path(f"{core}.json")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(metadata), indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
