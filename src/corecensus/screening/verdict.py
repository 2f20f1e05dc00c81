"""From raw runs to per-(CPU, check) outcomes and the host decision (pure: no I/O).

Four steps, each explaining itself in the rows' ``detail`` and the decision's ``reasons``:

1. **Consensus.** Every CPU ran the same seeds, so within one CPU model the fingerprints of a
   round must agree. A CPU that disagrees with a strict majority fails that run, even if its
   known answers held (Hochschild et al., "Cores that don't count", HotOS 2021). With no majority
   (two CPUs, one each way) the tie is broken by the known answers (the side that passed them is
   right), then by the model's golden value; otherwise both are ``inconclusive``.
2. **Classification.** Two or more failing runs (a retry with a new seed, or another round) make
   ``failed_reproducible``; exactly one makes ``failed_transient``. Runs cut short become
   ``crashed`` or ``timed_out``.
3. **Software, not hardware.** A check that fails on every CPU screened, the same way, or a host
   whose CPUs agree with each other but not with their model's golden value, is
   ``software_suspect``: a broken library does not pick one core.
4. **Attribution.** A cross-core failure involves two CPUs; it is charged to the one that also
   fails on its own. The other CPU's row then says ``implicated`` (with the partner as
   ``suspect_cpu``), not failed: the healthy CPU of a pair never reads as failing. Then
   :func:`corecensus.screening.decision.decide` decides.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from corecensus.screening.decision import decide_screen
from corecensus.screening.golden import GoldenValues
from corecensus.screening.outcome import Outcome, WorkerStatus
from corecensus.screening.result import CheckResult, ScreenDecision
from corecensus.screening.runner import WorkerOutcome
from corecensus.screening.topology import Topology, format_cpu_list
from corecensus.screening.wire import RunRecord, RunStatus

__all__ = ["ScreenAnalysis", "analyze"]

CROSSCORE = "crosscore"


@dataclass(frozen=True, slots=True)
class ScreenAnalysis:
    results: tuple[CheckResult, ...]
    decision: ScreenDecision
    # (model_key, check, scale) -> fingerprint: round-0 values this screen can vouch for.
    golden_candidates: Mapping[tuple[str, str, float], str] = field(default_factory=dict)


@dataclass
class _Verdicts:
    """Consensus findings per (cpu, check)."""

    disagree: dict[tuple[int, str], dict[int, str]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    inconclusive: dict[tuple[int, str], dict[int, str]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    golden_conflict: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))


@dataclass(frozen=True, slots=True)
class _Facts:
    """What every step reads: the CPUs, the checks, the topology and every run by (cpu, check)."""

    cpus: tuple[int, ...]
    checks: tuple[str, ...]
    topology: Topology
    runs: Mapping[tuple[int, str], list[RunRecord]]

    def models(self) -> dict[str, list[int]]:
        """model_key -> the CPUs of that model (consensus is only expected within a model)."""
        out: dict[str, list[int]] = defaultdict(list)
        for cpu in self.cpus:
            out[self.topology.get(cpu).model_key].append(cpu)
        return out


def _valid(run: RunRecord) -> bool:
    # Every run starts and ends on the worker's own CPU (the cross-core check migrates and
    # comes back); anything else means the pin did not hold and the run proves nothing.
    return run.status is not RunStatus.SKIPPED and all(c == run.cpu for c in run.ran_on)


def analyze(
    *,
    cpus: Sequence[int],
    checks: Sequence[str],
    topology: Topology,
    outcomes: Mapping[int, WorkerOutcome],
    partners: Mapping[int, int | None],
    scale: float,
    golden: GoldenValues | None = None,
) -> ScreenAnalysis:
    golden = golden or GoldenValues()
    families: dict[str, str] = {}
    for outcome in outcomes.values():
        families.update(dict(outcome.families))
    runs: dict[tuple[int, str], list[RunRecord]] = defaultdict(list)
    for cpu in cpus:
        got = outcomes.get(cpu)
        for run in got.runs if got else ():
            runs[(cpu, run.check)].append(run)

    facts = _Facts(cpus=tuple(cpus), checks=tuple(checks), topology=topology, runs=runs)
    v = _consensus(facts, golden, scale)
    rows = {
        (cpu, check): _row(
            cpu,
            check,
            family=families.get(check, ""),
            runs=runs[(cpu, check)],
            out=outcomes.get(cpu),
            v=v,
            partners=partners,
        )
        for cpu in cpus
        for check in checks
    }
    software = _software_suspects(facts, rows, v)
    for check, why in software.items():
        for cpu in cpus:
            row = rows[(cpu, check)]
            if row.runs and (row.outcome.is_failure or row.outcome is Outcome.PASSED):
                rows[(cpu, check)] = replace(
                    row, outcome=Outcome.SOFTWARE_SUSPECT, suspect_cpu=None, detail=why
                )
    _attribute_crosscore(cpus, rows)
    ordered = tuple(rows[(cpu, check)] for cpu in cpus for check in checks)
    decision = decide_screen(cpus, ordered, outcomes, topology, software)
    candidates = _golden_candidates(facts, rows, scale, golden)
    return ScreenAnalysis(results=ordered, decision=decision, golden_candidates=candidates)


def _consensus(facts: _Facts, golden: GoldenValues, scale: float) -> _Verdicts:
    v = _Verdicts()
    runs = facts.runs
    for check in facts.checks:
        for model, members in facts.models().items():
            by_round: dict[int, dict[int, RunRecord]] = defaultdict(dict)
            for cpu in members:
                for run in runs.get((cpu, check), ()):
                    if run.attempt == 0 and _valid(run) and run.fingerprint:
                        by_round[run.round][cpu] = run
            for round_, per_cpu in by_round.items():
                _judge_round(
                    v,
                    (model, check, round_),
                    per_cpu,
                    golden_fp=golden.lookup(model, check, scale),
                )
    return v


def _judge_round(
    v: _Verdicts,
    where: tuple[str, str, int],
    per_cpu: Mapping[int, RunRecord],
    *,
    golden_fp: str | None,
) -> None:
    model, check, round_ = where
    counts = Counter(run.fingerprint for run in per_cpu.values())
    golden_fp = golden_fp if round_ == 0 else None
    if len(counts) == 1:
        (fp,) = counts
        all_ok = all(run.ok for run in per_cpu.values())
        if golden_fp is not None and fp != golden_fp and all_ok:
            if len(per_cpu) >= 2:
                v.golden_conflict[check].extend(per_cpu)
            else:
                for cpu in per_cpu:
                    v.inconclusive[(cpu, check)][round_] = (
                        f"differs from the golden value of model {model} and has no peer here"
                    )
        return
    top, n = counts.most_common(1)[0]
    reference: str | None = None
    method = ""
    if 2 * n > len(per_cpu):
        reference = top
        method = f"the majority ({n} of {len(per_cpu)} CPUs of model {model})"
    else:
        clean = {r.fingerprint for r in per_cpu.values() if r.ok}
        dirty = {r.fingerprint for r in per_cpu.values() if not r.ok}
        if len(clean) == 1 and not clean & dirty:
            (reference,) = clean
            method = "the CPUs that passed every known answer"
        elif golden_fp is not None and golden_fp in counts:
            reference = golden_fp
            method = f"the golden value of model {model}"
    for cpu, run in per_cpu.items():
        if reference is None:
            others = sorted(c for c in per_cpu if c != cpu)
            v.inconclusive[(cpu, check)][round_] = (
                f"round {round_}: fingerprint differs from CPU(s) {format_cpu_list(others)} "
                "and no majority, known answer or golden value says which is right"
            )
        elif run.fingerprint != reference:
            v.disagree[(cpu, check)][round_] = (
                f"round {round_}: fingerprint {run.fingerprint[:12]} differs from "
                f"{reference[:12]} of {method}"
            )


def _row(
    cpu: int,
    check: str,
    *,
    family: str,
    runs: Sequence[RunRecord],
    out: WorkerOutcome | None,
    v: _Verdicts,
    partners: Mapping[int, int | None],
) -> CheckResult:
    valid = [r for r in runs if _valid(r)]
    disagree = v.disagree.get((cpu, check), {})
    failing = [r for r in valid if not r.ok or (r.attempt == 0 and r.round in disagree)]
    seconds = sum(r.seconds for r in runs)
    interrupted = [i for i in (out.interrupted if out else ()) if i.check == check]
    partner = partners.get(cpu) if check == CROSSCORE else None
    base = {"cpu": cpu, "check": check, "family": family, "seconds": seconds, "partner": partner}
    n_fail = len(failing)
    if n_fail:
        first = failing[0]
        outcome = Outcome.FAILED_REPRODUCIBLE if n_fail >= 2 else Outcome.FAILED_TRANSIENT
        if not first.ok:
            expected, observed, detail = first.expected, first.observed, first.detail
        else:
            expected = "the fingerprint of its peers"
            observed = f"fingerprint {first.fingerprint[:12]}"
            detail = disagree[first.round]
        retried = "" if n_fail >= 2 or len(valid) > 1 else "; no retry finished within the budget"
        detail = f"failed {n_fail} of {len(valid)} runs{retried}. {detail}".strip()
        return CheckResult(
            **base,  # type: ignore[arg-type]
            outcome=outcome,
            expected=expected,
            observed=observed,
            runs=len(valid),
            failures=n_fail,
            suspect_cpu=cpu,
            detail=detail,
        )
    for reason in (WorkerStatus.CRASHED, WorkerStatus.TIMED_OUT):
        hit = [i for i in interrupted if i.reason is reason]
        if hit:
            return CheckResult(
                **base,  # type: ignore[arg-type]
                outcome=Outcome.CRASHED if reason is WorkerStatus.CRASHED else Outcome.TIMED_OUT,
                expected="the run finishes",
                observed=hit[0].detail,
                runs=len(valid),
                suspect_cpu=cpu if reason is WorkerStatus.CRASHED else None,
                detail=f"{len(valid)} other runs passed" if valid else "",
            )
    unsure = v.inconclusive.get((cpu, check))
    if unsure:
        first_round = min(unsure)
        return CheckResult(
            **base,  # type: ignore[arg-type]
            outcome=Outcome.INCONCLUSIVE,
            expected="the fingerprint of its peers",
            observed="disagrees, with no way to tell which CPU is right",
            runs=len(valid),
            detail=unsure[first_round],
        )
    if valid:
        return CheckResult(
            **base,  # type: ignore[arg-type]
            outcome=Outcome.PASSED,
            expected=valid[0].expected,
            observed=f"{len(valid)} runs passed; fingerprints agree with peers",
            runs=len(valid),
        )
    skipped = [r for r in runs if r.status is RunStatus.SKIPPED]
    unavailable = dict(out.unavailable) if out else {}
    if check in unavailable:
        why = unavailable[check]
    elif skipped:
        why = skipped[0].detail
    elif runs:
        why = f"ran off CPU {cpu} (ran on {sorted({c for r in runs for c in r.ran_on})})"
    elif out is None:
        why = "no worker ran on this CPU"
    elif out.status in (WorkerStatus.NOT_STARTED, WorkerStatus.PIN_FAILED, WorkerStatus.CRASHED):
        why = out.detail
    else:
        why = "the CPU's time budget was spent before this check's turn"
    return CheckResult(
        **base,  # type: ignore[arg-type]
        outcome=Outcome.SKIPPED,
        expected="",
        observed="",
        detail=why,
    )


def _software_suspects(
    facts: _Facts, rows: Mapping[tuple[int, str], CheckResult], v: _Verdicts
) -> dict[str, str]:
    cpus, checks, runs = facts.cpus, facts.checks, facts.runs
    found: dict[str, str] = {}
    for check in checks:
        ran = [cpu for cpu in cpus if rows[(cpu, check)].runs]
        if len(ran) >= 2:
            firsts = []
            for cpu in ran:
                bad = [r for r in runs[(cpu, check)] if _valid(r) and not r.ok]
                if not bad:
                    break
                firsts.append((bad[0].expected, bad[0].observed))
            else:
                if len(set(firsts)) == 1:
                    found[check] = (
                        f"failed the same way on all {len(ran)} CPUs screened "
                        f"({firsts[0][0]}; observed {firsts[0][1]}): a software or library "
                        "problem, not a defective core"
                    )
                    continue
        conflict = v.golden_conflict.get(check)
        if conflict:
            found[check] = (
                f"CPUs {format_cpu_list(conflict)} agree with each other but not with the golden "
                "value recorded for their model: a library, kernel or microcode change"
            )
    return found


def _attribute_crosscore(cpus: Sequence[int], rows: dict[tuple[int, str], CheckResult]) -> None:
    own_fail = {
        cpu: sorted(
            r.check
            for (c, _), r in rows.items()
            if c == cpu and r.check != CROSSCORE and r.outcome.is_failure
        )
        for cpu in cpus
    }
    cross = {cpu: rows.get((cpu, CROSSCORE)) for cpu in cpus}
    involvement: Counter[int] = Counter()
    for cpu, row in cross.items():
        if row is not None and row.outcome.is_failure and row.partner is not None:
            involvement[cpu] += 1
            involvement[row.partner] += 1
    for cpu, row in cross.items():
        if row is None or not row.outcome.is_failure or row.partner is None:
            continue
        partner = row.partner
        mine, theirs = bool(own_fail[cpu]), bool(own_fail.get(partner))
        suspect: int | None
        if mine != theirs:
            blamed = cpu if mine else partner
            suspect = blamed
            why = f"CPU {blamed} also fails {', '.join(own_fail.get(blamed, []))}"
        elif involvement[cpu] != involvement[partner]:
            suspect = cpu if involvement[cpu] > involvement[partner] else partner
            why = f"CPU {suspect} is in more failing cross-core pairs"
        else:
            suspect = None
            why = f"nothing tells CPU {cpu} from CPU {partner}"
        if suspect is not None and suspect != cpu:
            # This CPU computed right; its partner did not (the row's runs and values stay, as
            # the evidence against the partner).
            rows[(cpu, CROSSCORE)] = replace(
                row,
                outcome=Outcome.IMPLICATED,
                suspect_cpu=suspect,
                detail=(
                    f"implicated by CPU {partner}: the cross-core check with CPU {partner} "
                    f"{row.detail[0].lower()}{row.detail[1:]} Attributed to CPU {partner}: "
                    f"{why}; CPU {cpu} is not suspect."
                ),
            )
            continue
        rows[(cpu, CROSSCORE)] = replace(
            row, suspect_cpu=suspect, detail=f"{row.detail} Attributed: {why}."
        )


def _golden_candidates(
    facts: _Facts,
    rows: Mapping[tuple[int, str], CheckResult],
    scale: float,
    golden: GoldenValues,
) -> dict[tuple[str, str, float], str]:
    """Round-0 fingerprints on which every CPU of a model agrees and every row passed."""
    out: dict[tuple[str, str, float], str] = {}
    runs = facts.runs
    for model, members in facts.models().items():
        for check in facts.checks:
            if golden.lookup(model, check, scale) is not None:
                continue
            if any(rows[(cpu, check)].outcome is not Outcome.PASSED for cpu in members):
                continue
            fps = {
                r.fingerprint
                for cpu in members
                for r in runs.get((cpu, check), ())
                if r.round == 0 and r.attempt == 0 and _valid(r)
            }
            if len(fps) == 1:
                out[(model, check, scale)] = fps.pop()
    return out
