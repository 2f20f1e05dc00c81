"""The checks themselves, run in this process: they pass on a healthy CPU, are deterministic per
seed, and their known answers are what they claim to be."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from fractions import Fraction
from importlib import resources

import pytest

from corecensus.errors import ScreeningError
from corecensus.screening import (
    BUILTIN_CHECKS,
    QUICK_CHECKS,
    CheckContext,
    CheckNotApplicable,
    default_registry,
)
from corecensus.screening.checks import Tally, digest, load_check
from corecensus.screening.checks.crc import _crc32_reference
from corecensus.screening.checks.protocol import Observation

NO_PARTNER = {"crosscore"}
ALLOWED = frozenset(os.sched_getaffinity(0))


@pytest.fixture(scope="module")
def pinned_cpu() -> Iterator[int]:
    """Run in-process checks on one CPU (the cross-core one migrates and must come back)."""
    cpu = min(ALLOWED)
    os.sched_setaffinity(0, {cpu})
    yield cpu
    os.sched_setaffinity(0, ALLOWED)


@pytest.mark.parametrize("name", list(BUILTIN_CHECKS))
def test_every_check_passes_and_is_deterministic(name: str, pinned_cpu: int) -> None:
    check = load_check(BUILTIN_CHECKS[name])
    assert check.name == name and check.family and check.description
    partner = next((c for c in sorted(ALLOWED) if c != pinned_cpu), None)
    if name in NO_PARTNER and partner is None:
        pytest.skip("the cross-core check needs a second CPU")
    ctx = CheckContext(seed=11, scale=0.2, cpu=pinned_cpu, partner=partner)
    first, again = check.run(ctx), check.run(ctx)
    assert first.ok, (first.expected, first.observed, first.detail)
    assert first.fingerprint == again.fingerprint
    assert first.observed.startswith("all ") and "comparisons matched" in first.observed
    other = check.run(CheckContext(seed=12, scale=0.2, cpu=pinned_cpu, partner=partner))
    if name != "shared_counter":  # its answer depends only on the amount of work
        assert other.fingerprint != first.fingerprint


def test_crosscore_without_a_partner_is_not_applicable(pinned_cpu: int) -> None:
    check = load_check(BUILTIN_CHECKS["crosscore"])
    with pytest.raises(CheckNotApplicable, match="no partner"):
        check.run(CheckContext(seed=1, cpu=pinned_cpu, partner=None))


def test_pow_table_is_the_exact_power_of_the_double_nearest_1_1() -> None:
    source = resources.files("corecensus.screening.checks") / "data" / "pow_1_1.json"
    doc = json.loads(source.read_text(encoding="utf-8"))
    base = Fraction(1.1)
    ks = [row["k"] for row in doc["rows"]]
    assert ks == list(range(-120, 121))
    for row in doc["rows"]:
        exact = base ** row["k"]
        assert float.fromhex(row["value"]) == float(exact)  # int/int true division rounds correctly
        assert row["int"] == int(exact)
    row53 = next(r for r in doc["rows"] if r["k"] == 53)
    assert row53["int"] == 156  # the DESIGN's example: Int(1.1^53) = 156


def test_crc_reference_matches_the_standard_check_value() -> None:
    assert _crc32_reference(b"123456789") == 0xCBF43926


def test_tally_reports_the_first_mismatch_and_counts() -> None:
    t = Tally("three things")
    t.expect("a", 1, 1)
    t.expect("b", 2, 3)
    t.judge("c", False, 1.5, 0.0)
    t.feed(1.0, b"x", "s", 1 << 300, -5)
    obs = t.observation()
    assert not obs.ok
    assert (obs.expected, obs.observed) == ("b = 2", "b = 3")
    assert obs.detail == "2 of 3 comparisons failed (+1 more mismatches)"
    clean = Tally("one thing")
    clean.expect("a", 1, 1)
    assert clean.observation() == Observation(
        True, "one thing", "all 1 comparisons matched", digest()
    )


def test_digest_sees_the_last_bit_of_a_float() -> None:
    x = 156.24722518287513
    y = float.fromhex(x.hex()[:-1] + "9")
    assert x != y and digest(x) != digest(y)
    assert digest(1, 2) != digest(12) and digest(b"ab") != digest(b"a", b"b")


def test_registry() -> None:
    reg = default_registry()
    assert len(reg) == len(BUILTIN_CHECKS) >= 13
    assert set(QUICK_CHECKS) <= set(reg)
    sub = reg.subset(["crc32", "libm_pow"])
    assert sub.names() == ("libm_pow", "crc32")  # registry order
    assert reg.with_check("extra", "m:C").spec("extra") == "m:C"
    with pytest.raises(ScreeningError, match="unknown check 'nope'"):
        reg.subset(["nope"])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "expected 'module:Class'"),
        ("corecensus.nonexistent:X", "cannot load check"),
        ("corecensus.screening.checks.crc:Nope", "cannot load check"),
        ("corecensus.screening.checks.crc:Tally", "cannot instantiate check"),
        ("random:Random", "is not a check"),
    ],
)
def test_load_check_errors(spec: str, message: str) -> None:
    with pytest.raises(ScreeningError, match=message):
        load_check(spec)
