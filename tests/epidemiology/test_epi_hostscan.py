"""The per-host CPU scan: explaining away anomaly-heavy software, busy hosts, streaming alarms."""

from __future__ import annotations

import numpy as np
import pytest

from corecensus.epidemiology import (
    AnalysisParams,
    Categorical,
    CrashTable,
    ExposureTable,
    HostKind,
    PopulationVerdict,
    analyze,
    segments,
)
from corecensus.epidemiology.poisson import poisson_upper
from corecensus.model import ANOMALY_NAMES

DAY = 86_400_000_000
SP8 = 1 << ANOMALY_NAMES.index("sp_off_by_8")
FLIP = 1 << ANOMALY_NAMES.index("bit_flip_candidate")


def fleet(seed: int = 0) -> tuple[CrashTable, ExposureTable]:
    """300 hosts x 32 CPUs: background (2% anomalous, 10 signatures), a memory-corrupting
    software bug on hosts 0-29 (90% anomalous, random CPUs), a faulty CPU 5 on host 150
    (7 crashes, 6 on CPU 5, 4 anomalous, in background signatures), a busy host 200."""
    rng = np.random.default_rng(seed)
    host, cpu, pop, mask, t = [], [], [], [], []

    def add(h: int, c: int, p: int, m: int, day: float) -> None:
        host.append(h)
        cpu.append(c)
        pop.append(p)
        mask.append(m)
        t.append(int(day * DAY))

    for _ in range(900):
        add(
            int(rng.integers(300)),
            int(rng.integers(32)),
            int(rng.integers(10)),
            FLIP if rng.random() < 0.02 else 0,
            rng.uniform(0, 30),
        )
    for h in range(30):
        for _ in range(8):
            add(h, int(rng.integers(32)), 10, SP8 if rng.random() < 0.9 else 0, rng.uniform(0, 30))
    for i, day in enumerate(np.sort(rng.uniform(10, 30, 7))):
        add(150, 5 if i != 2 else 17, int(rng.integers(10)), SP8 if i % 2 == 0 else 0, day)
    for _ in range(120):
        add(200, int(rng.integers(32)), int(rng.integers(10)), 0, rng.uniform(0, 30))
    hosts = tuple(f"h{i:03d}" for i in range(300))
    crashes = CrashTable.from_arrays(
        time_us=np.array(t),
        host=Categorical(np.array(host), hosts),
        cpu=np.array(cpu),
        population=Categorical(np.array(pop), (*(f"bg{i}" for i in range(10)), "corrupt")),
        anomaly_mask=np.array(mask),
        host_cpus=np.full(300, 32),
    )
    exposure = ExposureTable.from_arrays(
        host=Categorical(np.arange(300), hosts),
        start_us=np.zeros(300, np.int64),
        end_us=np.full(300, 30 * DAY),
    )
    return crashes, exposure


def test_faulty_host_flagged_and_confounder_explained_away() -> None:
    crashes, exposure = fleet()
    a = analyze(crashes, exposure)
    flagged = a.flagged_hosts(HostKind.HARDWARE)
    assert flagged == ("h150",)
    finding = a.hosts[0]
    assert finding.cpu == 5 and finding.cpu_crashes == 6
    assert any("explained away" in r for r in finding.reasons)
    assert a.population("corrupt").verdict is PopulationVerdict.SOFTWARE
    assert not a.population("corrupt").suspects
    assert a.scan is not None and int(a.scan.explained[3]) >= 6


def test_the_confounder_is_a_real_trap_for_a_fleet_wide_anomaly_rate() -> None:
    """Against the anomaly rate of ordinary crashes (no per-population rates), the confounder
    hosts would look like bad CPUs; analyze flags none of them."""
    crashes, exposure = fleet()
    hw = (crashes.anomaly_mask & (SP8 | FLIP)) != 0
    rate = hw[crashes.population.codes < 10].mean()
    n = np.bincount(crashes.host.codes, minlength=300)
    z = np.bincount(crashes.host.codes[hw], minlength=300)
    naive = poisson_upper(z, n * rate)
    confounder = np.arange(30)
    assert int((naive[confounder] < 1e-4).sum()) >= 10
    a = analyze(crashes, exposure)
    assert not set(a.flagged_hosts(HostKind.HARDWARE)) & {f"h{i:03d}" for i in confounder}


def test_busy_host_is_high_rate_not_hardware() -> None:
    crashes, exposure = fleet()
    a = analyze(crashes, exposure)
    busy = [h for h in a.hosts if h.host == "h200"]
    assert len(busy) == 1 and busy[0].kind is HostKind.HIGH_RATE
    assert busy[0].rate_ratio is not None and busy[0].rate_ratio > 10
    assert a.scan is not None and a.scan.p_value[200] > 0.01


def test_streaming_alarm_is_the_first_prefix_that_alarms() -> None:
    # anomaly-free data, so population anomaly rates (the one look-ahead) play no part
    rng = np.random.default_rng(4)
    n_bg = 100
    host = np.concatenate([rng.integers(0, 50, n_bg), np.full(10, 7)])
    cpu = np.concatenate([rng.integers(0, 32, n_bg), [9, 9, 2, 9, 9, 9, 9, 9, 9, 9]])
    t = np.concatenate([rng.uniform(0, 30, n_bg), np.linspace(12, 28, 10)]) * DAY
    order = np.argsort(t, kind="stable")
    host, cpu, t = host[order], cpu[order], t[order].astype(np.int64)
    hosts = tuple(f"h{i}" for i in range(50))

    def table(k: int) -> CrashTable:
        return CrashTable.from_arrays(
            time_us=t[:k],
            host=Categorical(host[:k], hosts),
            cpu=cpu[:k],
            population=Categorical(np.zeros(k, int), ("p",)),
            host_cpus=np.full(50, 32),
        )

    full = analyze(table(t.size))
    assert full.scan is not None and full.scan.first_alarm_us[7] >= 0
    first_prefix = next(
        k
        for k in range(1, t.size + 1)
        if (s := analyze(table(k), params=AnalysisParams(streaming=False)).scan) is not None
        and s.p_value[7] <= AnalysisParams().host_alpha
    )
    assert full.scan.first_alarm_us[7] == t[first_prefix - 1]
    assert full.scan.alarm_crashes[7] == int((host[:first_prefix] == 7).sum())
    assert full.scan.min_stream_p[7] <= full.scan.p_value[7]
    assert 0 < int(first_prefix) < t.size  # it alarmed before the end of the window


def test_the_stream_is_the_same_walked_a_chunk_of_hosts_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stream walks the crashes a chunk of hosts at a time (memory), carrying its running
    sums of expected anomalies across chunks: alarms, their times and every host's smallest
    p-value must be the ones of the whole fleet at once, to the bit."""
    crashes, exposure = fleet()

    def run() -> tuple[list[int], list[int], list[float], list[float]]:
        s = analyze(crashes, exposure).scan
        assert s is not None
        lists = (s.first_alarm_us, s.alarm_crashes, s.min_stream_p, s.p_value)
        return tuple(a.tolist() for a in lists)  # type: ignore[return-value]

    whole = run()
    assert whole[0][150] >= 0  # the faulty host alarms: the comparison is not vacuous
    assert sum(p < 1.0 for p in whole[2]) > 1
    for rows in (1, 13, 400):
        monkeypatch.setattr(segments, "CHUNK_ROWS", rows)
        assert run() == whole
