"""The screen finds a bad CPU: an LD_PRELOAD shim corrupts pow() and crc32() on CPU 1 only.

The screen must flag exactly that CPU, and only it, every time; clean runs must flag nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from screening_helpers import BAD_CPU, HANG_BUDGET_S, screen, shim_env

from corecensus.screening import QUICK_CHECKS, Outcome, ScreenResult, ScreenVerdict

pytestmark = pytest.mark.usefixtures("two_cpus")

GOOD_CPU = 0


def own_rows(result: ScreenResult, cpu: int) -> list[tuple[str, Outcome]]:
    return [(r.check, r.outcome) for r in result.results if r.cpu == cpu]


def assert_only_bad_cpu_flagged(result: ScreenResult) -> None:
    d = result.decision
    assert d.verdict is ScreenVerdict.QUARANTINE_CPUS, d.reasons
    assert d.quarantine_cpus == (BAD_CPU,)
    assert d.flagged_cpus == (BAD_CPU,)
    assert not d.quarantine_host
    for r in result.results:
        if r.outcome.is_failure:
            assert r.suspect_cpu == BAD_CPU, r
        # CPU 0's own computations all pass; only the cross-core row, which verifies on CPU 1,
        # may fail there -- and it is blamed on CPU 1.
        if r.cpu == GOOD_CPU and r.check != "crosscore":
            assert r.outcome is Outcome.PASSED, r


def test_bitflip_on_cpu1_is_found_on_cpu1_only_repeatedly(shim: Path) -> None:
    checks = (*QUICK_CHECKS, "libm_sweep")
    for seed in (1, 2, 3):
        result = screen(checks, worker_env=shim_env(shim), seed=seed)
        assert_only_bad_cpu_flagged(result)
        bad = dict(own_rows(result, BAD_CPU))
        assert bad["libm_pow"] is Outcome.FAILED_REPRODUCIBLE
        assert bad["libm_sweep"] is Outcome.FAILED_REPRODUCIBLE
        assert bad["crc32"] is Outcome.FAILED_REPRODUCIBLE
        assert bad["bigint"] is Outcome.PASSED  # untouched paths stay clean on the bad CPU
        assert bad["aes"] is Outcome.PASSED
        crc = result.result(BAD_CPU, "crc32")
        assert crc.expected == "zlib.crc32('123456789') = 0xcbf43926"
        assert crc.observed == "zlib.crc32('123456789') = 0xcbf439a6"  # bit 7 flipped
        # Computed on CPU 0, verified on CPU 1: the cross-core check of CPU 0 fails, because of
        # CPU 1; CPU 0's row says it was implicated by its partner, not that it failed.
        cross = result.result(GOOD_CPU, "crosscore")
        assert cross.outcome is Outcome.IMPLICATED and not cross.outcome.is_failure
        assert cross.partner == BAD_CPU and cross.suspect_cpu == BAD_CPU
        assert cross.detail.startswith(f"implicated by CPU {BAD_CPU}")
        assert "CPU 0 -> CPU 1" in cross.expected


def test_the_reported_defect_int_pow_1_1_53_is_0(shim: Path) -> None:
    """DESIGN: a core returned Int(1.1^53) = 0 instead of 156. Only the exhaustive k sweep sees it;
    random arguments (libm_sweep) miss such a data-dependent fault."""
    result = screen(
        ("libm_pow", "libm_sweep"), worker_env=shim_env(shim, pow_mode="story", funcs="pow")
    )
    assert_only_bad_cpu_flagged(result)
    row = result.result(BAD_CPU, "libm_pow")
    assert row.outcome is Outcome.FAILED_REPRODUCIBLE
    assert row.expected == "int(pow(1.1, 53)) = 156"
    assert row.observed == "int(pow(1.1, 53)) = 0"
    assert result.result(BAD_CPU, "libm_sweep").outcome is Outcome.PASSED


def test_crc32_fault_alone_is_caught_by_crc_and_cross_core(shim: Path) -> None:
    result = screen(("crc32", "crosscore", "libm_pow"), worker_env=shim_env(shim, funcs="crc32"))
    assert_only_bad_cpu_flagged(result)
    assert result.result(BAD_CPU, "libm_pow").outcome is Outcome.PASSED
    assert result.result(BAD_CPU, "crc32").outcome is Outcome.FAILED_REPRODUCIBLE
    assert result.result(GOOD_CPU, "crosscore").suspect_cpu == BAD_CPU


def test_every_cpu_failing_the_same_way_is_software_not_hardware(shim: Path) -> None:
    result = screen(("libm_pow", "crc32", "aes"), worker_env=shim_env(shim, cpu="all"))
    d = result.decision
    assert d.verdict is ScreenVerdict.SOFTWARE_SUSPECT, d.reasons
    assert d.quarantine_cpus == () and not d.quarantine_host
    assert d.software_suspect_checks == ("crc32", "libm_pow")
    for cpu in (GOOD_CPU, BAD_CPU):
        assert result.result(cpu, "libm_pow").outcome is Outcome.SOFTWARE_SUSPECT
        assert result.result(cpu, "aes").outcome is Outcome.PASSED


def test_clean_runs_flag_nothing_across_many_repetitions() -> None:
    checks = (*QUICK_CHECKS, "libm_sweep", "vector", "sorting")
    for seed in range(8):
        result = screen(checks, rounds=2, seed=1000 + seed)
        assert result.decision.verdict is ScreenVerdict.CLEAN, result.decision.reasons
        assert result.decision.flagged_cpus == ()
        for r in result.results:
            assert r.outcome is Outcome.PASSED, r
            assert r.runs == 2


def test_full_battery_is_clean_on_this_host() -> None:
    result = screen(None, rounds=1, budget=HANG_BUDGET_S)
    assert result.decision.verdict is ScreenVerdict.CLEAN, result.decision.reasons
    assert {r.check for r in result.results} >= {
        "libm_pow",
        "libm_sweep",
        "fma_matmul",
        "vector",
        "bigint",
        "hashing",
        "crc32",
        "compression",
        "aes",
        "memory",
        "sorting",
        "shared_counter",
        "crosscore",
    }
    families = {r.family for r in result.results}
    assert len(families) >= 10, families
    assert all(r.outcome is Outcome.PASSED for r in result.results)
