"""The crash fixtures are what they claim: checked with gdb, elfutils, binutils and struct reads,
never with corecensus's own core parser (which these fixtures exist to test)."""

from __future__ import annotations

import json
import lzma
import resource
import signal
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import lz4.frame
import pytest
import zstandard

from crashers import (
    CRASHERS,
    EM_X86_64,
    ET_CORE,
    CrashResult,
    build_crasher,
    build_id,
    gdb_facts,
    is_core_file,
    kernel_core_support,
    readelf_notes,
    run_crasher,
)

SAMPLES_DIR = Path(__file__).resolve().parent / "data" / "samples" / "x86_64"

# si_code values (include/uapi/asm-generic/siginfo.h).
SEGV_MAPERR, SEGV_ACCERR = 1, 2
BUS_ADRERR, BUS_MCEERR_AR = 2, 4
FPE_INTDIV = 1
ILL_ILLOPN = 2
SI_KERNEL = 0x80
SI_TKILL = -6
# offsetof(ucontext_t, uc_mcontext.gregs[REG_RIP]) on x86-64: uc_flags 8 + uc_link 8 +
# uc_stack 24, then gregs[] with REG_RIP == 16.
UCONTEXT_RIP_OFFSET = 40 + 16 * 8
MASK64 = (1 << 64) - 1
SYSCALL_INSN = 0x050F  # `syscall` (0f 05) read as a little-endian 16-bit word


def elf_header(path: Path) -> tuple[int, int, int, int]:
    """(EI_CLASS, EI_DATA, e_type, e_machine) read with struct."""
    with path.open("rb") as f:
        head = f.read(20)
    ei_class, ei_data = head[4], head[5]
    e_type, e_machine = struct.unpack_from("<HH", head, 16)
    return ei_class, ei_data, e_type, e_machine


def facts_for(result: CrashResult, *keys: str) -> dict[str, Any]:
    assert result.core is not None
    return gdb_facts(result.exe, result.core, [result.info_int(k) for k in keys])


# --- no kernel cores needed ---


@pytest.mark.parametrize(
    ("pattern", "ok", "why"),
    [
        ("core\n", True, "plain file name"),
        ("core.%p\n", True, "plain file name"),
        (
            "|/usr/lib/systemd/systemd-coredump %P %u %g %s %t %c %h\n",
            False,
            "pipes cores to a program",
        ),
        ("|/usr/share/apport/apport -p%p -s%s -c%c\n", False, "pipes cores to a program"),
        ("/var/crash/core.%e.%p\n", False, "fixed place"),
        ("\n", False, "empty"),
    ],
)
def test_kernel_core_support_reads_core_pattern(
    tmp_path: Path, pattern: str, ok: bool, why: str
) -> None:
    (tmp_path / "sys" / "kernel").mkdir(parents=True)
    (tmp_path / "sys" / "kernel" / "core_pattern").write_text(pattern)
    if resource.getrlimit(resource.RLIMIT_CORE)[1] == 0 and ok:
        ok, why = False, "hard RLIMIT_CORE is 0"
    supported, reason = kernel_core_support(proc_root=tmp_path)
    assert supported is ok
    assert why in reason


def test_kernel_core_support_without_proc(tmp_path: Path) -> None:
    supported, reason = kernel_core_support(proc_root=tmp_path)
    assert not supported
    assert "cannot read" in reason


