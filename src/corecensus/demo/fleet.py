"""The demo's small simulated fleet: hosts, CPUs, versions, a deploy, and which crash goes where.

Three populations, each a real crash of the ``ledger`` program:

- ``parse``: a software bug present in every version, spread over the fleet in proportion to
  each host's exposure, on random CPUs;
- ``commit``: a regression that starts with the 2.0 deploy (crashes only on hosts already on 2.0);
- ``faulty``: one host whose CPU 11 computes wrongly: every crash there is on CPU 11 and has
  ``%rsp`` off by 8, whatever the version.

Everything is deterministic for a given seed, so the demo's findings are reproducible.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

__all__ = ["DemoCrash", "DemoFleet", "plan_fleet"]

START = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 20
DEPLOY_DAY = 10
FAULTY_HOST = "host-07"
FAULTY_CPU = 11


@dataclass(frozen=True, slots=True)
class DemoHost:
    name: str
    cpus: int
    cpu_model: str
    microcode: str
    kernel: str
    processes: int
    upgraded_at: datetime  # when this host switched from 1.4 to 2.0


@dataclass(frozen=True, slots=True)
class DemoCrash:
    mode: str  # ledger's argument: parse | commit | faulty
    host: DemoHost
    cpu: int
    time: datetime
    version: str

    def sidecar(self) -> dict[str, str]:
        """systemd-coredump field names plus corecensus's own (DESIGN.md data contracts)."""
        return {
            "COREDUMP_HOSTNAME": self.host.name,
            "COREDUMP_TIMESTAMP": str(int(self.time.timestamp() * 1_000_000)),
            "COREDUMP_COMM": "ledger",
            "CORECENSUS_CPU": str(self.cpu),
            "CORECENSUS_CPU_MODEL": self.host.cpu_model,
            "CORECENSUS_MICROCODE": self.host.microcode,
            "CORECENSUS_KERNEL": self.host.kernel,
            "CORECENSUS_SERVICE": "ledger",
            "CORECENSUS_VERSION": self.version,
        }


@dataclass(frozen=True, slots=True)
class DemoFleet:
    hosts: tuple[DemoHost, ...]
    crashes: tuple[DemoCrash, ...]

    def write_exposure(self, path: Path) -> None:
        """``exposure.csv``: one row per host and version interval (DESIGN.md)."""
        end = START + timedelta(days=DAYS)
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["host", "start", "end", "service", "version", "cpu_model"])
            for h in self.hosts:
                for _ in range(h.processes):
                    w.writerow(
                        [
                            h.name,
                            START.isoformat(),
                            h.upgraded_at.isoformat(),
                            "ledger",
                            "1.4",
                            h.cpu_model,
                        ]
                    )
                    w.writerow(
                        [
                            h.name,
                            h.upgraded_at.isoformat(),
                            end.isoformat(),
                            "ledger",
                            "2.0",
                            h.cpu_model,
                        ]
                    )

    def write_deploys(self, path: Path) -> None:
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["time", "service", "version"])
            w.writerow([START.isoformat(), "ledger", "1.4"])
            w.writerow([(START + timedelta(days=DEPLOY_DAY)).isoformat(), "ledger", "2.0"])


def plan_fleet(
    seed: int = 7, hosts: int = 12, parse: int = 14, commit: int = 10, faulty: int = 7
) -> DemoFleet:
    rng = random.Random(seed)
    models = [("Intel Xeon Gold 6338", "0xd0003a5"), ("AMD EPYC 7763", "0xa001173")]
    kernels = ["6.1.0-26-amd64", "6.1.0-28-amd64"]
    deploy = START + timedelta(days=DEPLOY_DAY)
    fleet: list[DemoHost] = []
    for i in range(1, hosts + 1):
        model, micro = models[i % 2]
        fleet.append(
            DemoHost(
                name=f"host-{i:02d}",
                cpus=32,
                cpu_model=model,
                microcode=micro,
                kernel=kernels[i % 3 == 0],
                processes=rng.choice([1, 2, 2, 3, 4]),
                # The 2.0 rollout takes a day, host by host.
                upgraded_at=deploy + timedelta(hours=2 * (i - 1)),
            )
        )
    weights = [h.processes for h in fleet]
    end = START + timedelta(days=DAYS)
    crashes: list[DemoCrash] = []

    def when(lo: datetime, hi: datetime) -> datetime:
        return lo + timedelta(seconds=rng.uniform(0, (hi - lo).total_seconds()))

    def version_at(h: DemoHost, t: datetime) -> str:
        return "2.0" if t >= h.upgraded_at else "1.4"

    for _ in range(parse):
        h = rng.choices(fleet, weights)[0]
        t = when(START, end)
        crashes.append(DemoCrash("parse", h, rng.randrange(h.cpus), t, version_at(h, t)))
    for _ in range(commit):
        h = rng.choices(fleet, weights)[0]
        t = when(h.upgraded_at, end)
        crashes.append(DemoCrash("commit", h, rng.randrange(h.cpus), t, "2.0"))
    bad = next(h for h in fleet if h.name == FAULTY_HOST)
    for _ in range(faulty):
        t = when(START + timedelta(days=3), end)
        crashes.append(DemoCrash("faulty", bad, FAULTY_CPU, t, version_at(bad, t)))
    crashes.sort(key=lambda c: c.time)
    return DemoFleet(tuple(fleet), tuple(crashes))
