"""Anomaly rates per population and service (issue 9): a shared signature's services differ."""

from __future__ import annotations

import numpy as np
from scipy import special

from corecensus.epidemiology import AnalysisParams, Categorical, CrashTable, HostKind, analyze
from corecensus.epidemiology.anomalyrates import anomaly_rates, service_factor
from corecensus.model import ANOMALY_NAMES

DAY = 86_400_000_000
FLIP = 1 << ANOMALY_NAMES.index("bit_flip_candidate")
HOSTS = 400
BUSY = 399  # a bad-config db host: 900 crashes, none of them hardware
FAULTY = 398  # the same, with a faulty CPU 7


def mixed_fleet(*, with_service: bool = True, faulty: bool = True, seed: int = 3) -> CrashTable:
    """400 hosts of 32 CPUs over a year (too sparse for crash loops): 'api' on hosts 0-349 and 'db' on 350-399, about 10 crashes each,
    30 % of them glibc's abort (one population for both services; clean in api, 1 %
    anomalous, dirty in db, 15 %: below the explaining-away rate), the rest each service's
    own signatures at 1 %. Host 399 runs db with 900 crashes; with ``faulty``, so does 398,
    with a faulty
    CPU 7 for the last 40 days (30 crashes in db's own signatures, half anomalous: on a host
    this busy the whole-data test counts its anomalies, not where they sit, so the fault is
    found in a time window)."""
    rng = np.random.default_rng(seed)
    host, cpu, pop, svc, mask, t = [], [], [], [], [], []
    for h in range(HOSTS):
        db = h >= 350
        k = 900 if h == BUSY or (faulty and h == FAULTY) else int(rng.poisson(10))
        for _ in range(k):
            abort = rng.random() < 0.3
            rate = (0.15 if db else 0.01) if abort else 0.01
            host.append(h)
            cpu.append(int(rng.integers(32)))
            pop.append(0 if abort else (2 if db else 1) + 2 * int(rng.integers(3)))
            svc.append(int(db))
            mask.append(FLIP if rng.random() < rate else 0)
            t.append(int(rng.integers(0, 360 * DAY)))
    for i in range(30 if faulty else 0):
        host.append(FAULTY)
        cpu.append(7)
        pop.append(2 + 2 * int(rng.integers(3)))
        svc.append(1)
        mask.append(FLIP if i % 2 == 0 else 0)
        t.append(int(rng.integers(320 * DAY, 360 * DAY)))
    names = ("abort", "api::a", "db::a", "api::b", "db::b", "api::c", "db::c")
    return CrashTable.from_arrays(
        time_us=np.array(t),
        host=Categorical(np.array(host), tuple(f"h{i:03d}" for i in range(HOSTS))),
        cpu=np.array(cpu),
        population=Categorical(np.array(pop), names),
        service=Categorical(np.array(svc), ("api", "db")) if with_service else None,
        anomaly_mask=np.array(mask),
        host_cpus=np.full(HOSTS, 32),
    )


def test_a_busy_host_of_the_dirty_service_is_not_flagged() -> None:
    """Held to the population's rate (mostly api's clean aborts) the busy db host's 270 aborts,
    27 anomalous, were far above expectation (the trap: flagged without the service column);
    held to db's rate on the other hosts they are ordinary."""
    blind = analyze(mixed_fleet(with_service=False, faulty=False))
    assert f"h{BUSY}" in blind.flagged_hosts(HostKind.HARDWARE)
    a = analyze(mixed_fleet(faulty=False))
    assert f"h{BUSY}" not in a.flagged_hosts(HostKind.HARDWARE)
    assert a.scan is not None and a.scan.p_value[BUSY] > 1e-3
    a = analyze(mixed_fleet())
    assert f"h{BUSY}" not in a.flagged_hosts(HostKind.HARDWARE)
    assert a.scan is not None and a.scan.p_value[BUSY] > 1e-3


def test_a_faulty_cpu_on_such_a_host_is_still_found() -> None:
    a = analyze(mixed_fleet())
    assert f"h{FAULTY}" in a.flagged_hosts(HostKind.HARDWARE)
    finding = next(h for h in a.hosts if h.host == f"h{FAULTY}")
    assert finding.cpu == 7
    # the host's anomalies against db's rates are ordinary (the window finds the fault)
    assert a.scan is not None and a.scan.p_anomaly[FAULTY] > 0.05


