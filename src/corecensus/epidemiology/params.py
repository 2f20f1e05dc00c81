"""The knobs of :func:`corecensus.epidemiology.analyze`, declared once with their meaning.

Defaults are the values docs/statistics.md explains and bench/fleet_sim measures; the
simulator's null fleets check that ``host_alpha`` keeps false alarms below one per 10,000 hosts
per 30 days.
"""

from __future__ import annotations

from dataclasses import dataclass

from corecensus.errors import ConfigError
from corecensus.model import ANOMALY_NAMES

__all__ = ["HARDWARE_ANOMALIES", "AnalysisParams"]

# Register states a correct program on a correct CPU essentially never produces; a defective
# core does (see docs/statistics.md, "hardware-flavoured anomalies"). pc_zero,
# returned_to_bad_address and sp_outside_stack are ordinary software failures (NULL function
# pointers, smashed return addresses, runaway recursion) and are left out.
HARDWARE_ANOMALIES: tuple[str, ...] = (
    "sp_off_by_8",
    "bit_flip_candidate",
    "fault_address_mismatch",
    "pc_not_executable",
    "sigbus_memory_error",
)


@dataclass(frozen=True, slots=True)
class AnalysisParams:
    """Thresholds and priors; every probability is a p-value or FDR level in [0, 1].

    Host scan (hardware): ``host_alpha`` per-host false-alarm budget on the combined CPU
    concentration + residual anomaly p-value; ``window_alpha`` the extra budget of the
    focused tests (time windows, two busiest CPUs; 0 turns them off); ``cpu_alpha`` to name a
    CPU; anomaly explaining
    away by ``explain_min_rate`` / ``explain_min_hosts`` / ``anomaly_prior_strength``
    (pseudo-crashes, at most: weaker when populations' rates spread more; see anomalyrates);
    ``default_cpus`` is the CPU count of hosts without host facts (0: infer it
    from the CPU indices seen; see concentration); ``streaming`` computes first-alarm times, at
    ``stream_alpha`` (default
    ``host_alpha``: the streaming test looks after every crash, so it alarms more often);
    host p-values above ``host_p_exact_below`` are reported as 1 (not computed exactly), and the
    stream's looks above ``stream_p_exact_below`` are not computed (its minimum is exact below).
    ``loop_gap_s`` folds crash loops into one event (0 disables), ``loop_min_crashes`` reports
    one.

    Rates: ``fdr_q`` BH level across hosts; ``mid_p`` for the Poisson tests; a host is in
    excess for a population when its BH q-value is at most ``fdr_q`` and its Gamma-Poisson
    shrunken rate ratio at least ``excess_rate_ratio``; ``high_rate_ratio`` lists a host as
    high-crash-rate.

    Verdicts: ``min_crashes`` to judge at all; a population is *concentrated* when at most
    ``max_suspect_hosts`` excess hosts hold at least ``concentration_share`` of it, *spread*
    when at least ``spread_min_hosts`` hosts have it and none holds ``concentration_share``.

    Onsets: ``onset_alpha`` for the change point and the version-absence test,
    ``onset_min_ratio`` rate ratio, ``deploy_window_hours`` to align with a deploy,
    ``version_min_share`` of a population's crashes for a version to count as "appearing".

    Disproportionality: ``prr_min``, ``signal_min_crashes``, ``signal_min_hosts``, ``fdr_q``.
    Mixtures: ``split_alpha``.
    """

    # The host test's p-values are exact given the anomaly rates (hosttest.py), so host_alpha is
    # the per-host false-alarm probability: 5e-5 is at most 0.5 expected false alarms per
    # 10,000 hosts per window, half the budget of one, the other half a margin for the
    # estimated (plug-in) anomaly rates and the stream's repeated looks.
    host_alpha: float = 5e-5
    # The focused tests (hostfocus.py: dyadic time windows, the two busiest CPUs) share one
    # more per-host budget by Bonferroni: a host's false-alarm probability is at most
    # host_alpha + window_alpha = 1e-4, one expected false alarm per 10,000 hosts per window.
    window_alpha: float = 5e-5
    stream_alpha: float | None = None
    # The exact host p-value is the costliest step of analyze; above this level (never below
    # the alarm thresholds) it is not computed and reported as 1 (hosttest.lower_bounds).
    host_p_exact_below: float = 0.01
    stream_p_exact_below: float = 1e-3
    cpu_alpha: float = 1e-3
    default_cpus: int = 0
    hardware_anomalies: tuple[str, ...] = HARDWARE_ANOMALIES
    explain_min_rate: float = 0.2
    explain_min_hosts: int = 3
    anomaly_prior_strength: float = 50.0
    streaming: bool = True
    # Crash loops (loops.py): crashes of one (host, service, population) at most this many
    # seconds apart are one event for the host tests; this many or more are reported as a loop.
    loop_gap_s: float = 1800.0
    loop_min_crashes: int = 5
    fdr_q: float = 0.05
    mid_p: bool = False
    excess_rate_ratio: float = 3.0
    high_rate_ratio: float = 4.0
    min_crashes: int = 3
    max_suspect_hosts: int = 3
    concentration_share: float = 0.5
    spread_min_hosts: int = 3
    onset_alpha: float = 1e-3
    onset_min_ratio: float = 3.0
    deploy_window_hours: float = 72.0
    version_min_share: float = 0.01
    prr_min: float = 2.0
    signal_min_crashes: int = 3
    signal_min_hosts: int = 3
    split_alpha: float = 1e-3
    max_crash_ids: int = 5

    def __post_init__(self) -> None:
        for name in (
            "host_alpha",
            "window_alpha",
            "cpu_alpha",
            "fdr_q",
            "onset_alpha",
            "split_alpha",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
        for name in ("explain_min_rate", "concentration_share", "version_min_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
        unknown = [a for a in self.hardware_anomalies if a not in ANOMALY_NAMES]
        if unknown:
            raise ConfigError(f"unknown anomaly name(s) in hardware_anomalies: {unknown}")
        if self.default_cpus < 0:
            raise ConfigError("default_cpus must be >= 0 (0: infer)")
        if self.min_crashes < 1 or self.max_suspect_hosts < 1 or self.spread_min_hosts < 1:
            raise ConfigError("min_crashes, max_suspect_hosts and spread_min_hosts must be >= 1")

    @property
    def hardware_mask(self) -> int:
        """Bit mask of :attr:`hardware_anomalies` over ``ANOMALY_NAMES``."""
        mask = 0
        for name in self.hardware_anomalies:
            mask |= 1 << ANOMALY_NAMES.index(name)
        return mask