@pytest.mark.parametrize(("require", "outcome"), [("", "skipped"), ("1", "errors")])
def test_kernel_cores_tests_skip_or_fail_when_cores_go_to_a_pipe(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, require: str, outcome: str
) -> None:
    """With core_pattern piping to systemd-coredump, kernel_cores tests skip - or, when
    CORECENSUS_REQUIRE_KERNEL_CORES=1 (CI), fail - and unmarked tests still run."""
    fake_proc = pytester.path / "fakeproc"
    (fake_proc / "sys" / "kernel").mkdir(parents=True)
    (fake_proc / "sys" / "kernel" / "core_pattern").write_text(
        "|/usr/lib/systemd/systemd-coredump %P %u %g %s %t %c %h\n"
    )
    here = Path(__file__).resolve().parent
    for helper in ("conftest.py", "crashers.py"):
        (pytester.path / helper).write_text((here / helper).read_text())
    pytester.makeini("[pytest]\nmarkers =\n    kernel_cores: needs kernel cores\n    slow: slow\n")
    pytester.makepyfile(
        test_sub=f"""
        from pathlib import Path
        import crashers
        import pytest

        crashers.PROC_ROOT = Path({str(fake_proc)!r})

        @pytest.mark.kernel_cores
        def test_marked():
            pass

        def test_uses_fixture(kernel_cores):
            pass

        def test_plain():
            pass
        """
    )
    monkeypatch.setenv("CORECENSUS_REQUIRE_KERNEL_CORES", require)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(passed=1, **{outcome: 2})
    result.stdout.fnmatch_lines(["*pipes cores to a program*"])


def test_build_is_cached_and_has_symbols_and_build_id(tmp_path: Path) -> None:
    exe = build_crasher("null_deref", tmp_path)
    mtime = exe.stat().st_mtime_ns
    assert build_crasher("null_deref", tmp_path) == exe
    assert exe.stat().st_mtime_ns == mtime, "second build recompiled instead of using the cache"
    assert exe.name == "null_deref"
    assert elf_header(exe)[2:] == (3, EM_X86_64)  # ET_DYN: a PIE, as Debian's gcc builds
    bid = build_id(exe)
    assert bid is not None and len(bid) == 40  # SHA-1 build-id, gcc's --build-id default
    assert b"crash_null_deref" in exe.read_bytes()  # .symtab kept


def test_every_crasher_has_its_sources() -> None:
    crashers_dir = Path(__file__).resolve().parent / "data" / "crashers"
    for spec in CRASHERS.values():
        for src in spec.sources:
            assert (crashers_dir / src).is_file(), src


# --- real kernel cores ---


@pytest.mark.parametrize("name", sorted(CRASHERS))
def test_core_is_a_real_kernel_core(kernel_cores: Mapping[str, CrashResult], name: str) -> None:
    result = kernel_cores[name]
    assert result.core is not None
    assert result.core.name in ("core", f"core.{result.pid}")
    assert result.signal == CRASHERS[name].signal
    assert result.core_dumped, "wait status lacks WCOREDUMP"
    assert is_core_file(result.core)
    assert elf_header(result.core) == (2, 1, ET_CORE, EM_X86_64)  # ELF64, little endian
    notes = readelf_notes(result.core)
    assert notes.note_types[0] == "PRSTATUS"  # the kernel writes the crashing thread first
    assert notes.prstatus_pids[0] == result.crash_tid
    assert notes.cursig == result.signal
    assert notes.si_signo == result.signal
    assert notes.pid == result.pid == result.info_int("pid")
    assert notes.comm == name[:15]  # TASK_COMM_LEN 16 including the NUL
    # argv NULs become spaces, the last one too; cut to ELF_PRARGSZ (80) less the NUL.
    assert notes.psargs == f"{result.exe} "[:79]
    assert notes.files[0] == str(result.exe)


def test_iterating_kernel_cores_never_skips(kernel_cores: Mapping[str, CrashResult]) -> None:
    names = {name for name, result in kernel_cores.items() if result.core is not None}
    assert names == {name for name, spec in CRASHERS.items() if not spec.optional}
    assert "mce_sigbus" in kernel_cores  # reachable by name, not run by `in`


def test_null_deref(kernel_cores: Mapping[str, CrashResult]) -> None:
    facts = facts_for(kernel_cores["null_deref"])
    assert (facts["si_signo"], facts["si_code"], facts["si_addr"]) == (11, SEGV_MAPERR, 0)
    assert facts["threads"][0]["frames"][:2] == ["crash_null_deref", "main"]


def test_abort(kernel_cores: Mapping[str, CrashResult]) -> None:
    facts = facts_for(kernel_cores["abort"])
    assert (facts["si_signo"], facts["si_code"]) == (signal.SIGABRT, SI_TKILL)
    assert "crash_abort" in facts["threads"][0]["frames"]


