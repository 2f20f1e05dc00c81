"""The signal-race rule on hand-made records: where it must fire and where it must not.

The real race (kernel cores of libunwind's bug) is in test_signal_race_fleet.py; these records
vary one fact at a time around it.
"""

from __future__ import annotations

import dataclasses

import pytest

from corecensus.model import Anomaly, CrashRecord, MappedFile, ParseStatus, SignalFrame
from corecensus.signature import (
    RACE_PREFIX,
    SP_SLACK,
    PopulationLevel,
    compute_signatures,
    population_key,
    race_evidence,
    signal_race,
)

SP = 0x7FFF_0000_1000
LIB = MappedFile("/usr/lib/libunwind.so.8", 0x7F00_0000_0000, 0x7F00_0001_0000, 0, "ab" * 20, True)
SETCONTEXT = LIB.base + 0x5382


def _frame(offset: int = -3000, pc_offset: int = 0x52, sp: int = SP, **kw: object) -> SignalFrame:
    fields: dict[str, object] = {
        "offset": offset,
        "interrupted_pc": SETCONTEXT + pc_offset,
        "function": "_Ux86_64_setcontext",
        "interrupted_sp": sp,
        "signal": None,
        "function_offset": pc_offset,
        "module": LIB.path,
        "module_offset": 0x5382 + pc_offset,
    }
    fields.update(kw)
    return SignalFrame(**fields)  # type: ignore[arg-type]


def _crash(*frames: SignalFrame, anomalies: tuple[str, ...] = ("pc_zero", "returned_to_bad_address"),
           exe: str = "/srv/app") -> CrashRecord:  # fmt: skip
    return CrashRecord(
        core_id=f"c{hash((frames, anomalies, exe)) & 0xFFFF:x}",
        status=ParseStatus.OK,
        exe=exe,
        signal=11,
        signal_name="SIGSEGV",
        registers={"rip": 0, "rsp": SP},
        modules=(LIB,),
        anomalies=tuple(Anomaly(a, "") for a in anomalies),
        signal_frames=frames,
    )


def test_fires_on_a_bad_return_after_a_signal_in_dead_stack() -> None:
    race = signal_race(_crash(_frame()))
    assert race is not None
    assert race.key == "_Ux86_64_setcontext (libunwind.so.8)"
    assert race.where == "_Ux86_64_setcontext+0x52"
    assert race.sp_delta == 0
    sig = compute_signatures(_crash(_frame()))
    assert sig.symbolic == RACE_PREFIX + race.key
    assert "signal-race" in sig.address


@pytest.mark.parametrize(
    ("frames", "anomalies", "why"),
    [
        ((_frame(),), ("pc_zero",), "no bad return: the pc is bad for another reason"),
        ((_frame(),), ("sp_outside_stack",), "no bad return"),
        ((_frame(offset=+200),), ("pc_zero", "returned_to_bad_address"), "live: handler running"),
        ((_frame(sp=SP + 8),), ("returned_to_bad_address",), "interrupted above the crash's sp"),
        ((_frame(sp=SP - SP_SLACK - 8),), ("returned_to_bad_address",), "interrupted far below"),
        ((), ("pc_zero", "returned_to_bad_address"), "no signal frame at all"),
    ],
)
def test_does_not_fire(
    frames: tuple[SignalFrame, ...], anomalies: tuple[str, ...], why: str
) -> None:
    crash = _crash(*frames, anomalies=anomalies)
    assert signal_race(crash) is None, why
    assert not compute_signatures(crash).symbolic.startswith(RACE_PREFIX), why


def test_the_nearest_dead_frame_names_the_race() -> None:
    older = _frame(offset=-6000, function="profiler_tick", sp=SP - 64, pc_offset=0x10)
    race = signal_race(_crash(older, _frame(offset=-3000)))
    assert race is not None and race.function == "_Ux86_64_setcontext"


def test_an_unnamed_function_is_keyed_by_module_and_offset() -> None:
    race = signal_race(_crash(_frame(function=None, function_offset=None)))
    assert race is not None
    assert race.function == "libunwind.so.8@0x53d4"


def test_one_population_across_programs_and_callers() -> None:
    a = _crash(_frame(), exe="/srv/alpha")
    b = _crash(_frame(pc_offset=0x59, function_offset=0x59), exe="/srv/beta")
    keys = {population_key(compute_signatures(c), PopulationLevel.SYMBOLIC) for c in (a, b)}
    assert keys == {RACE_PREFIX + "_Ux86_64_setcontext (libunwind.so.8)"}
    # The address level stays per build and per instruction.
    addr = {population_key(compute_signatures(c), PopulationLevel.ADDRESS) for c in (a, b)}
    assert len(addr) == 2


def test_evidence_counts_offsets_and_signals() -> None:
    one = race_evidence([_crash(_frame()), _crash(_frame())])
    assert any("one instruction wide" in line for line in one)
    assert any("unknown ×2" in line and "SA_SIGINFO" in line for line in one)
    many = race_evidence(
        [
            _crash(_frame(signal=12)),
            _crash(_frame(pc_offset=0x59, function_offset=0x59, signal=12)),
            _crash(dataclasses.replace(_frame(), signal=27)),
        ]
    )
    text = " ".join(many)
    assert "3 of 3 crashes" in text
    assert "2 distinct addresses" in text
    assert "_Ux86_64_setcontext+0x52 ×2" in text and "_Ux86_64_setcontext+0x59 ×1" in text
    assert "SIGUSR2 ×2" in text and "SIGPROF ×1" in text
    assert "unknown" not in text
    assert race_evidence([_crash(_frame(), anomalies=("pc_zero",))]) == ()
