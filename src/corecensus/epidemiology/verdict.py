"""Per-population verdicts: ``hardware-suspect``, ``software`` or ``inconclusive``.

The rules are small objects in an ordered list (the shape of Mozilla's socorro signature rules):
the first that applies decides, and its evidence sentences say why. In order:

1. :class:`TooFewCrashes` — fewer than ``min_crashes``: inconclusive.
   :class:`CrashLoop` — at least ``min_crashes`` crashes but fewer events once crash loops
   are folded: software (a restart loop), reported as a loop.
2. :class:`MadeOfFlaggedHosts` — at least ``concentration_share`` of the population is what
   the CPU scan flagged hosts for (their crashes on the CPUs their reports name, or with a
   residual anomaly): hardware-suspect, suspects = those hosts and their CPUs.
3. :class:`ConcentratedWithHardwareEvidence` — at most ``max_suspect_hosts`` hosts in excess of
   exposure hold at least ``concentration_share`` of it, and on them the crashes pile up on one
   CPU (``cpu_alpha``) or mostly carry hardware-flavoured anomalies: hardware-suspect.
4. :class:`VersionOnset` — it appeared with a version (absent from the previous version over
   comparable exposure, or its onset aligns with that version's deploy): software.
5. :class:`ConcentratedWithoutEvidence` — concentrated on few hosts but with neither CPU
   concentration nor anomalies: inconclusive (a host's configuration, workload or memory).
6. :class:`Spread` — on at least ``spread_min_hosts`` hosts, none holding
   ``concentration_share``: software (whatever its anomalies: a memory-corrupting bug produces
   "hardware-looking" registers on every host it reaches).
7. :class:`Fallback` — inconclusive.

Rates come from exposure when given; without it "in excess" falls back to the largest host's
share of the population (stated in the evidence).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from corecensus.epidemiology.findings import Onset, PopulationVerdict, iso_time, join_names
from corecensus.epidemiology.params import AnalysisParams

__all__ = [
    "VERDICT_RULES",
    "HostFacts",
    "PopulationFacts",
    "VerdictDecision",
    "VerdictRule",
    "decide_verdict",
]


@dataclass(frozen=True, slots=True)
class HostFacts:
    """One host's part of a population (only candidate hosts are materialised); ``pair`` is
    the (population, host) cell's index; ``on_flagged_cpu`` counts its crashes on the CPU the
    host scan flagged, ``evidence`` those the host's flag is evidence for (on the cells its
    report names, or with a residual anomaly; 0 on a host not flagged)."""

    pair: int
    host: int
    name: str
    crashes: int
    expected: float | None
    p_value: float | None
    q_value: float | None
    rate_ratio: float | None
    cpu: int | None
    cpu_crashes: int
    cpus: int
    cpu_p_value: float
    hardware: int
    flagged: bool
    excess: bool
    on_flagged_cpu: int = 0
    evidence: int = 0


@dataclass(frozen=True, slots=True)
class PopulationFacts:
    """What the rules read about one population.

    ``candidates`` are the hosts worth naming (top host, hosts in excess, flagged hosts);
    ``excess_hosts`` counts all hosts in excess, of which at most a few are candidates.
    """

    key: str
    crashes: int
    hosts: int
    hardware: int
    rates_available: bool
    candidates: tuple[HostFacts, ...]
    top_share: float
    excess_hosts: int
    dispersion_index: float | None
    dispersion_p: float | None
    onset: Onset | None
    version_evidence: str | None
    events: int = -1  # crashes after folding crash loops (-1: no loop folding, = crashes)

    @property
    def excess(self) -> tuple[HostFacts, ...]:
        return tuple(h for h in self.candidates if h.excess)

    @property
    def flagged(self) -> tuple[HostFacts, ...]:
        return tuple(h for h in self.candidates if h.flagged)


@dataclass(frozen=True, slots=True)
class VerdictDecision:
    verdict: PopulationVerdict
    evidence: tuple[str, ...]
    suspects: tuple[HostFacts, ...] = ()


class VerdictRule(Protocol):
    name: str

    def __call__(self, f: PopulationFacts, p: AnalysisParams) -> VerdictDecision | None: ...


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _excess_words(h: HostFacts, rates: bool) -> str:
    if rates and h.expected is not None and h.p_value is not None:
        return (
            f"{h.name} has {h.crashes} where {h.expected:.2g} were expected from its exposure "
            f"(exact Poisson p={h.p_value:.2g}, BH q={h.q_value or 1.0:.2g}, "
            f"Gamma-Poisson shrunken rate ratio {h.rate_ratio or 0.0:.1f})"
        )
    return f"{h.name} has {h.crashes}"


def _cpu_words(h: HostFacts) -> str:
    return (
        f"On {h.name}, {h.cpu_crashes} of its {h.crashes} are on CPU {h.cpu} (largest-cell "
        f"multinomial test against uniform over {h.cpus} CPUs, p={h.cpu_p_value:.2g})"
    )


class TooFewCrashes:
    name = "too-few-crashes"

    def __call__(self, f: PopulationFacts, p: AnalysisParams) -> VerdictDecision | None:
        if f.crashes >= p.min_crashes:
            return None
        return VerdictDecision(
            PopulationVerdict.INCONCLUSIVE,
            (f"Only {f.crashes} crash(es): fewer than the {p.min_crashes} a verdict needs.",),
        )


class CrashLoop:
    """Most of the population is one or two crash loops: a restarting process repeats one
    failure, so hundreds of cores are a handful of events, and the loop (not a CPU) is the
    finding (loops.py; issue 9)."""

    name = "crash-loop"

    def __call__(self, f: PopulationFacts, p: AnalysisParams) -> VerdictDecision | None:
        if f.events < 0 or f.events >= p.min_crashes or f.events >= f.crashes:
            return None
        return VerdictDecision(
            PopulationVerdict.SOFTWARE,
            (
                f"{f.crashes} crashes but only {f.events} event(s) once crash loops are folded "
                f"(crashes of one host, service and population at most {p.loop_gap_s:g} s "
                "apart): a restart loop repeating one failure, reported as a crash loop; not "
                "a CPU signal.",
            ),
        )


class MadeOfFlaggedHosts:
    """At least ``concentration_share`` of the population is what flagged hosts were flagged
    for. A flag is evidence about some of a host's crashes only: those on the CPUs its report
    names and those with a hardware-flavoured anomaly its population does not show on other
    hosts (the residual anomalies the host test counted). Its other crashes are what any host
    runs: a software bug spread over the fleet that crashes many times on a few flagged hosts
    crashes there on all their CPUs and with its usual anomalies, so counting every crash of
    a flagged host called such a bug hardware-suspect (issue 9). Each crash counts once
    (``HostFacts.evidence``: on a named CPU *or* anomalous, so at least the larger of the
    two); a population made of faulty hosts' crashes is mostly on their bad CPUs."""

    name = "made-of-flagged-hosts"

    def __call__(self, f: PopulationFacts, p: AnalysisParams) -> VerdictDecision | None:
        flagged = tuple(h for h in f.flagged if h.evidence > 0)
        k = sum(h.evidence for h in flagged)
        if not flagged or k < p.concentration_share * f.crashes:
            return None
        rest = sum(h.crashes for h in flagged) - k
        parts = [
            f"{k} of {f.crashes} crashes ({_pct(k / f.crashes)}) come from "
            f"{join_names([h.name for h in flagged])}, flagged by the per-host CPU scan "
            "(CPU concentration combined with residual hardware-flavoured anomalies, Fisher's "
            "method), on the CPUs named there or with hardware-flavoured anomalies this "
            "population does not show on other hosts: a defective core crashes whatever code "
            "runs on it."
            + (f" Their other {rest} crash(es) here count as any host's." if rest else "")
        ]
        parts += [_cpu_words(h) + "." for h in flagged if h.cpu is not None and h.cpu_crashes > 1]
        return VerdictDecision(PopulationVerdict.HARDWARE, tuple(parts), flagged)


