"""Flagged hosts, with the reasons and recommendations the JSON ``hosts`` list carries.

Two kinds (:class:`~corecensus.epidemiology.findings.HostKind`): ``hardware-suspect`` from the
CPU scan (:mod:`~corecensus.epidemiology.hostscan`), and ``high-crash-rate`` for hosts that
crash far more than their exposure predicts across populations without a CPU signal — busy or
unhealthy hosts, listed for information and never blamed for a population.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from corecensus.epidemiology.findings import HostFinding, HostKind, iso_time
from corecensus.epidemiology.fleetscan import NAME_ALPHA, FleetScan, HostDetail, SuspectCell
from corecensus.epidemiology.hostfocus import MIN_WINDOW_CRASHES, NONE, PAIR, WINDOW, WINDOW_PAIR
from corecensus.epidemiology.hostscan import HostScan
from corecensus.epidemiology.params import AnalysisParams
from corecensus.epidemiology.rates import HostRates
from corecensus.epidemiology.table import CrashTable
from corecensus.epidemiology.timeline import STOP_ALPHA, STOP_ALPHA_CHANGED

__all__ = ["host_findings", "recommendations"]


def recommendations(
    suspects: Sequence[tuple[str, int | None]],
    details: Mapping[str, HostDetail] | None = None,
) -> list[str]:
    """A screen and a denylist for each suspect (host, CPU or ``None``); with the host scan's
    detail of a flagged host, every significant CPU, the whole physical core when cores are
    known, and a rescreen instead of a denylist when its suspect crashes have stopped."""
    recs = []
    for host, cpu in suspects:
        detail = (details or {}).get(host)
        if detail is not None and detail.cells:
            recs += _detail_recommendations(host, detail)
        elif cpu is not None:
            recs.append(f"Screen {host} with `corecensus screen`, CPU {cpu} first.")
            recs.append(
                f"Denylist CPU {cpu} on {host} until it passes "
                f"(echo 0 > /sys/devices/system/cpu/cpu{cpu}/online, or exclude it from "
                "the service's CPU set)."
            )
        else:
            recs.append(f"Screen {host} with `corecensus screen` (all CPUs); drain it if it fails.")
    return recs


def _cell_words(cell: SuspectCell, core: bool) -> str:
    if not core:
        return f"CPU {cell.cell}"
    seen = ", ".join(str(c) for c in cell.cpus) or "none seen"
    return f"physical core {cell.cell} (logical CPUs seen: {seen}; and every SMT sibling)"


def _detail_recommendations(host: str, detail: HostDetail) -> list[str]:
    cpus = sorted({c for cell in detail.cells for c in cell.cpus})
    listed = ", ".join(str(c) for c in cpus)
    names = "; ".join(_cell_words(c, detail.core_level) for c in detail.cells)
    if detail.stopped:
        changed = f" ({'; '.join(detail.stop_changes)})" if detail.stop_changes else ""
        return [
            f"Rescreen {host} with `corecensus screen`, {names} first: its suspect crashes "
            f"stopped after {iso_time(detail.last_us or 0)}{changed}. Do not denylist unless "
            "the screen fails."
        ]
    recs = [f"Screen {host} with `corecensus screen`, {names} first."]
    what = "the whole physical core" if detail.core_level else "the CPU"
    recs.append(
        f"Take {what} out on {host} until it passes: CPUs {listed} "
        f"(echo 0 > /sys/devices/system/cpu/cpuN/online for each, or exclude them from the "
        "service's CPU set)."
    )
    return recs


def _detail_reasons(detail: HostDetail) -> list[str]:
    out = list(detail.facts)
    if len(detail.cells) > 1:
        out.append(
            "Significant "
            + ("cores" if detail.core_level else "CPUs")
            + " (step-down from the busiest: the first at cpu_alpha, the others at "
            + f"{NAME_ALPHA:g}): "
            + "; ".join(
                f"{_cell_words(c, detail.core_level)} with {c.crashes} crashes (p={c.p_value:.2g})"
                for c in detail.cells
            )
            + "."
        )
    elif detail.cells and detail.core_level:
        out.append(f"Suspect {_cell_words(detail.cells[0], True)}.")
    if detail.first_us is not None and detail.last_us is not None:
        if not detail.stopped:
            state = "still going at the end of the data"
        elif detail.stop_p is not None and detail.stop_p <= STOP_ALPHA:
            state = (
                f"stopped (no suspect crash since; probability {detail.stop_p:.2g} under a "
                "constant rate)"
            )
        else:
            state = (
                "stopped (no suspect crash since the change first seen "
                f"{iso_time(detail.stop_change_us or 0)}; probability "
                f"{detail.stop_change_p or 0.0:.2g} under a constant rate, at most "
                f"{STOP_ALPHA_CHANGED:g} after a microcode or kernel change)"
            )
        out.append(
            f"{detail.suspect_crashes} suspect crashes from {iso_time(detail.first_us)} to "
            f"{iso_time(detail.last_us)}: {state}."
        )
    out += [c[0].upper() + c[1:] + "." for c in detail.changes]
    return out


def _focus_reasons(scan: HostScan, h: int, params: AnalysisParams) -> list[str]:
    """What the focused tests (time windows, the two busiest CPUs) found, when they count."""
    f = scan.focus
    if f.test[h] == NONE or f.p_value[h] > params.window_alpha:
        return []
    raw = float(f.raw_p[h])
    share = float(f.share[h])
    tested = int(f.tested[h])
    if f.test[h] in (PAIR, WINDOW_PAIR):
        whole = f.test[h] == PAIR
        where = (
            ""
            if whole
            else f"In the window {iso_time(int(f.window_start_us[h]))} to "
            f"{iso_time(int(f.window_end_us[h]))} (one of {tested} distinct windows with at "
            f"least {MIN_WINDOW_CRASHES} crashes with a known CPU among {f.windows} dyadic "
            "windows) t"
        )
        of = int(scan.known_cpu[h]) if whole else int(f.window_crashes[h])
        first, second = int(f.pair_cells[0][h]), int(f.pair_cells[1][h])
        # second is -1 when no other CPU holds a crash ("CPUs 3 and -1" was printed)
        cpus, verb, which = (
            (f"two busiest CPUs, {first} and {second},", "hold", "at least one of them is bad")
            if second >= 0
            else (f"busiest CPU, {first},", "holds", f"no other CPU holds one: CPU {first} is bad")
        )
        return [
            f"{where or 'T'}he {cpus} {verb} {int(f.pair_count[h])} of {of} crashes with a "
            "known CPU (union bound over pairs of CPUs, with the exact tails of the anomalies "
            f"on them and elsewhere) p={raw:.2g} <= {params.window_alpha * share:.2g}, the "
            f"pair test's share of window_alpha {params.window_alpha:g}: {which}."
        ]
    level = params.window_alpha * share
    return [
        f"In the window {iso_time(int(f.window_start_us[h]))} to "
        f"{iso_time(int(f.window_end_us[h]))} (one of {tested} distinct windows with at least "
        f"{MIN_WINDOW_CRASHES} crashes with a known CPU among {f.windows} dyadic windows) "
        f"{int(f.cell_count[h])} of {int(f.window_crashes[h])} crashes with a known CPU are on "
        f"CPU {int(f.cell[h])}; the same exact test on that window's crashes p={raw:.2g} <= "
        f"{level:.2g}, the window's Bonferroni share of window_alpha {params.window_alpha:g}."
    ]


def host_findings(
    *,
    scan: HostScan,
    rates: HostRates | None,
    host_names: Sequence[str],
    pair_host: NDArray[np.int64],
    params: AnalysisParams,
    fleet: FleetScan | None = None,
    crashes: CrashTable | None = None,
) -> tuple[HostFinding, ...]:
    """Hardware-suspect hosts (by p-value), crash loops, then high-crash-rate hosts (by rate
    ratio)."""
    out: list[HostFinding] = []
    details = {} if fleet is None else fleet.details
    pops_per_host = np.bincount(pair_host, minlength=len(host_names))
    for h in np.flatnonzero(scan.flagged).tolist():
        name = host_names[h]
        cpu = int(scan.top_cpu[h]) if scan.p_cpu[h] <= params.cpu_alpha else None
        focus = scan.focus
        if cpu is None and focus.test[h] == WINDOW and focus.p_value[h] <= params.window_alpha:
            cpu = int(focus.cell[h]) if focus.cell[h] >= 0 else None
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
            + (
                f"<= {params.host_alpha:g}, the per-host false-alarm budget."
                if scan.p_value[h] <= params.host_alpha
                else f"> {params.host_alpha:g}: not flagged on the whole data alone."
            ),
            *_focus_reasons(scan, h, params),
        ]
        detail = details.get(h)
        if detail is not None:
            reasons += _detail_reasons(detail)
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
                recommendations=tuple(
                    recommendations([(name, cpu)], {name: detail} if detail else None)
                ),
            )
        )
    out.sort(key=lambda f: f.p_value)
    if fleet is not None and crashes is not None:
        out += _loop_findings(fleet, crashes, host_names)
    if rates is None:
        return tuple(out)
    hot = (np.nan_to_num(rates.q_value, nan=1.0) <= params.fdr_q) & (
        np.nan_to_num(rates.rate_ratio, nan=0.0) >= params.high_rate_ratio
    )
    hot &= ~scan.flagged
    if fleet is not None:
        hot &= np.bincount(fleet.bursts.host, minlength=hot.size)[: hot.size] == 0
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


def _loop_findings(
    fleet: FleetScan, crashes: CrashTable, host_names: Sequence[str]
) -> list[HostFinding]:
    """One finding per crash loop, largest first (a loop is one software event)."""
    b = fleet.bursts
    out = []
    for i in np.argsort(-b.crashes, kind="stable").tolist():
        h = int(b.host[i])
        pop = crashes.population.vocab[int(b.population[i])]
        svc = int(b.service[i])
        services = crashes.service.vocab
        service = services[svc] if 0 <= svc < len(services) else "unknown"
        cpu = int(b.cpu[i])
        minutes = (int(b.end_us[i]) - int(b.start_us[i])) / 60e6
        where = f"; {int(b.cpu_crashes[i])} of them on CPU {cpu}" if cpu >= 0 else ""
        out.append(
            HostFinding(
                host=host_names[h],
                kind=HostKind.CRASH_LOOP,
                cpu=None,
                crashes=int(b.crashes[i]),
                p_value=1.0,
                reasons=(
                    f"Crash loop: {int(b.crashes[i])} crashes of population {pop} (service "
                    f"{service}) from {iso_time(int(b.start_us[i]))} over {minutes:.0f} "
                    f"minutes{where}, each within the loop gap of the previous one.",
                    "Counted as one event by the host tests (a restarting process lands on "
                    "the same CPU; that is not a CPU signal).",
                ),
                cpu_crashes=int(b.cpu_crashes[i]),
                populations=1,
                recommendations=(
                    f"Fix or stop the restart loop of {service} on {host_names[h]} "
                    f"(population {pop}).",
                ),
            )
        )
    return out
