"""From crash populations to screens: a hardware-suspect population recommends screening its hosts.

Crash epidemiology finds a defective CPU after it has hurt; a screen confirms it before anyone
pulls a machine. This reads the ``corecensus analyze --json`` contract (populations with
``verdict`` and ``suspects`` of ``{host, cpu, crashes, expected, p_value}``) and returns one
recommendation per suspect host, naming the CPUs the crashes ran on; the report shows them beside
the population, and the agent on that host turns its recommendation into a screen.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from corecensus.errors import ScreeningError

__all__ = ["HARDWARE_SUSPECT", "ScreenRecommendation", "recommend_screens"]

HARDWARE_SUSPECT = "hardware-suspect"


@dataclass(frozen=True, slots=True)
class ScreenRecommendation:
    """Screen ``host``; ``cpus`` are the CPUs its suspect crashes ran on (empty: unknown, screen
    all). ``populations`` are the ids that point at it; ``reason`` says why, with numbers."""

    host: str
    cpus: tuple[int, ...]
    populations: tuple[str, ...]
    reason: str

    def command(self) -> str:
        """The command to run on the host (``oneshot``: a suspect deserves the full battery)."""
        cpus = f" --cpus {','.join(map(str, self.cpus))}" if self.cpus else ""
        return f"corecensus screen --mode oneshot{cpus} --json"

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "cpus": list(self.cpus),
            "populations": list(self.populations),
            "reason": self.reason,
            "command": self.command(),
        }


def recommend_screens(populations: Iterable[Mapping[str, Any]]) -> tuple[ScreenRecommendation, ...]:
    """One recommendation per host named as a suspect by a hardware-suspect population."""
    cpus: dict[str, set[int]] = defaultdict(set)
    unknown_cpu: set[str] = set()
    pops: dict[str, list[str]] = defaultdict(list)
    evidence: dict[str, list[str]] = defaultdict(list)
    for i, pop in enumerate(populations):
        if not isinstance(pop, Mapping):
            raise ScreeningError(f"population {i} is not an object")
        if pop.get("verdict") != HARDWARE_SUSPECT:
            continue
        pid = str(pop.get("id", i))
        for s in pop.get("suspects") or ():
            host = s.get("host") if isinstance(s, Mapping) else None
            if not host:
                continue
            host = str(host)
            cpu = s.get("cpu")
            if cpu is None:
                unknown_cpu.add(host)
            else:
                try:
                    cpus[host].add(int(cpu))
                except (TypeError, ValueError):
                    raise ScreeningError(
                        f"population {pid}: suspect cpu {cpu!r} is not an integer"
                    ) from None
            if pid not in pops[host]:
                pops[host].append(pid)
            where = f"CPU {cpu}" if cpu is not None else "an unknown CPU"
            p = s.get("p_value")
            stats = f", p={float(p):.2g}" if isinstance(p, int | float) else ""
            evidence[host].append(
                f"population {pid}: {s.get('crashes', '?')} crashes on {where} "
                f"(expected {s.get('expected', '?')}{stats})"
            )
    out = []
    for host in sorted(pops):
        chosen = () if host in unknown_cpu else tuple(sorted(cpus[host]))
        out.append(
            ScreenRecommendation(
                host=host,
                cpus=chosen,
                populations=tuple(pops[host]),
                reason="hardware-suspect crash concentration: " + "; ".join(evidence[host]),
            )
        )
    return tuple(out)
