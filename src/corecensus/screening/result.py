"""The records a screen produces: per (CPU, check) results, per-CPU reports, the decision.

:class:`ScreenResult` is the stable record the store keeps beside crash records and that
``corecensus screen --json`` prints (:meth:`ScreenResult.to_json`, ``"kind": "sdc_screen"``).
Times are microseconds since the Unix epoch (as ``COREDUMP_TIMESTAMP``); durations are seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from corecensus.errors import ScreeningError
from corecensus.screening.outcome import Mode, Outcome, ScreenVerdict, WorkerStatus
from corecensus.screening.wire import DutyReport

__all__ = ["RECORD_KIND", "CheckResult", "CpuReport", "ScreenDecision", "ScreenResult"]

RECORD_KIND = "sdc_screen"
RECORD_FORMAT = 1


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check on one CPU over the whole screen (every round and retry).

    ``expected``/``observed`` describe the first failing run (or what was checked, when it
    passed); ``runs`` and ``failures`` count runs; ``suspect_cpu`` is the CPU a failure is
    attributed to -- the row's own CPU, except for a cross-core failure blamed on the partner,
    or None when it cannot be attributed.
    """

    cpu: int
    check: str
    family: str
    outcome: Outcome
    expected: str
    observed: str
    seconds: float
    runs: int = 0
    failures: int = 0
    suspect_cpu: int | None = None
    partner: int | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu": self.cpu,
            "check": self.check,
            "family": self.family,
            "outcome": str(self.outcome),
            "expected": self.expected,
            "observed": self.observed,
            "seconds": round(self.seconds, 6),
            "runs": self.runs,
            "failures": self.failures,
            "suspect_cpu": self.suspect_cpu,
            "partner": self.partner,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> CheckResult:
        return cls(
            cpu=int(obj["cpu"]),
            check=str(obj["check"]),
            family=str(obj.get("family", "")),
            outcome=Outcome(obj["outcome"]),
            expected=str(obj.get("expected", "")),
            observed=str(obj.get("observed", "")),
            seconds=float(obj.get("seconds", 0.0)),
            runs=int(obj.get("runs", 0)),
            failures=int(obj.get("failures", 0)),
            suspect_cpu=None if obj.get("suspect_cpu") is None else int(obj["suspect_cpu"]),
            partner=None if obj.get("partner") is None else int(obj["partner"]),
            detail=str(obj.get("detail", "")),
        )


@dataclass(frozen=True, slots=True)
class CpuReport:
    """One CPU: its identity, what its worker did, and (background mode) its measured duty."""

    cpu: int
    model_key: str
    model_name: str | None
    microcode: str | None
    package_id: int | None
    core_id: int | None
    thread_siblings: tuple[int, ...]
    status: WorkerStatus
    verified_cpu: int | None
    partner: int | None
    rounds: int
    runs: int
    seconds: float
    cpu_seconds: float
    restarts: int = 0
    detail: str = ""
    duty: DutyReport | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu": self.cpu,
            "model_key": self.model_key,
            "model_name": self.model_name,
            "microcode": self.microcode,
            "package_id": self.package_id,
            "core_id": self.core_id,
            "thread_siblings": list(self.thread_siblings),
            "status": str(self.status),
            "verified_cpu": self.verified_cpu,
            "partner": self.partner,
            "rounds": self.rounds,
            "runs": self.runs,
            "seconds": round(self.seconds, 6),
            "cpu_seconds": round(self.cpu_seconds, 6),
            "restarts": self.restarts,
            "detail": self.detail,
            "duty": self.duty.to_json() if self.duty else None,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> CpuReport:
        duty = obj.get("duty")
        return cls(
            cpu=int(obj["cpu"]),
            model_key=str(obj.get("model_key", "")),
            model_name=obj.get("model_name"),
            microcode=obj.get("microcode"),
            package_id=obj.get("package_id"),
            core_id=obj.get("core_id"),
            thread_siblings=tuple(int(c) for c in obj.get("thread_siblings", ())),
            status=WorkerStatus(obj["status"]),
            verified_cpu=obj.get("verified_cpu"),
            partner=obj.get("partner"),
            rounds=int(obj.get("rounds", 0)),
            runs=int(obj.get("runs", 0)),
            seconds=float(obj.get("seconds", 0.0)),
            cpu_seconds=float(obj.get("cpu_seconds", 0.0)),
            restarts=int(obj.get("restarts", 0)),
            detail=str(obj.get("detail", "")),
            duty=DutyReport.from_json(duty) if duty else None,
        )