def _concentrated(f: PopulationFacts, p: AnalysisParams) -> tuple[HostFacts, ...]:
    hosts = f.excess
    if not hosts or f.excess_hosts > p.max_suspect_hosts:
        return ()
    if sum(h.crashes for h in hosts) < p.concentration_share * f.crashes:
        return ()
    return hosts


class ConcentratedWithHardwareEvidence:
    name = "concentrated-with-hardware-evidence"

    def __call__(self, f: PopulationFacts, p: AnalysisParams) -> VerdictDecision | None:
        hosts = _concentrated(f, p)
        if not hosts:
            return None
        on_cpu = [h for h in hosts if h.cpu_p_value <= p.cpu_alpha and h.cpu_crashes >= 3]
        k = sum(h.crashes for h in hosts)
        hw = sum(h.hardware for h in hosts)
        if not on_cpu and hw < 0.5 * k:
            return None
        parts = [
            f"{k} of {f.crashes} crashes ({_pct(k / f.crashes)}) are on "
            f"{len(hosts)} host(s): "
            + "; ".join(_excess_words(h, f.rates_available) for h in hosts)
            + "."
        ]
        parts += [_cpu_words(h) + "." for h in on_cpu]
        if hw:
            parts.append(f"{hw} of those {k} crashes carry hardware-flavoured anomalies.")
        return VerdictDecision(PopulationVerdict.HARDWARE, tuple(parts), hosts)


