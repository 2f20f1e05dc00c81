"""The host decision of a screen, from its per-(CPU, check) results (pure).

Quarantine a CPU with a reproducible failure; quarantine the whole host when more than two CPUs
fail (a host with several bad cores is cheaper to pull than to fence core by core: Dixit et al.,
"Silent Data Corruptions at Scale", 2021). Transient failures, crashes, timeouts, inconclusive
disagreements and CPUs that could not be screened ask for a rescreen; a check failing the same
way everywhere is a software suspect. Every reason names the check, the counts and the first
expected/observed pair.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from corecensus.screening.outcome import Outcome, ScreenVerdict, WorkerStatus
from corecensus.screening.result import CheckResult, ScreenDecision
from corecensus.screening.runner import WorkerOutcome
from corecensus.screening.topology import Topology, format_cpu_list

__all__ = ["HOST_QUARANTINE_ABOVE", "decide_screen"]

# More failing CPUs than this quarantine the whole host.
HOST_QUARANTINE_ABOVE = 2


def decide_screen(
    cpus: Sequence[int],
    results: Sequence[CheckResult],
    outcomes: Mapping[int, WorkerOutcome],
    topology: Topology,
    software: Mapping[str, str],
) -> ScreenDecision:
    reasons: list[str] = []
    reproducible: dict[int, list[CheckResult]] = defaultdict(list)
    failing: dict[int, list[CheckResult]] = defaultdict(list)
    rescreen: set[int] = set()
    for r in results:
        if r.outcome is Outcome.IMPLICATED and r.suspect_cpu is not None:
            # A cross-core failure charged to the partner: evidence against the partner, as
            # reproducible as the runs that failed.
            failing[r.suspect_cpu].append(r)
            if r.failures >= 2:
                reproducible[r.suspect_cpu].append(r)
        elif r.outcome.is_failure:
            if r.suspect_cpu is None:
                rescreen.update(c for c in (r.cpu, r.partner) if c is not None)
                reasons.append(
                    f"{r.check} on CPU {r.cpu} failed verifying with CPU {r.partner}, "
                    "unattributed: rescreen both"
                )
                continue
            failing[r.suspect_cpu].append(r)
            if r.outcome is Outcome.FAILED_REPRODUCIBLE:
                reproducible[r.suspect_cpu].append(r)
        elif r.outcome in (Outcome.CRASHED, Outcome.TIMED_OUT, Outcome.INCONCLUSIVE):
            rescreen.add(r.cpu)
            reasons.append(f"{r.check} on CPU {r.cpu}: {r.outcome} ({r.observed or r.detail})")
    for cpu in sorted(reproducible):
        # Lead with the CPU's own checks; a cross-core row blamed on it comes from its partner.
        rows = sorted(reproducible[cpu], key=lambda r: r.cpu != cpu)
        first = rows[0]
        checks = ", ".join(sorted({r.check for r in rows}))
        reasons.insert(
            0,
            f"CPU {cpu}: reproducible failure in {checks} (first: {first.check}, "
            f"{first.failures} of {first.runs} runs; expected {first.expected}; observed "
            f"{first.observed}) -> quarantine CPU {cpu}",
        )
    for cpu in sorted(set(failing) - set(reproducible)):
        rows = failing[cpu]
        reasons.append(
            f"CPU {cpu}: transient failure in {', '.join(sorted({r.check for r in rows}))} "
            "(failed once, passed on retry): rescreen"
        )
        rescreen.add(cpu)
    for cpu in cpus:
        out = outcomes.get(cpu)
        if out is not None and out.status in (WorkerStatus.PIN_FAILED, WorkerStatus.NOT_STARTED):
            rescreen.add(cpu)
            reasons.append(f"CPU {cpu} was not screened ({out.status}): {out.detail}")
        elif out is not None and not any(r.cpu == cpu and r.runs for r in results):
            rescreen.add(cpu)
            reasons.append(
                f"CPU {cpu}: no check finished within the budget ({out.detail or out.status})"
            )
    for check, why in software.items():
        reasons.append(f"{check}: {why}")
    quarantine = tuple(sorted(reproducible))
    failing_cpus = sorted(failing)
    host = len(failing_cpus) > HOST_QUARANTINE_ABOVE
    if host:
        reasons.insert(
            0,
            f"{len(failing_cpus)} CPUs fail ({format_cpu_list(failing_cpus)}): more than "
            f"{HOST_QUARANTINE_ABOVE} -> quarantine the host",
        )
    for cpu in quarantine:
        siblings = [s for s in topology.get(cpu).thread_siblings if s in failing]
        if siblings:
            reasons.append(
                f"CPU {cpu} and its SMT sibling(s) {format_cpu_list(siblings)} both fail: the "
                "physical core is the likely culprit"
            )
    if host:
        verdict = ScreenVerdict.QUARANTINE_HOST
    elif quarantine:
        verdict = ScreenVerdict.QUARANTINE_CPUS
    elif software:
        verdict = ScreenVerdict.SOFTWARE_SUSPECT
    elif rescreen:
        verdict = ScreenVerdict.RESCREEN
    else:
        verdict = ScreenVerdict.CLEAN
        ran = {(r.cpu, r.check) for r in results if r.runs}
        reasons.append(
            f"all {len(cpus)} CPUs passed every check that ran ({len(ran)} of {len(results)} "
            f"CPU-check pairs covered, {sum(r.runs for r in results)} runs)"
        )
    return ScreenDecision(
        verdict=verdict,
        quarantine_cpus=quarantine,
        quarantine_host=host,
        rescreen_cpus=tuple(sorted(rescreen - set(quarantine))),
        software_suspect_checks=tuple(sorted(software)),
        reasons=tuple(reasons),
    )
