"""Flagged hosts, with the reasons and recommendations the JSON ``hosts`` list carries.

Two kinds (:class:`~corecensus.epidemiology.findings.HostKind`): ``hardware-suspect`` from the
CPU scan (:mod:`~corecensus.epidemiology.hostscan`), and ``high-crash-rate`` for hosts that
crash far more than their exposure predicts across populations without a CPU signal — busy or
unhealthy hosts, listed for information and never blamed for a population.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from corecensus.epidemiology.findings import HostFinding, HostKind, iso_time
from corecensus.epidemiology.hostscan import HostScan
from corecensus.epidemiology.params import AnalysisParams
from corecensus.epidemiology.rates import HostRates

__all__ = ["host_findings", "recommendations"]


def recommendations(suspects: Sequence[tuple[str, int | None]]) -> list[str]:
    """A screen and a denylist for each suspect (host, CPU or ``None``)."""
    recs = []
    for host, cpu in suspects:
        if cpu is not None:
            recs.append(f"Screen {host} with `corecensus screen`, CPU {cpu} first.")
            recs.append(
                f"Denylist CPU {cpu} on {host} until it passes "
                f"(echo 0 > /sys/devices/system/cpu/cpu{cpu}/online, or exclude it from "
                "the service's CPU set)."
            )
        else:
            recs.append(f"Screen {host} with `corecensus screen` (all CPUs); drain it if it fails.")
    return recs


def host_findings(
    *,
    scan: HostScan,
    rates: HostRates | None,
    host_names: Sequence[str],
    pair_host: NDArray[np.int64],
    params: AnalysisParams,
) -> tuple[HostFinding, ...]:
    """Hardware-suspect hosts (by p-value), then high-crash-rate hosts (by rate ratio)."""
    out: list[HostFinding] = []
    pops_per_host = np.bincount(pair_host, minlength=len(host_names))
    for h in np.flatnonzero(scan.flagged).tolist():
        name = host_names[h]
        cpu = int(scan.top_cpu[h]) if scan.p_cpu[h] <= params.cpu_alpha else None
        top = int(scan.top_cpu[h])
        reasons = [
            f"{int(scan.top_count[h])} of {int(scan.known_cpu[h])} crashes with a known CPU are "
            f"on CPU {top} (largest-cell multinomial test against uniform over "
            f"{int(scan.cpus[h])} CPUs, p={float(scan.p_cpu[h]):.2g}).",
            f"{int(scan.top_anomalous[h])} of the crashes on CPU {top} carry hardware-flavoured "
            f"anomalies where {float(scan.top_expected[h]):.2g} were expected (Poisson "
            f"p={float(scan.p_top_anomaly[h]):.2g}); elsewhere on the host "
            f"{int(scan.anomalous[h]) - int(scan.top_anomalous[h])} of "
            f"{int(scan.anomalous[h])} where {float(scan.expected_anomalous[h]):.2g} were "
            f"expected in all (p={float(scan.p_anomaly[h]):.2g}); expectations from each "
            f"population's anomaly rate on other hosts, {int(scan.explained[h])} crashes of "
            "anomaly-heavy populations spread over many hosts explained away.",
            "Combined (the product of the three, its exact null law given the host's crashes: "
            f"largest-cell law, Poisson-binomial anomaly counts) p={float(scan.p_value[h]):.2g} "
            f"<= {params.host_alpha:g}, the per-host false-alarm budget.",
        ]
        first_alarm = int(scan.first_alarm_us[h])
        if first_alarm >= 0:
            reasons.append(
                f"First alarm at {iso_time(first_alarm)}, after {int(scan.alarm_crashes[h])} of "
                "its crashes (the same test after each crash)."
            )
        rr = None
        if rates is not None and np.isfinite(rates.rate_ratio[h]):
            rr = float(rates.rate_ratio[h])
        out.append(
            HostFinding(
                host=name,
                kind=HostKind.HARDWARE,
                cpu=cpu,
                crashes=int(scan.crashes[h]),
                p_value=float(scan.p_value[h]),
                reasons=tuple(reasons),
                first_alarm_us=first_alarm if first_alarm >= 0 else None,
                cpu_crashes=int(scan.top_count[h]),
                anomalous=int(scan.anomalous[h]),
                expected_anomalous=float(scan.expected_anomalous[h]),
                rate_ratio=rr,
                populations=int(pops_per_host[h]),
                recommendations=tuple(recommendations([(name, cpu)])),
            )
        )
    out.sort(key=lambda f: f.p_value)
    if rates is None:
        return tuple(out)
    hot = (np.nan_to_num(rates.q_value, nan=1.0) <= params.fdr_q) & (
        np.nan_to_num(rates.rate_ratio, nan=0.0) >= params.high_rate_ratio
    )
    hot &= ~scan.flagged
    rows = []
    for h in np.flatnonzero(hot).tolist():
        rows.append(
            HostFinding(
                host=host_names[h],
                kind=HostKind.HIGH_RATE,
                cpu=None,
                crashes=int(rates.observed[h]),
                p_value=float(rates.p_value[h]),
                reasons=(
                    f"{int(rates.observed[h])} crashes where {float(rates.expected[h]):.2g} were "
                    f"expected from its exposure (exact Poisson p={float(rates.p_value[h]):.2g}, "
                    f"BH q={float(rates.q_value[h]):.2g}); Gamma-Poisson shrunken rate ratio "
                    f"{float(rates.rate_ratio[h]):.1f}.",
                    f"Spread over {int(pops_per_host[h])} populations with no CPU concentration "
                    f"(p={float(scan.p_cpu[h]):.2g}): a busy or unhealthy host, not a CPU "
                    "signal; not flagged as hardware.",
                ),
                rate_ratio=float(rates.rate_ratio[h]),
                populations=int(pops_per_host[h]),
            )
        )
    rows.sort(key=lambda f: -(f.rate_ratio or 0.0))
    return (*out, *rows)