@pytest.mark.parametrize(
    ("name", "signo", "code"),
    [("sigfpe", signal.SIGFPE, FPE_INTDIV), ("sigill", signal.SIGILL, ILL_ILLOPN)],
)
def test_trap_reports_the_faulting_instruction(
    kernel_cores: Mapping[str, CrashResult], name: str, signo: int, code: int
) -> None:
    facts = facts_for(kernel_cores[name])
    assert (facts["si_signo"], facts["si_code"]) == (signo, code)
    assert facts["si_addr"] == facts["rip"]
    assert facts["threads"][0]["frames"][0] == f"crash_{name}"


def test_sigbus(kernel_cores: Mapping[str, CrashResult]) -> None:
    result = kernel_cores["sigbus"]
    facts = facts_for(result)
    assert (facts["si_signo"], facts["si_code"]) == (signal.SIGBUS, BUS_ADRERR)
    assert facts["si_addr"] == result.info_int("fault_addr")


def test_stack_overflow(kernel_cores: Mapping[str, CrashResult]) -> None:
    result = kernel_cores["stack_overflow"]
    assert result.core is not None
    facts = facts_for(result)
    assert facts["si_code"] in (SEGV_MAPERR, SEGV_ACCERR)
    assert abs(facts["si_addr"] - facts["rsp"]) < 4096  # faulted at the top of the stack
    assert set(facts["threads"][0]["frames"]) == {"crash_stack_overflow"}
    # The whole 8 MiB stack is in the core, and no more: RLIMIT_STACK was pinned.
    size = result.core.stat().st_size
    assert 7 << 20 < size < 16 << 20


def test_stack_overflow_call(kernel_cores: Mapping[str, CrashResult]) -> None:
    facts = facts_for(kernel_cores["stack_overflow_call"])
    assert facts["si_code"] in (SEGV_MAPERR, SEGV_ACCERR)
    assert facts["si_addr"] == facts["rsp"] - 8  # the `call` faulted pushing below the stack
    assert set(facts["threads"][0]["frames"]) == {"crash_call_recurse"}


def test_thread_crash(kernel_cores: Mapping[str, CrashResult]) -> None:
    result = kernel_cores["thread_crash"]
    facts = facts_for(result)
    assert result.crash_tid not in (result.pid, result.info_int("blocked_tid"))
    assert facts["crashed_lwp"] == result.crash_tid
    assert facts["si_addr"] == 0
    lwps = {t["lwp"]: t for t in facts["threads"]}
    assert set(lwps) == {result.pid, result.info_int("blocked_tid"), result.crash_tid}
    assert lwps[result.crash_tid]["frames"][:2] == ["crash_in_thread", "crashing_worker"]
    assert "blocked_worker" in lwps[result.info_int("blocked_tid")]["frames"]
    assert "main" in lwps[result.pid]["frames"]


def test_jump_nonexec(kernel_cores: Mapping[str, CrashResult]) -> None:
    result = kernel_cores["jump_nonexec"]
    facts = facts_for(result)
    page = result.info_int("fault_addr")
    assert (facts["si_code"], facts["si_addr"], facts["rip"]) == (SEGV_ACCERR, page, page)
    assert facts["rsp_word_after_call"]
    assert facts["rsp_word_symbol"].startswith("crash_jump_nonexec + ")


def test_call_null_fp(kernel_cores: Mapping[str, CrashResult]) -> None:
    facts = facts_for(kernel_cores["call_null_fp"])
    assert (facts["rip"], facts["si_addr"], facts["si_code"]) == (0, 0, SEGV_MAPERR)
    assert facts["rsp_word_after_call"], "[rsp] must be a return address right after a call"
    assert facts["rsp_word_symbol"].startswith("crash_call_null_fp + ")


def test_return_to_null(kernel_cores: Mapping[str, CrashResult]) -> None:
    result = kernel_cores["return_to_null"]
    facts = facts_for(result)
    assert (facts["rip"], facts["si_addr"], facts["si_code"]) == (0, 0, SEGV_MAPERR)
    assert facts["stack_words"]["-8"] == 0 == facts["rip"]
    # ret popped the overwritten slot, leaving rsp where a normal return would.
    assert facts["rsp"] == result.info_int("return_slot") + 8
    assert facts["rsp_word_after_call"] is False


