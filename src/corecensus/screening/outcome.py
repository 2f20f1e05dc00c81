"""Enumerations of the SDC screen: what happened to one check, to one CPU's worker, and to the host.

The string values are a stable contract (``corecensus screen --json``, the store); keep them exact.
"""

from __future__ import annotations

import enum

__all__ = ["Mode", "Outcome", "ScreenVerdict", "WorkerStatus"]


class Mode(enum.StrEnum):
    """How a screen is run (see :mod:`corecensus.screening.modes` for each mode's defaults)."""

    ONESHOT = "oneshot"
    PERIODIC = "periodic"
    BACKGROUND = "background"


class Outcome(enum.StrEnum):
    """The outcome of one check on one CPU, over every run of it in one screen."""

    PASSED = "passed"
    # Failed in two or more runs (a retry with a new seed, or another round, failed too).
    FAILED_REPRODUCIBLE = "failed_reproducible"
    # Failed once, then passed every retry: an intermittent fault, or a marginal core.
    FAILED_TRANSIENT = "failed_transient"
    # Was running when the CPU's or the screen's hard time budget ran out.
    TIMED_OUT = "timed_out"
    # Was running when its worker process died (a signal, or an exit without finishing).
    CRASHED = "crashed"
    # Never ran (budget spent earlier, worker never started, or not applicable to this host).
    SKIPPED = "skipped"
    # Every CPU screened failed it the same way, or the whole host disagrees with the golden
    # values of its CPU model: a software or library problem, not a defective core.
    SOFTWARE_SUSPECT = "software_suspect"
    # This CPU disagreed with a peer of the same model and nothing could say which was right
    # (no majority, no golden value, no known-answer failure to break the tie).
    INCONCLUSIVE = "inconclusive"
    # The cross-core check between this CPU and its partner failed, and the failure is charged
    # to the partner (``suspect_cpu``): this CPU was implicated by another one, it did not fail.
    IMPLICATED = "implicated"

    @property
    def is_failure(self) -> bool:
        """A hardware-suspect failure (what quarantine decisions count)."""
        return self in (Outcome.FAILED_REPRODUCIBLE, Outcome.FAILED_TRANSIENT)


class WorkerStatus(enum.StrEnum):
    """What happened to the worker process of one CPU."""

    COMPLETED = "completed"
    TIMED_OUT = "timed_out"
    CRASHED = "crashed"
    # The worker could not be pinned to its CPU, or could not confirm it ran there.
    PIN_FAILED = "pin_failed"
    # The screen's overall budget ran out before this CPU's turn.
    NOT_STARTED = "not_started"


class ScreenVerdict(enum.StrEnum):
    """The host-level decision of one screen."""

    CLEAN = "clean"
    QUARANTINE_CPUS = "quarantine_cpus"
    QUARANTINE_HOST = "quarantine_host"
    SOFTWARE_SUSPECT = "software_suspect"
    # Nothing reproducible, but something needs a longer or repeated screen: a transient
    # failure, a crash, a timeout or an inconclusive disagreement.
    RESCREEN = "rescreen"