@dataclass(frozen=True, slots=True)
class ScreenDecision:
    """What to do with the host: quarantine CPUs (a reproducible failure), the whole host (more
    than two failing CPUs), suspect software (every CPU fails the same way), or rescreen."""

    verdict: ScreenVerdict
    quarantine_cpus: tuple[int, ...] = ()
    quarantine_host: bool = False
    rescreen_cpus: tuple[int, ...] = ()
    software_suspect_checks: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()

    @property
    def flagged_cpus(self) -> tuple[int, ...]:
        """Every CPU the decision names (quarantine or rescreen)."""
        return tuple(sorted(set(self.quarantine_cpus) | set(self.rescreen_cpus)))

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": str(self.verdict),
            "quarantine_cpus": list(self.quarantine_cpus),
            "quarantine_host": self.quarantine_host,
            "rescreen_cpus": list(self.rescreen_cpus),
            "software_suspect_checks": list(self.software_suspect_checks),
            "reasons": list(self.reasons),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ScreenDecision:
        return cls(
            verdict=ScreenVerdict(obj["verdict"]),
            quarantine_cpus=tuple(int(c) for c in obj.get("quarantine_cpus", ())),
            quarantine_host=bool(obj.get("quarantine_host", False)),
            rescreen_cpus=tuple(int(c) for c in obj.get("rescreen_cpus", ())),
            software_suspect_checks=tuple(obj.get("software_suspect_checks", ())),
            reasons=tuple(obj.get("reasons", ())),
        )


@dataclass(frozen=True, slots=True)
class ScreenResult:
    """One screen of one host."""

    screen_id: str
    host: str
    started_at: int
    seconds: float
    mode: Mode
    budget_s: float
    seed: int
    scale: float
    kernel: str | None
    version: str
    cpus: tuple[CpuReport, ...]
    results: tuple[CheckResult, ...]
    decision: ScreenDecision

    def result(self, cpu: int, check: str) -> CheckResult:
        for r in self.results:
            if r.cpu == cpu and r.check == check:
                return r
        raise KeyError((cpu, check))

    def cpu(self, cpu: int) -> CpuReport:
        for c in self.cpus:
            if c.cpu == cpu:
                return c
        raise KeyError(cpu)

    def to_json(self) -> dict[str, Any]:
        """The ``corecensus screen --json`` object (a stable contract)."""
        return {
            "kind": RECORD_KIND,
            "format": RECORD_FORMAT,
            "screen_id": self.screen_id,
            "host": self.host,
            "started_at": self.started_at,
            "seconds": round(self.seconds, 6),
            "mode": str(self.mode),
            "budget_s": self.budget_s,
            "seed": self.seed,
            "scale": self.scale,
            "kernel": self.kernel,
            "version": self.version,
            "cpus": [c.to_json() for c in self.cpus],
            "results": [r.to_json() for r in self.results],
            "decision": self.decision.to_json(),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ScreenResult:
        """Inverse of :meth:`to_json` (the store, the collector); bad input is a ScreeningError."""
        if obj.get("kind") != RECORD_KIND:
            raise ScreeningError(f"not a screen record (kind={obj.get('kind')!r})")
        try:
            return cls(
                screen_id=str(obj["screen_id"]),
                host=str(obj["host"]),
                started_at=int(obj["started_at"]),
                seconds=float(obj["seconds"]),
                mode=Mode(obj["mode"]),
                budget_s=float(obj["budget_s"]),
                seed=int(obj["seed"]),
                scale=float(obj["scale"]),
                kernel=obj.get("kernel"),
                version=str(obj.get("version", "")),
                cpus=tuple(CpuReport.from_json(c) for c in obj["cpus"]),
                results=tuple(CheckResult.from_json(r) for r in obj["results"]),
                decision=ScreenDecision.from_json(obj["decision"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ScreeningError(f"malformed screen record: {exc!r}") from exc

    def rows(self) -> list[dict[str, Any]]:
        """Flat per-(CPU, check) rows with the screen's identity, for a table store."""
        head = {
            "screen_id": self.screen_id,
            "host": self.host,
            "started_at": self.started_at,
            "mode": str(self.mode),
            "verdict": str(self.decision.verdict),
        }
        models = {c.cpu: (c.model_key, c.microcode) for c in self.cpus}
        out = []
        for r in self.results:
            model_key, microcode = models.get(r.cpu, ("", None))
            out.append({**head, "model_key": model_key, "microcode": microcode, **r.to_json()})
        return out