def test_ret_sp_off_by_8(kernel_cores: Mapping[str, CrashResult]) -> None:
    result = kernel_cores["ret_sp_off_by_8"]
    facts = facts_for(result)
    words = facts["stack_words"]
    assert facts["rsp"] == result.info_int("expected_rsp") - 8 == result.info_int("return_slot")
    assert facts["rip"] == facts["si_addr"] == result.info_int("saved_rbp") == words["-8"]
    assert facts["si_code"] == SEGV_ACCERR  # the popped saved %rbp points at the stack: no exec
    assert words["0"] == result.info_int("return_addr")
    assert facts["rsp_word_after_call"]
    assert facts["rsp_word_symbol"].startswith("main + ")
    assert words["-16"] == 0x0FF80FF80FF80FF8


def test_bit_flip(kernel_cores: Mapping[str, CrashResult]) -> None:
    result = kernel_cores["bit_flip"]
    facts = facts_for(result, "valid_addr", "fault_addr")
    valid, fault = result.info_int("valid_addr"), result.info_int("fault_addr")
    assert fault == valid ^ (1 << 33)
    assert (facts["si_code"], facts["si_addr"]) == (SEGV_MAPERR, fault)
    assert facts["words"][str(valid)] == 7  # the unflipped pointer is mapped in the core
    assert facts["words"][str(fault)] is None


def test_noncanonical(kernel_cores: Mapping[str, CrashResult]) -> None:
    result = kernel_cores["noncanonical"]
    facts = facts_for(result, "valid_addr")
    valid = result.info_int("valid_addr")
    assert result.info_int("noncanonical_addr") == valid ^ (1 << 63)
    # #GP carries no address: the kernel reports SI_KERNEL with si_addr 0, not the bad pointer.
    assert (facts["si_signo"], facts["si_code"], facts["si_addr"]) == (11, SI_KERNEL, 0)
    assert facts["words"][str(valid)] == 7
    assert facts["threads"][0]["frames"][0] == "crash_noncanonical"


def _check_signal_frame(
    result: CrashResult, interrupted_fn: str, extra_addrs: Iterable[int] = ()
) -> dict[str, Any]:
    """The rt_sigframe the handler ran on is in the core: its return-address word holds
    __restore_rt and its ucontext holds the interrupted pc, inside `interrupted_fn`.
    `extra_addrs` are more addresses whose words gdb reads (facts["words"])."""
    slot = result.info_int("restorer_slot")
    uc_rip_addr = result.info_int("ucontext") + UCONTEXT_RIP_OFFSET
    assert result.core is not None
    facts = gdb_facts(result.exe, result.core, [slot, uc_rip_addr, *extra_addrs])
    restorer = facts["words"][str(slot)]
    assert restorer == result.info_int("restorer")
    assert facts["symbols"][str(restorer)] == "__restore_rt"
    interrupted_pc = facts["words"][str(uc_rip_addr)]
    assert interrupted_pc == result.info_int("interrupted_pc")
    assert facts["symbols"][str(interrupted_pc)].startswith(f"{interrupted_fn} + ")
    return facts


def test_signal_race_has_live_signal_frame(kernel_cores: Mapping[str, CrashResult]) -> None:
    result = kernel_cores["signal_race"]
    facts = _check_signal_frame(result, "spin_until_signal")
    assert facts["threads"][0]["frames"] == [
        "crash_in_handler",
        "on_sigusr1",
        "<signal handler called>",
        "spin_until_signal",
        "main",
    ]
    assert facts["rsp"] < result.info_int("restorer_slot")  # live: above the crashing frame


def test_dead_signal_frame_lies_below_rsp(kernel_cores: Mapping[str, CrashResult]) -> None:
    result = kernel_cores["dead_signal_frame"]
    facts = _check_signal_frame(result, "wait_for_signal")
    assert facts["threads"][0]["frames"] == ["crash_after_signal", "main"]
    assert result.info_int("restorer_slot") < facts["rsp"]  # dead: below the stack pointer


