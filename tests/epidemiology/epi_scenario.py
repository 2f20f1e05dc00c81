"""A small fleet with known causes, built from rows as the lead's pipeline would build it.

40 hosts with 16 CPUs each, 30 days, one service ``api``; version 2 deployed to every host at
day 15. Three populations with known causes plus background:

* ``ret-sp8`` — host ``h07``'s CPU 11 is defective from day 10: 8 crashes, 7 on CPU 11, all
  with ``sp_off_by_8``;
* ``null-deref`` — a software bug spread over the fleet in proportion to exposure;
* ``new-parser`` — a regression that exists only in version 2 (from the day-15 deploy);
* ``bg-*`` — ordinary background crashes, a few with wild-pointer anomalies.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DAY_US = 86_400 * 1_000_000
T0 = 1_717_200_000 * 1_000_000  # 2024-06-01
HOSTS = [f"h{i:02d}" for i in range(40)]
DEPLOY_DAY = 15


def crash_rows(seed: int = 7) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []

    def add(pop: str, host: str, day: float, cpu: int, anomalies: tuple[str, ...] = ()) -> None:
        t = T0 + int(day * DAY_US)
        rows.append(
            {
                "crash_id": f"c{len(rows):04d}",
                "time_us": t,
                "host": host,
                "cpu": cpu,
                "cpu_model": "model-x" if int(host[1:]) % 2 else "model-y",
                "microcode": "0x2b",
                "kernel": "6.1.0",
                "service": "api",
                "version": "2" if day >= DEPLOY_DAY else "1",
                "population": pop,
                "anomalies": anomalies,
            }
        )

    # the faulty CPU: 8 crashes on h07 after day 10, 7 of them on CPU 11
    for i, day in enumerate(np.sort(rng.uniform(10, 30, 8))):
        add("ret-sp8", "h07", float(day), 11 if i != 3 else 4, ("sp_off_by_8",))
    # a software bug spread over the fleet
    for _ in range(60):
        add("null-deref", HOSTS[rng.integers(40)], rng.uniform(0, 30), int(rng.integers(16)))
    # a regression in version 2 only
    for _ in range(40):
        day = rng.uniform(DEPLOY_DAY + 0.2, 30)
        add("new-parser", HOSTS[rng.integers(40)], day, int(rng.integers(16)))
    # background
    for k in range(5):
        for _ in range(30):
            anomalies = ("pc_zero",) if rng.random() < 0.05 else ()
            add(
                f"bg-{k}",
                HOSTS[rng.integers(40)],
                rng.uniform(0, 30),
                int(rng.integers(16)),
                anomalies,
            )
    return rows


def exposure_csv() -> str:
    """One row per host and day (one process), version 1 before the deploy, 2 after."""
    lines = ["host,start,end,service,version,cpu_model"]
    for i, host in enumerate(HOSTS):
        model = "model-x" if i % 2 else "model-y"
        for day in range(30):
            start = _iso(T0 + day * DAY_US)
            end = _iso(T0 + (day + 1) * DAY_US)
            version = "2" if day >= DEPLOY_DAY else "1"
            lines.append(f"{host},{start},{end},api,{version},{model}")
    return "\n".join(lines) + "\n"


def deploys_csv() -> str:
    return (
        "time,service,version\n"
        f"{_iso(T0 - 40 * DAY_US)},api,1\n"
        f"{_iso(T0 + DEPLOY_DAY * DAY_US)},api,2\n"
    )


def _iso(t_us: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t_us / 1e6, tz=UTC).isoformat()
