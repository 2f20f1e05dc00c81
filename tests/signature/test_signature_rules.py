"""Signatures of crash records: grouping that survives ASLR, failed unwinds, and failing rules.

The records here are built by hand in the shape the coredump layer produces; the real-crash
tests (``test_signature_real_crashes.py``) take them from real cores.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from corecensus.model import (
    ANOMALY_NAMES,
    Anomaly,
    CrashRecord,
    Frame,
    MappedFile,
    ParseStatus,
    Problem,
    ProblemKind,
    StackWord,
)
from corecensus.signature import (
    IRRELEVANT_FRAMES,
    PREFIX_FRAMES,
    SIGNATURE_VERSION,
    SYSTEM_MODULES,
    PopulationLevel,
    SignatureGenerator,
    SignatureResult,
    SignatureRule,
    Signatures,
    anomaly_class,
    anomaly_mask,
    compute_signatures,
    default_pipeline,
    population_key,
)

EXE_ID = "5f1c2a9e0d4b7c3a8e6f1b2d3c4a5e6f7a8b9c0d"
LIBC_ID = "a1b2c3d4e5f60718293a4b5c6d7e8f9011223344"


def _modules(exe_base: int, libc_base: int, exe_id: str = EXE_ID) -> tuple[MappedFile, ...]:
    return (
        MappedFile("/usr/bin/svc", exe_base, exe_base + 0x10000, 0x1000, exe_id, True),
        MappedFile(
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            libc_base,
            libc_base + 0x100000,
            0x28000,
            LIBC_ID,
            True,
        ),
    )


def abort_crash(
    exe_base: int = 0x5555_5555_4000, libc_base: int = 0x7F00_0000_0000, **kw: Any
) -> CrashRecord:
    """std::__throw_length_error from svc::Handler::run, through abort() (mangled names, as an
    ELF symbol table gives them)."""
    libc = [
        (0x1234, "__pthread_kill_implementation"),
        (0x2234, "__GI_raise"),
        (0x3234, "__GI_abort"),
    ]
    frames = [Frame(libc_base + off, name, "libc.so.6") for off, name in libc]
    frames += [
        Frame(exe_base + 0x500, "_ZSt20__throw_length_errorPKc"),
        Frame(exe_base + 0x900, "_ZN3svc7Handler3runEv"),
        Frame(exe_base + 0xA00, "main"),
    ]
    record = CrashRecord(
        core_id="abort",
        status=ParseStatus.OK,
        exe="/usr/bin/svc",
        signal=6,
        modules=_modules(exe_base, libc_base),
        frames=tuple(frames),
        registers={"rsp": 0x7FFD_0000_0000},
    )
    return dataclasses.replace(record, **kw)


def null_call_crash(
    exe_base: int, sp: int, caller_offset: int = 0x777, *, function: str | None = None
) -> CrashRecord:
    """A call through a NULL pointer: pc 0, no unwound frames, a stack window with the return
    address into the caller (live, at sp) and stale code addresses below sp."""
    return CrashRecord(
        core_id=f"null-{exe_base:x}-{sp:x}",
        status=ParseStatus.OK,
        exe="/usr/bin/svc",
        signal=11,
        modules=_modules(exe_base, 0x7F00_0000_0000),
        frames=(Frame(0),),
        registers={"rip": 0, "rsp": sp},
        anomalies=(Anomaly("pc_zero", "pc is 0"),),
        stack_window=(
            StackWord(-16, exe_base + 0x300, None, None, None, True),
            StackWord(0, exe_base + caller_offset, function, None, None, True),
            StackWord(24, exe_base + 0x888, None, None, None, True),
        ),
    )


def test_abort_signature_skips_abort_machinery_and_demangles() -> None:
    sig = compute_signatures(abort_crash())
    assert sig.program == "svc"
    assert sig.signal == "SIGABRT"
    assert sig.symbolic == "std::__throw_length_error | svc::Handler::run"
    assert sig.anomaly_class == "none"
    assert not sig.unwind_failed
    assert sig.version == SIGNATURE_VERSION
    # No symbols needed: libc frames are left out, the program's own are build id + offset.
    assert sig.address == (
        "svc SIGABRT 5f1c2a9e0d4b7c3a+0x1500 | 5f1c2a9e0d4b7c3a+0x1900 | 5f1c2a9e0d4b7c3a+0x1a00"
    )
    assert sig.notes == ()


def test_signatures_do_not_depend_on_load_addresses() -> None:
    a = compute_signatures(abort_crash(0x5555_5555_4000, 0x7F00_0000_0000))
    b = compute_signatures(abort_crash(0x5600_1234_0000, 0x7F88_4444_0000))
    assert a == b


def test_a_new_build_changes_the_address_signature_only() -> None:
    old = compute_signatures(abort_crash())
    record = abort_crash()
    rebuilt = dataclasses.replace(
        record, modules=_modules(0x5555_5555_4000, 0x7F00_0000_0000, exe_id="ff" * 20)
    )
    new = compute_signatures(rebuilt)
    assert new.symbolic == old.symbolic
    assert new.address != old.address
    assert population_key(new) == population_key(old)
    assert population_key(new, PopulationLevel.ADDRESS) != population_key(
        old, PopulationLevel.ADDRESS
    )


def test_failed_unwinds_group_by_code_addresses_from_the_stack_window() -> None:
    one = compute_signatures(null_call_crash(0x5555_5555_4000, 0x7FFD_1000_0000))
    two = compute_signatures(null_call_crash(0x5611_0000_0000, 0x7FFE_2222_0008))
    other = compute_signatures(
        null_call_crash(0x5555_5555_4000, 0x7FFD_1000_0000, caller_offset=0x999)
    )
    assert one.unwind_failed
    assert one.anomaly_class == "pc_zero"
    # Live words nearest sp first, then dead words below sp; only the nearest two sign it.
    assert one.address == "svc SIGSEGV @0x0 | 5f1c2a9e0d4b7c3a+0x1777 | 5f1c2a9e0d4b7c3a+0x1888"
    assert one.symbolic == "@0x0 | svc@0x1777"
    assert any("stack window" in note for note in one.notes)
    for level in PopulationLevel:
        assert population_key(one, level) == population_key(two, level)
    assert population_key(one) != population_key(other)
    assert population_key(one, PopulationLevel.ANOMALY) == population_key(
        other, PopulationLevel.ANOMALY
    )


def test_symbolized_stack_window_words_name_the_caller() -> None:
    sig = compute_signatures(
        null_call_crash(0x5555_5555_4000, 0x7FFD_0000_0000, function="_ZN3svc8dispatchEi")
    )
    assert sig.symbolic == "@0x0 | svc::dispatch"


def test_pc_in_the_stack_is_marked() -> None:
    sp = 0x7FFD_0000_1000
    record = dataclasses.replace(
        null_call_crash(0x5555_5555_4000, sp), frames=(Frame(sp - 0x40),), registers={"rsp": sp}
    )
    sig = compute_signatures(record)
    assert sig.address.startswith("svc SIGSEGV @stack | ")
    assert sig.symbolic == "@stack | svc@0x1777"


def test_recovered_frames_are_used_before_the_stack_window() -> None:
    base = 0x5555_5555_4000
    record = dataclasses.replace(
        null_call_crash(base, 0x7FFD_0000_0000),
        frames=(Frame(0), Frame(base + 0x4444, "Worker::step", recovered=True)),
    )
    sig = compute_signatures(record)
    assert sig.symbolic == "@0x0 | Worker::step"
    assert sig.address == "svc SIGSEGV @0x0 | 5f1c2a9e0d4b7c3a+0x5444"
    assert any("1 recovered frames" in note for note in sig.notes)


def test_unwound_caller_after_a_null_pc_is_used() -> None:
    base = 0x5555_5555_4000
    record = dataclasses.replace(
        null_call_crash(base, 0x7FFD_0000_0000),
        frames=(Frame(0), Frame(base + 0x4444, "dispatch"), Frame(base + 0x5000, "main")),
    )
    sig = compute_signatures(record)
    assert sig.symbolic == "@0x0 | dispatch"


def test_hardware_anomalies_group_across_programs_and_code() -> None:
    records = [
        dataclasses.replace(
            abort_crash(),
            exe=f"/usr/bin/{program}",
            signal=11,
            frames=(Frame(0x5555_5555_4000 + 0x100 * i, function),),
            anomalies=(Anomaly("sp_off_by_8", "rsp is 8 off"),),
        )
        for i, (program, function) in enumerate([("svc", "a"), ("db", "b"), ("cache", "c")])
    ]
    sigs = [compute_signatures(r) for r in records]
    assert {population_key(s, PopulationLevel.ANOMALY) for s in sigs} == {"sp_off_by_8"}
    assert len({population_key(s) for s in sigs}) == 3


def test_prefix_frames_are_kept_until_a_relevant_one() -> None:
    record = dataclasses.replace(
        abort_crash(),
        signal=11,
        frames=(
            Frame(0x7F00_0000_5000, "_int_free", "libc.so.6"),
            Frame(0x7F00_0000_6000, "free", "libc.so.6"),
            Frame(0x5555_5555_4800, "Session::~Session()"),
            Frame(0x5555_5555_4900, "main"),
        ),
    )
    assert compute_signatures(record).symbolic == "_int_free | free | Session::~Session"


def test_only_irrelevant_frames_falls_back_to_the_top_one_with_a_note() -> None:
    record = dataclasses.replace(
        abort_crash(),
        frames=(Frame(0x7F00_0000_1234, "abort"), Frame(0x7F00_0000_2000, "__libc_start_main")),
    )
    sig = compute_signatures(record)
    assert sig.symbolic == "abort"
    assert any("every frame is irrelevant" in n for n in sig.notes)


def test_unparsed_core_gets_an_explained_empty_signature() -> None:
    sig = compute_signatures(
        CrashRecord(
            "x",
            ParseStatus.UNPARSED,
            problems=(Problem(ProblemKind.CORRUPT, "truncated"),),
            metadata={"COREDUMP_EXE": "/opt/app/bin/api", "COREDUMP_SIGNAL": "7"},
        )
    )
    assert sig.symbolic == "EMPTY: core not parsed"
    assert sig.address == "api SIGBUS <no frames>"
    assert sig.program == "api"
    assert not sig.unwind_failed


class ExplodingRule(SignatureRule):
    def action(self, crash: CrashRecord, result: SignatureResult) -> None:
        raise RuntimeError("boom")


def test_a_failing_rule_adds_a_note_and_the_others_still_run() -> None:
    pipeline = default_pipeline()
    pipeline.insert(2, ExplodingRule())
    sig = SignatureGenerator(pipeline).generate(abort_crash())
    assert sig == dataclasses.replace(
        compute_signatures(abort_crash()), notes=("ExplodingRule: rule failed: RuntimeError: boom",)
    )


def test_long_signatures_are_truncated_with_a_note() -> None:
    name = "ns::" + "VeryLongName" * 40
    record = dataclasses.replace(abort_crash(), frames=(Frame(0x5555_5555_4500, name),))
    sig = compute_signatures(record)
    assert len(sig.symbolic) == 255
    assert sig.symbolic.endswith("...")
    assert any("symbolic signature truncated" in n for n in sig.notes)


def test_site_frame_lists_replace_the_packaged_ones(tmp_path: Path) -> None:
    for name in (PREFIX_FRAMES, SYSTEM_MODULES):
        (tmp_path / f"{name}.txt").write_text("# none\n")
    (tmp_path / f"{IRRELEVANT_FRAMES}.txt").write_text(
        "svc::Handler::run$\nraise\nabort\n__pthread\n"
    )
    sig = SignatureGenerator(default_pipeline(tmp_path)).generate(abort_crash())
    # No prefix list: the throw helper stops the walk; the site marked run() irrelevant.
    assert sig.symbolic == "std::__throw_length_error"
    record = dataclasses.replace(abort_crash(), frames=abort_crash().frames[4:])
    assert SignatureGenerator(default_pipeline(tmp_path)).generate(record).symbolic == "main"


def test_anomaly_class_and_mask() -> None:
    assert anomaly_class([]) == "none"
    assert anomaly_class(["sp_off_by_8", "pc_zero", "sp_off_by_8"]) == "pc_zero+sp_off_by_8"
    assert anomaly_mask(["pc_zero"]) == 1
    assert anomaly_mask(["sigbus_memory_error", "not_a_known_name"]) == 1 << ANOMALY_NAMES.index(
        "sigbus_memory_error"
    )
    assert anomaly_mask(ANOMALY_NAMES) == (1 << len(ANOMALY_NAMES)) - 1


def test_signatures_json_round_trip() -> None:
    sig = compute_signatures(null_call_crash(0x5555_5555_4000, 0x7FFD_0000_0000))
    assert Signatures.from_json(sig.to_json()) == sig


@pytest.mark.parametrize(
    ("level", "key"),
    [
        (PopulationLevel.ANOMALY, "none"),
        (
            PopulationLevel.SYMBOLIC,
            "svc SIGABRT [none] std::__throw_length_error | svc::Handler::run",
        ),
        (
            PopulationLevel.ADDRESS,
            "[none] svc SIGABRT 5f1c2a9e0d4b7c3a+0x1500 | 5f1c2a9e0d4b7c3a+0x1900 | "
            "5f1c2a9e0d4b7c3a+0x1a00",
        ),
    ],
)
def test_population_keys(level: PopulationLevel, key: str) -> None:
    # If this changes on purpose, bump SIGNATURE_VERSION so stored signatures get reprocessed.
    assert SIGNATURE_VERSION == 2
    assert population_key(compute_signatures(abort_crash()), level) == key