@pytest.mark.kernel_cores
@pytest.mark.parametrize(
    ("name", "waiting_fn"),
    [("signal_race", "spin_until_signal"), ("dead_signal_frame", "wait_for_signal")],
)
def test_timer_signal_pending_before_the_loop_still_interrupts_the_loop(
    tmp_path: Path, name: str, waiting_fn: str
) -> None:
    """A loaded machine may deschedule the crasher for longer than its 2 ms timer right after
    arming it.  The timer's signal then fires before the waiting loop starts, and used to
    interrupt timer_settime() or main() instead (a by-chance failure of the tests above).  The
    crashers keep the signal blocked until the loop unblocks it; CRASHER_SIGNAL_EARLY=1 makes
    the early expiry certain, and the signal must land on the return from the loop's own
    unblocking `syscall` instruction."""
    result = run_crasher(name, tmp_path / "run", env={"CRASHER_SIGNAL_EARLY": "1"})
    assert result.info["early"] == "1"
    pc = result.info_int("interrupted_pc")
    facts = _check_signal_frame(result, waiting_fn, [pc - 2])
    assert facts["words"][str(pc - 2)] & 0xFFFF == SYSCALL_INSN


def test_mce_sigbus(kernel_cores: Mapping[str, CrashResult]) -> None:
    result = kernel_cores["mce_sigbus"]  # skips with the kernel's reason when unsupported
    facts = facts_for(result)
    assert (facts["si_signo"], facts["si_code"]) == (signal.SIGBUS, BUS_MCEERR_AR)
    assert facts["si_addr"] == result.info_int("fault_addr")


# --- committed samples ---


def sample_dirs() -> list[Path]:
    return sorted(p for p in SAMPLES_DIR.iterdir() if p.is_dir())


def test_samples_cover_the_chosen_crashes() -> None:
    names = {p.name for p in sample_dirs()}
    assert names >= {
        "null_deref",
        "thread_crash",
        "return_to_null",
        "ret_sp_off_by_8",
        "signal_race",
        "sigbus",
        "abort",
        "gcore_null_deref",
    }


@pytest.mark.parametrize("sample", sample_dirs(), ids=lambda p: p.name)
def test_sample_matches_its_expected_json(sample: Path, tmp_path: Path) -> None:
    expected = json.loads((sample / "expected.json").read_text())
    core = tmp_path / "core"
    core.write_bytes(zstandard.ZstdDecompressor().decompress((sample / "core.zst").read_bytes()))
    assert is_core_file(core)
    assert core.stat().st_size == expected["core_size"]
    exe = sample / expected["exe_file"]
    assert build_id(exe) == expected["exe_build_id"]
    notes = readelf_notes(core)
    assert notes.comm == expected["comm"]
    assert notes.psargs == expected["psargs"]
    assert notes.pid == expected["pid"]
    assert notes.prstatus_pids[0] == expected["crashed_tid"]
    assert len(notes.prstatus_pids) == expected["threads"]
    assert notes.files[0] == expected["exe_path"]
    facts = gdb_facts(exe, core)
    assert facts["si_signo"] == expected["signal"]
    assert facts["si_code"] == expected["si_code"]
    assert facts["rip"] == int(expected["rip"], 16)
    assert facts["rsp"] == int(expected["rsp"], 16)
    if expected["fault_addr"] is not None:
        assert facts["si_addr"] == int(expected["fault_addr"], 16)
    for off, word in expected["stack_words"].items():
        got = facts["stack_words"][off]
        assert (None if got is None else f"{got:#x}") == word, off
    assert facts["threads"][0]["frames"][0] == expected["frames"][0]


def test_compressed_variants_hold_the_same_core() -> None:
    sample = SAMPLES_DIR / "null_deref"
    plain = zstandard.ZstdDecompressor().decompress((sample / "core.zst").read_bytes())
    assert lz4.frame.decompress((sample / "core.lz4").read_bytes()) == plain
    assert lzma.decompress((sample / "core.xz").read_bytes()) == plain


def test_samples_stay_small() -> None:
    total = sum(p.stat().st_size for p in SAMPLES_DIR.rglob("*") if p.is_file())
    assert total < 2 << 20, f"committed samples grew to {total} bytes"