def test_services_alike_keep_their_population_rate() -> None:
    """When services do not differ beyond Poisson noise the service level changes nothing."""
    rng = np.random.default_rng(5)
    n = 20_000
    pop = rng.integers(4, size=n)
    svc = rng.integers(3, size=n)
    host = rng.integers(500, size=n)
    hw = rng.random(n) < 0.03
    cell = rng.integers(16, size=n)
    kw = {
        "population": pop,
        "host": host,
        "n_hosts": 500,
        "hardware": hw,
        "cell": cell,
        "prior_strength": 50.0,
        "explain_min_rate": 0.2,
        "explain_min_hosts": 3,
    }
    with_svc = anomaly_rates(service=svc, **kw)
    without = anomaly_rates(service=None, **kw)
    assert with_svc.service_variance == 0.0
    assert np.array_equal(with_svc.ez, without.ez)
    # and the population level is the fixed-strength estimate: rates alike, no spread to fit
    assert without.pseudo_crashes == 50.0


def test_a_dominant_host_does_not_pull_its_population_to_the_fleet_rate() -> None:
    """A population with 17 anomalies in 89 crashes on other hosts (rate 0.19) among many
    ordinary ones: the fixed 50 pseudo-crashes held it at 0.13; the fitted prior is weaker."""
    rng = np.random.default_rng(11)
    pops, hosts, hw = [], [], []
    for p in range(40):
        # 30 ordinary populations, 9 wild-pointer ones (0.15: not explained away, below 0.2)
        k, rate = (89, 17 / 89) if p == 0 else ((2000, 0.01) if p <= 30 else (300, 0.15))
        pops += [p] * k
        hosts += rng.integers(1, 300, size=k).tolist()
        hw += (rng.random(k) < rate).tolist() if p else [True] * 17 + [False] * 72
    pops += [0] * 45  # host 0: 45 crashes of population 0
    hosts += [0] * 45
    hw += [False] * 45
    r = anomaly_rates(
        population=np.array(pops),
        service=None,
        host=np.array(hosts),
        n_hosts=300,
        hardware=np.array(hw),
        cell=rng.integers(32, size=len(pops)),
        prior_strength=50.0,
        explain_min_rate=0.2,
        explain_min_hosts=3,
    )
    rate0 = float(r.ez[-1])
    fixed = (17 + 50 * r.fleet_rate) / (89 + 50)
    assert r.pseudo_crashes < 50.0
    assert rate0 > fixed + 0.02
    assert rate0 <= 17 / 89 + 1e-9


def test_service_factor_goes_down_only_as_far_as_the_data_make_sure() -> None:
    shape = 1.0 / 3.0
    obs = np.array([0.0, 0.0, 5.0, 30.0, 244.0, 0.0])
    exp = np.array([0.0, 1.0, 5.0, 190.0, 46.0, 300.0])
    f = service_factor(obs, exp, shape)
    a, b = shape + obs, shape + exp
    mean = a / b
    exact_q90 = special.gammaincinv(a, 0.9) / b
    # above 1: the posterior mean (a dirty service's rate)
    assert f[4] == mean[4] and f[4] > 4.0
    # no data, or data at the population's rate: the population's rate
    assert f[0] == 1.0 and f[2] == 1.0
    # below: never the posterior mean, within 5 % of the exact 90 % quantile, at most 1
    below = mean < 1.0
    assert np.all(f[below] > mean[below])
    assert np.all(f[below] <= 1.0)
    close = below & (exact_q90 < 1.0)
    assert np.all(np.abs(f[close] / exact_q90[close] - 1.0) < 0.05)
    # a clean service with much data goes well below
    assert f[3] < 0.25 and f[5] < 0.02


def test_explaining_away_also_per_service() -> None:
    """A service whose aborts are anomaly-heavy on many hosts (40 %) is explained away in that
    service even though the population's rate over all services is ordinary."""
    rng = np.random.default_rng(2)
    n = 30_000
    svc = (rng.random(n) < 0.05).astype(np.int64)
    host = rng.integers(600, size=n)
    hw = rng.random(n) < np.where(svc == 1, 0.4, 0.01)
    r = anomaly_rates(
        population=np.zeros(n, dtype=np.int64),
        service=svc,
        host=host,
        n_hosts=600,
        hardware=hw,
        cell=rng.integers(32, size=n),
        prior_strength=50.0,
        explain_min_rate=0.2,
        explain_min_hosts=3,
    )
    assert r.crash_explained[svc == 1].all()
    assert not r.crash_explained[svc == 0].any()
    assert float(r.ez[svc == 0].mean()) < 0.03
    assert AnalysisParams().explain_min_rate == 0.2
