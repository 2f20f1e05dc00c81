"""CPU topology of this host, from ``/sys/devices/system/cpu`` and ``/proc/cpuinfo``.

The roots are parameters so tests can point them at fake trees (a two-socket SMT box under
``tests/data/topology``), in the manner of prometheus_client's ``process_collector``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corecensus.cpulist import CpuListError, format_cpu_list, parse_cpu_list
from corecensus.errors import ScreeningError

__all__ = ["CpuInfo", "Topology", "format_cpu_list", "parse_cpu_list", "read_topology"]


@dataclass(frozen=True, slots=True)
class CpuInfo:
    """One logical CPU.

    ``model_key`` groups CPUs whose code paths should agree bit for bit (vendor, family, model,
    stepping); golden values and cross-CPU consensus are kept per key. Microcode is recorded but
    not part of the key: a microcode update that changes results is exactly what golden values
    should catch.
    """

    cpu: int
    online: bool = True
    vendor: str | None = None
    model_name: str | None = None
    family: int | None = None
    model: int | None = None
    stepping: int | None = None
    microcode: str | None = None
    package_id: int | None = None
    core_id: int | None = None
    thread_siblings: tuple[int, ...] = ()
    flags: frozenset[str] = field(default_factory=frozenset)

    @property
    def model_key(self) -> str:
        return f"{self.vendor or '?'}:{self.family}:{self.model}:{self.stepping}"

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu": self.cpu,
            "online": self.online,
            "vendor": self.vendor,
            "model_name": self.model_name,
            "family": self.family,
            "model": self.model,
            "stepping": self.stepping,
            "microcode": self.microcode,
            "package_id": self.package_id,
            "core_id": self.core_id,
            "thread_siblings": list(self.thread_siblings),
            "model_key": self.model_key,
        }


@dataclass(frozen=True, slots=True)
class Topology:
    """Every logical CPU the kernel knows of (``possible``), with what is known about each."""

    cpus: tuple[CpuInfo, ...]

    def __post_init__(self) -> None:
        ids = [c.cpu for c in self.cpus]
        if len(set(ids)) != len(ids):
            raise ScreeningError(f"duplicate CPU ids in topology: {ids}")

    @property
    def online(self) -> tuple[int, ...]:
        return tuple(c.cpu for c in self.cpus if c.online)

    def get(self, cpu: int) -> CpuInfo:
        for c in self.cpus:
            if c.cpu == cpu:
                return c
        raise ScreeningError(f"CPU {cpu} does not exist on this host (known: {self.describe()})")

    def describe(self) -> str:
        return format_cpu_list(c.cpu for c in self.cpus) or "none"

    def select(self, wanted: Iterable[int] | None) -> tuple[int, ...]:
        """The CPUs to screen: ``wanted`` (all must exist and be online) or every online CPU."""
        if wanted is None:
            chosen = self.online
        else:
            chosen = tuple(sorted(set(wanted)))
            for cpu in chosen:
                if not self.get(cpu).online:
                    raise ScreeningError(f"CPU {cpu} is offline; online CPUs are {self.online}")
        if not chosen:
            raise ScreeningError("no CPU to screen")
        return chosen

    def partner(self, cpu: int, among: Iterable[int]) -> int | None:
        """The CPU that verifies what ``cpu`` computes in the cross-core check.

        The next CPU (cyclically) of the same model among ``among``, preferring one that is not
        an SMT sibling (a sibling shares the execution units, so it would share a defect), then
        any other CPU of the same model, then None.
        """
        pool = sorted(set(among))
        if cpu not in pool or len(pool) < 2:
            return None
        me = self.get(cpu)
        start = pool.index(cpu)
        ring = pool[start + 1 :] + pool[:start]
        same_model = [c for c in ring if self.get(c).model_key == me.model_key]
        not_sibling = [c for c in same_model if c not in me.thread_siblings]
        for candidates in (not_sibling, same_model):
            if candidates:
                return candidates[0]
        return None

    def to_json(self) -> dict[str, Any]:
        return {"cpus": [c.to_json() for c in self.cpus]}


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def _int(text: str | None, base: int = 10) -> int | None:
    if text is None:
        return None
    try:
        return int(text, base)
    except ValueError:
        return None


def parse_cpuinfo(text: str) -> dict[int, dict[str, str]]:
    """``/proc/cpuinfo`` (x86 layout: one block per ``processor``) -> {cpu: {field: value}}."""
    blocks: dict[int, dict[str, str]] = {}
    current: dict[str, str] = {}

    def flush() -> None:
        cpu = _int(current.get("processor"))
        if cpu is not None:
            blocks[cpu] = dict(current)

    for line in text.splitlines():
        if not line.strip():
            flush()
            current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            current[key.strip()] = value.strip()
    flush()
    return blocks


def _cpu_list(text: str | None, path: Path, *, empty_ok: bool = False) -> tuple[int, ...]:
    if text is None:
        return ()
    try:
        return parse_cpu_list(text, empty_ok=empty_ok)
    except CpuListError as exc:
        raise ScreeningError(f"CPU topology unreadable: {path}: {exc}") from None


def read_topology(sys_root: Path = Path("/sys"), proc_root: Path = Path("/proc")) -> Topology:
    """Read the host's CPUs.

    ``possible`` (falling back to ``present``, then the ``cpuN`` directories) lists every CPU;
    ``online`` says which can run work. Per CPU, ``topology/`` gives socket, core and SMT
    siblings, and ``/proc/cpuinfo`` gives vendor, family, model, stepping and microcode.
    """
    base = sys_root / "devices" / "system" / "cpu"
    if not base.is_dir():
        raise ScreeningError(f"CPU topology unreadable: {base} is not a directory")
    listed_path = base / "possible"
    listed = _read(listed_path)
    if not listed:
        listed_path = base / "present"
        listed = _read(listed_path)
    if listed:
        ids = _cpu_list(listed, listed_path)
    else:
        ids = tuple(
            sorted(
                int(p.name[3:])
                for p in base.iterdir()
                if p.name.startswith("cpu") and p.name[3:].isdigit()
            )
        )
    if not ids:
        raise ScreeningError(f"CPU topology unreadable: no CPUs listed under {base}")
    online_text = _read(base / "online")
    online = (
        set(_cpu_list(online_text, base / "online", empty_ok=True))
        if online_text is not None
        else set(ids)
    )
    cpuinfo_text = _read(proc_root / "cpuinfo")
    info: Mapping[int, Mapping[str, str]] = parse_cpuinfo(cpuinfo_text) if cpuinfo_text else {}

    cpus: list[CpuInfo] = []
    for cpu in ids:
        topo = base / f"cpu{cpu}" / "topology"
        block = info.get(cpu, {})
        siblings_text = _read(topo / "thread_siblings_list")
        siblings = _cpu_list(siblings_text, topo / "thread_siblings_list", empty_ok=True)
        cpus.append(
            CpuInfo(
                cpu=cpu,
                online=cpu in online,
                vendor=block.get("vendor_id"),
                model_name=block.get("model name"),
                family=_int(block.get("cpu family")),
                model=_int(block.get("model")),
                stepping=_int(block.get("stepping")),
                microcode=block.get("microcode"),
                package_id=_int(_read(topo / "physical_package_id")),
                core_id=_int(_read(topo / "core_id")),
                thread_siblings=tuple(s for s in siblings if s != cpu),
                flags=frozenset(block.get("flags", "").split()),
            )
        )
    return Topology(tuple(cpus))