class VersionOnset:
    name = "version-onset"

    def __call__(self, f: PopulationFacts, p: AnalysisParams) -> VerdictDecision | None:
        if f.onset is None or f.version_evidence is None:
            return None
        return VerdictDecision(PopulationVerdict.SOFTWARE, (f.version_evidence,))


class ConcentratedWithoutEvidence:
    name = "concentrated-without-evidence"

    def __call__(self, f: PopulationFacts, p: AnalysisParams) -> VerdictDecision | None:
        hosts = _concentrated(f, p)
        if not hosts:
            return None
        k = sum(h.crashes for h in hosts)
        return VerdictDecision(
            PopulationVerdict.INCONCLUSIVE,
            (
                f"{k} of {f.crashes} crashes are on {join_names([h.name for h in hosts])} "
                f"({'; '.join(_excess_words(h, f.rates_available) for h in hosts)}), but without "
                "CPU concentration or hardware-flavoured anomalies: a host-specific cause "
                "(configuration, workload, memory) is as likely as a CPU.",
            ),
        )


class Spread:
    name = "spread"

    def __call__(self, f: PopulationFacts, p: AnalysisParams) -> VerdictDecision | None:
        if f.hosts < p.spread_min_hosts or f.top_share >= p.concentration_share:
            return None
        words = (
            f"Spread over {f.hosts} hosts, the largest holding {_pct(f.top_share)} of "
            f"{f.crashes} crashes"
        )
        if f.rates_available and f.dispersion_index is not None:
            words += (
                f"; Pearson dispersion against exposure X2/df={f.dispersion_index:.2f} "
                f"(p={f.dispersion_p if f.dispersion_p is not None else 1.0:.2g}), "
                f"{f.excess_hosts} host(s) in excess after BH"
            )
        parts = [words + ": a software bug."]
        if f.hardware >= 0.5 * f.crashes:
            parts.append(
                f"{f.hardware} of {f.crashes} ({_pct(f.hardware / f.crashes)}) carry "
                "hardware-flavoured anomalies, but spread over many hosts and CPUs: a "
                "memory-corrupting software bug, not a CPU (explained away in the host scan)."
            )
        return VerdictDecision(PopulationVerdict.SOFTWARE, tuple(parts))


class Fallback:
    name = "fallback"

    def __call__(self, f: PopulationFacts, p: AnalysisParams) -> VerdictDecision | None:
        return VerdictDecision(
            PopulationVerdict.INCONCLUSIVE,
            (
                f"{f.crashes} crashes on {f.hosts} host(s): neither spread over "
                f"{p.spread_min_hosts}+ hosts nor tied to a CPU, a host or a version.",
            ),
        )


VERDICT_RULES: tuple[VerdictRule, ...] = (
    TooFewCrashes(),
    CrashLoop(),
    MadeOfFlaggedHosts(),
    ConcentratedWithHardwareEvidence(),
    VersionOnset(),
    ConcentratedWithoutEvidence(),
    Spread(),
    Fallback(),
)


def decide_verdict(
    facts: PopulationFacts, params: AnalysisParams, rules: Sequence[VerdictRule] = VERDICT_RULES
) -> tuple[VerdictDecision, str]:
    """The first rule that applies, and its name."""
    for rule in rules:
        decision = rule(facts, params)
        if decision is not None:
            return decision, rule.name
    raise AssertionError("the rule list must end with a rule that always applies")


def onset_sentence(onset: Onset) -> str:
    """Evidence sentence for an onset without version evidence (hardware or unexplained)."""
    ratio = "" if onset.rate_ratio is None else f", rate ×{onset.rate_ratio:.1f} after"
    p = "" if onset.p_value is None else f", Bonferroni p={onset.p_value:.2g}"
    return (
        f"Rate change point at {iso_time(onset.time_us)} (Poisson likelihood ratio against "
        f"exposure{ratio}{p})."
    )
