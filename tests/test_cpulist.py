"""The one CPU-list parser (corecensus.cpulist): the kernel's syntax, strict where the kernel is
lenient by accident, bounded on hostile input. Sidecars, crash-facts files, sysfs and
``screen --cpus`` all read lists through it (there were two parsers, with different rules)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corecensus.cpulist import (
    MAX_CPU,
    CpuListError,
    canonical_cpu_list,
    cpu_list_size,
    format_cpu_list,
    parse_cpu_list,
)
from corecensus.errors import MetadataError


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("0", (0,)),
        ("0-3,8,10-11", (0, 1, 2, 3, 8, 10, 11)),
        ("0-3,8, 10-11\n", (0, 1, 2, 3, 8, 10, 11)),  # as /proc and sysfs end it
        ("\t5 ,\t3-4 ", (3, 4, 5)),
        ("3,1,3,2", (1, 2, 3)),
        # Strides, lib/bitmap-str.c's own example and its single-number form.
        ("0-1023:2/256", (0, 1, 256, 257, 512, 513, 768, 769)),
        ("0-15:2/4", (0, 1, 4, 5, 8, 9, 12, 13)),
        ("0-9:1/3", (0, 3, 6, 9)),
        ("0-5:3/3", (0, 1, 2, 3, 4, 5)),
        ("7:1/2", (7,)),
        (f"{MAX_CPU - 1}", (MAX_CPU - 1,)),
    ],
)
def test_kernel_syntax(text: str, cpus: tuple[int, ...]) -> None:
    assert parse_cpu_list(text) == cpus


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty CPU list"),
        (" \n", "empty CPU list"),
        ("1,,2", "'' is not N"),
        ("1,", "'' is not N"),
        ("0 1", "'0 1' is not N"),  # the kernel reads blanks as separators; a typo here
        ("1 - 3", "'1 - 3' is not N"),
        ("3-1", "range '3-1' runs backwards"),
        ("-1", "'-1' is not N"),
        ("+1", "'+1' is not N"),
        ("1_0", "'1_0' is not N"),  # int() would read 10
        ("\u0663", "is not N"),  # ARABIC-INDIC DIGIT THREE: int() and \d read 3
        ("\u00b3", "is not N"),  # SUPERSCRIPT THREE: str.isdigit() is True
        ("0x3", "is not N"),
        ("N", "'N' is not N"),  # the kernel's "last CPU": no host to take it from here
        ("0-N", "is not N"),
        ("all", "is not N"),
        (f"{MAX_CPU}", f"CPU {MAX_CPU} is out of range"),
        ("0-99999999", "'0-99999999' is out of range"),
        ("9" * 5000, "is out of range"),  # int() of 5,000 digits raises ValueError
        ("0-7:0/4", "stride 0/4 needs 1 <= USED <= GROUP"),
        ("0-7:5/4", "stride 5/4 needs"),
        ("0-7:1/0", "stride 1/0 needs"),
        ("0-7:2", "is not N"),
    ],
)
def test_rejected_with_a_one_line_reason(text: str, why: str) -> None:
    with pytest.raises(CpuListError, match="CPU list") as err:
        parse_cpu_list(text)
    message = str(err.value)
    assert why in message
    assert "\n" not in message and len(message) < 300  # outside text is quoted and cut


def test_errors_are_metadata_errors() -> None:
    """Every caller that reads outside metadata catches MetadataError (a bad list in a sidecar
    is a malformed field, not a failed batch)."""
    assert issubclass(CpuListError, MetadataError)


def test_a_list_naming_millions_of_cpus_is_refused_before_expanding() -> None:
    """ "0-65535" a hundred thousand times names 6.5 billion CPUs: refused without expanding
    (a set update per range would take minutes)."""
    with pytest.raises(CpuListError, match="its ranges name over"):
        parse_cpu_list(",".join([f"0-{MAX_CPU - 1}"] * 100_000))
    # Repeating within the bound is still read (overlap is allowed, as the kernel allows it).
    assert parse_cpu_list(",".join(["0-1023"] * 64)) == tuple(range(1024))


def test_canonical_and_size() -> None:
    assert canonical_cpu_list("3,0-2,8,9") == "0-3,8-9"
    assert canonical_cpu_list("0-15:2/4") == "0-1,4-5,8-9,12-13"
    assert cpu_list_size("0-1023:2/256") == 8


@st.composite
def _regions(draw: st.DrawFn) -> tuple[str, set[int]]:
    """A list of random regions (some strided) with the CPUs they name, expanded the slow way."""
    parts, cpus = [], set()
    for _ in range(draw(st.integers(1, 6))):
        lo = draw(st.integers(0, 300))
        hi = draw(st.integers(lo, lo + 300))
        if draw(st.booleans()):
            group = draw(st.integers(1, 40))
            used = draw(st.integers(1, group))
            parts.append(f"{lo}-{hi}:{used}/{group}")
            cpus |= {c for c in range(lo, hi + 1) if (c - lo) % group < used}
        else:
            parts.append(f"{lo}-{hi}" if hi != lo else str(lo))
            cpus |= set(range(lo, hi + 1))
    return ", ".join(parts), cpus


@given(_regions())
def test_parse_matches_the_slow_expansion_and_round_trips(case: tuple[str, set[int]]) -> None:
    text, cpus = case
    parsed = parse_cpu_list(text)
    assert parsed == tuple(sorted(cpus))
    assert parse_cpu_list(format_cpu_list(parsed)) == parsed
