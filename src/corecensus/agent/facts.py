"""Facts that exist only while a crashing process does: the CPU its thread last ran on, the CPUs
it was allowed to run on, that CPU's model, microcode and physical core, the host's online CPUs
and the kernel (DESIGN.md, "Data contracts": the ``CORECENSUS_*`` sidecar fields).

Read from ``/proc`` and ``/sys`` roots given as parameters (production defaults), so tests point
them at fake trees where a real machine cannot be arranged (a two-socket SMT box) and at the real
``/proc`` for a real crashing process. What must be read while the kernel holds the dying process
is read by :mod:`corecensus.agent.corehold` (its parsers live there, imported here); the rest --
the CPU's model, microcode and core, the host's CPUs and kernel -- does not change with the crash
and is read here, after the release.

Every fact is best effort: a missing or unreadable file leaves its field out (unknown), never an
error, and the reason is noted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from corecensus.agent.corehold import (
    ProcessIdentity,
    parse_identity,
    stat_processor,
    status_fields,
)
from corecensus.cpulist import CpuListError, cpu_list_size, parse_cpu_list

__all__ = [
    "BOOT_ID",
    "CPU",
    "CPUS_ALLOWED",
    "CPU_CORE",
    "CPU_MODEL",
    "HOST_CPUS",
    "KERNEL",
    "MICROCODE",
    "CrashFacts",
    "ProcessIdentity",
    "cpu_count",
    "cpu_facts",
    "crash_facts",
    "first_cpu",
    "host_facts",
    "host_microcode",
    "process_facts",
    "process_facts_from_text",
    "read_identity",
    "stat_processor",
]

# The sidecar field names of DESIGN.md; the per-host hardware test (issue 9) reads them as-is.
CPU = "CORECENSUS_CPU"
CPUS_ALLOWED = "CORECENSUS_CPUS_ALLOWED"
CPU_MODEL = "CORECENSUS_CPU_MODEL"
MICROCODE = "CORECENSUS_MICROCODE"
CPU_CORE = "CORECENSUS_CPU_CORE"
HOST_CPUS = "CORECENSUS_HOST_CPUS"
KERNEL = "CORECENSUS_KERNEL"
BOOT_ID = "COREDUMP_BOOT_ID"


@dataclass(frozen=True, slots=True)
class CrashFacts:
    """Metadata fields (strings, sidecar names) and why any expected one is missing."""

    fields: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def update(self, other: CrashFacts) -> None:
        self.fields.update(other.fields)
        self.notes.extend(other.notes)


def _read(path: Path, limit: int = 1 << 20) -> str | None:
    try:
        with path.open("rb") as fh:
            return fh.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def cpu_count(text: str) -> int:
    """Number of CPUs in a kernel cpu-list (``"0-3,8"`` -> 5); CpuListError if malformed."""
    return cpu_list_size(text)


def first_cpu(text: str) -> int:
    """Lowest CPU of a kernel cpu-list; CpuListError if malformed or empty."""
    return parse_cpu_list(text)[0]


def process_facts(
    pid: int, tid: int | None = None, *, proc_root: Path = Path("/proc")
) -> CrashFacts:
    """The CPU the crashing thread last ran on and the CPUs the process was allowed.

    ``tid`` (the crashing thread, in the initial pid namespace) is read from
    ``/proc/<pid>/task/<tid>/stat`` because a multi-threaded process's ``/proc/<pid>/stat``
    describes its main thread, not the one that faulted.
    """
    base = proc_root / str(pid)
    stat = None
    if tid is not None and tid != pid:
        stat = _read(base / "task" / str(tid) / "stat")
    if stat is None:
        stat = _read(base / "stat")
    return process_facts_from_text(stat, _read(base / "status"), base)


def process_facts_from_text(stat: str | None, status: str | None, where: Path) -> CrashFacts:
    """:func:`process_facts` from the texts of ``stat`` and ``status`` already read (by the
    hold); ``where`` names them in notes."""
    out = CrashFacts()
    cpu = stat_processor(stat) if stat is not None else None
    if cpu is None:
        out.notes.append(f"{where}/stat: no processor field (process gone or unreadable)")
    else:
        out.fields[CPU] = str(cpu)
    allowed = status_fields(status).get("Cpus_allowed_list") if status else None
    if allowed:
        out.fields[CPUS_ALLOWED] = allowed
    else:
        out.notes.append(f"{where}/status: no Cpus_allowed_list")
    return out


def read_identity(pid: int, *, proc_root: Path = Path("/proc")) -> ProcessIdentity:
    """Filesystem uid/gid and the soft core limit of a process (all None if unreadable)."""
    base = proc_root / str(pid)
    return parse_identity(_read(base / "status"), _read(base / "limits"))


def cpu_facts(
    cpu: int, *, proc_root: Path = Path("/proc"), sys_root: Path = Path("/sys")
) -> CrashFacts:
    """Model and microcode of one CPU (``/proc/cpuinfo``) and its physical core.

    The physical core is the lowest logical CPU among its SMT siblings
    (``topology/thread_siblings_list``): an integer unique on the host that siblings share
    (``core_id`` alone repeats across sockets).
    """
    out = CrashFacts()
    info = _read(proc_root / "cpuinfo", limit=16 << 20)
    block = _cpuinfo_block(info, cpu) if info else None
    if block is None:
        out.notes.append(f"{proc_root}/cpuinfo: no block for processor {cpu}")
    else:
        # x86 says "model name"; arm64 has no model name, only the implementer/part ids.
        model = block.get("model name") or block.get("cpu model") or block.get("CPU part")
        if model:
            out.fields[CPU_MODEL] = model
        if block.get("microcode"):
            out.fields[MICROCODE] = block["microcode"]
    siblings = _read(
        sys_root / "devices" / "system" / "cpu" / f"cpu{cpu}" / "topology" / "thread_siblings_list"
    )
    try:
        out.fields[CPU_CORE] = str(first_cpu(siblings or ""))
    except CpuListError:
        out.notes.append(f"cpu{cpu}: no thread_siblings_list")
    return out


def _cpuinfo_block(text: str, cpu: int) -> Mapping[str, str] | None:
    current: dict[str, str] = {}
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if current.get("processor") == str(cpu):
                return current
            current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            current[key.strip()] = value.strip()
    return None


def host_facts(*, proc_root: Path = Path("/proc"), sys_root: Path = Path("/sys")) -> CrashFacts:
    """Online CPU count, kernel release and boot id of this host."""
    out = CrashFacts()
    online = _read(sys_root / "devices" / "system" / "cpu" / "online")
    try:
        out.fields[HOST_CPUS] = str(cpu_count(online or ""))
    except CpuListError:
        out.notes.append(f"{sys_root}/devices/system/cpu/online unreadable")
    release = _read(proc_root / "sys" / "kernel" / "osrelease")
    if release and release.strip():
        out.fields[KERNEL] = release.strip()
    boot = _read(proc_root / "sys" / "kernel" / "random" / "boot_id")
    if boot and boot.strip():
        out.fields[BOOT_ID] = boot.strip().replace("-", "")
    return out


def host_microcode(*, proc_root: Path = Path("/proc"), sys_root: Path = Path("/sys")) -> str | None:
    """The microcode revision this host's CPUs run (CPU 0's: a late load updates every CPU),
    from ``/sys/devices/system/cpu/cpu0/microcode/version`` (x86, a few bytes), else
    ``/proc/cpuinfo``'s first block; None when neither says. Read at every heartbeat, so an
    update shows in the host's exposure even when it never crashes again (issue 9)."""
    version = _read(sys_root / "devices" / "system" / "cpu" / "cpu0" / "microcode" / "version")
    if version and version.strip():
        return version.strip()
    info = _read(proc_root / "cpuinfo", limit=16 << 20)
    block = _cpuinfo_block(info, 0) if info else None
    return (block or {}).get("microcode") or None


def crash_facts(
    pid: int,
    tid: int | None = None,
    *,
    proc_root: Path = Path("/proc"),
    sys_root: Path = Path("/sys"),
) -> CrashFacts:
    """Everything above for one crashing process, in the order that matters: the per-process
    facts first, while the process surely exists."""
    out = process_facts(pid, tid, proc_root=proc_root)
    cpu = out.fields.get(CPU)
    if cpu is not None:
        out.update(cpu_facts(int(cpu), proc_root=proc_root, sys_root=sys_root))
    out.update(host_facts(proc_root=proc_root, sys_root=sys_root))
    exe = _readlink(proc_root / str(pid) / "exe")
    if exe:
        out.fields["COREDUMP_EXE"] = exe
    cmdline = _read(proc_root / str(pid) / "cmdline", limit=64 << 10)
    if cmdline:
        out.fields["COREDUMP_CMDLINE"] = " ".join(a for a in cmdline.split("\0") if a)
    return out


def _readlink(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None
