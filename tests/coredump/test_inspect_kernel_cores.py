"""`inspect_core` on real cores the kernel wrote for programs that crash on purpose.

Expected values come from the crashers themselves (they note addresses and thread ids before
crashing, see tests/data/crashers) and from independent tools (readelf), never from the parser.
"""

from __future__ import annotations

import lzma
import shutil
import subprocess
from pathlib import Path

import lz4.frame
import pytest
import zstandard

from corecensus.coredump import inspect_core
from corecensus.model import CrashRecord, ParseStatus
from crashers import CrashResult, run_crasher

pytestmark = pytest.mark.kernel_cores


def _names(rec: CrashRecord) -> list[str | None]:
    return [f.function for f in rec.frames]


def _readelf_build_id(path: Path) -> str:
    out = subprocess.run(["readelf", "-n", str(path)], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        if "Build ID:" in line:
            return line.split("Build ID:")[1].strip()
    raise AssertionError(f"no build id in {path}")


@pytest.fixture(scope="module")
def records(kernel_cores: dict[str, CrashResult]) -> dict[str, CrashRecord]:
    cache: dict[str, CrashRecord] = {}

    class Lazy(dict[str, CrashRecord]):
        def __missing__(self, name: str) -> CrashRecord:
            r = kernel_cores[name]
            assert r.core is not None
            cache[name] = inspect_core(r.core)
            return cache[name]

    return Lazy()


def test_null_deref_record(
    kernel_cores: dict[str, CrashResult], records: dict[str, CrashRecord]
) -> None:
    r = kernel_cores["null_deref"]
    rec = records["null_deref"]
    assert rec.status is ParseStatus.OK, rec.errors
    assert rec.arch == "x86_64"
    assert rec.writer == "kernel"
    assert rec.pid == r.pid
    assert rec.crashed_tid == r.pid
    assert rec.threads == 1
    assert rec.comm == r.exe.name[:15]
    assert rec.exe is not None and Path(rec.exe).name == r.exe.name
    assert (rec.signal, rec.signal_name, rec.si_code_name) == (11, "SIGSEGV", "SEGV_MAPERR")
    assert rec.fault_address == 0
    assert rec.anomalies == ()
    assert _names(rec)[:2] == ["crash_null_deref", "main"]
    assert rec.frames[0].pc == rec.registers["rip"]
    exe_mod = next(m for m in rec.modules if Path(m.path).name == r.exe.name)
    assert exe_mod.build_id == _readelf_build_id(r.exe)
    assert rec.frames[0].build_id == exe_mod.build_id
    assert rec.frames[0].offset == rec.frames[0].pc - exe_mod.base
    assert any(Path(m.path).name.startswith("libc.so") for m in rec.modules)
    # The stack window covers at least 8 KiB each side and names what it finds.
    assert rec.stack_window, "no code addresses found around rsp"
    assert min(w.offset for w in rec.stack_window) < -1024
    assert any(w.function == "main" and w.after_call and w.offset >= 0 for w in rec.stack_window)
    assert rec.to_json()["anomalies"] == []


@pytest.mark.parametrize(
    ("name", "signal_name", "si_code", "frame"),
    [
        ("abort", "SIGABRT", "SI_TKILL", "crash_abort"),
        ("sigfpe", "SIGFPE", "FPE_INTDIV", "crash_sigfpe"),
        ("sigill", "SIGILL", None, "crash_sigill"),
        ("sigbus", "SIGBUS", "BUS_ADRERR", "crash_sigbus"),
    ],
)
def test_signals(
    records: dict[str, CrashRecord], name: str, signal_name: str, si_code: str | None, frame: str
) -> None:
    rec = records[name]
    assert rec.status is ParseStatus.OK, rec.errors
    assert rec.signal_name == signal_name
    if si_code is not None:
        assert rec.si_code_name == si_code
    assert frame in _names(rec)
    assert "sigbus_memory_error" not in rec.anomaly_names


def test_sigbus_fault_address(
    kernel_cores: dict[str, CrashResult], records: dict[str, CrashRecord]
) -> None:
    assert records["sigbus"].fault_address == kernel_cores["sigbus"].info_int("fault_addr")


@pytest.mark.parametrize(
    ("name", "frame"),
    [("stack_overflow", "crash_stack_overflow"), ("stack_overflow_call", "crash_call_recurse")],
)
def test_stack_overflow_is_not_a_hardware_anomaly(
    records: dict[str, CrashRecord], name: str, frame: str
) -> None:
    rec = records[name]
    assert rec.signal_name == "SIGSEGV"
    assert rec.anomalies == (), rec.anomalies
    assert any("stack overflow" in e for e in rec.errors)
    assert _names(rec)[0] == frame


def test_thread_crash(
    kernel_cores: dict[str, CrashResult], records: dict[str, CrashRecord]
) -> None:
    r = kernel_cores["thread_crash"]
    rec = records["thread_crash"]
    assert rec.threads == 3
    assert rec.crashed_tid == r.crash_tid != r.pid
    assert rec.pid == r.pid
    assert _names(rec)[0] == "crash_in_thread"


def test_jump_into_non_executable_memory(records: dict[str, CrashRecord]) -> None:
    rec = records["jump_nonexec"]
    assert "pc_not_executable" in rec.anomaly_names
    assert "returned_to_bad_address" not in rec.anomaly_names
    assert any("call through a bad pointer" in e for e in rec.errors)
    assert rec.frames[1].function == "crash_jump_nonexec" and rec.frames[1].recovered


def test_call_through_null_is_not_a_return(records: dict[str, CrashRecord]) -> None:
    rec = records["call_null_fp"]
    assert rec.anomaly_names == ("pc_zero",)
    assert rec.frames[0].pc == 0
    assert rec.frames[1].function == "crash_call_null_fp"


def test_return_to_null(records: dict[str, CrashRecord]) -> None:
    rec = records["return_to_null"]
    assert set(rec.anomaly_names) == {"pc_zero", "returned_to_bad_address"}
    assert "sp_off_by_8" not in rec.anomaly_names


def test_ret_with_sp_off_by_8(
    kernel_cores: dict[str, CrashResult], records: dict[str, CrashRecord]
) -> None:
    r = kernel_cores["ret_sp_off_by_8"]
    rec = records["ret_sp_off_by_8"]
    assert "sp_off_by_8" in rec.anomaly_names
    assert "returned_to_bad_address" in rec.anomaly_names
    a = next(a for a in rec.anomalies if a.name == "sp_off_by_8")
    assert a.data["direction"] == "low"
    assert a.data["return_address"] == r.info_int("return_addr")
    # rsp is the slot holding the real return address, 8 below where a correct ret leaves it.
    assert rec.registers["rsp"] == r.info_int("return_slot") == r.info_int("expected_rsp") - 8
    assert a.confidence >= 0.9
    # The caller is recovered from the stack although the unwinder cannot start at this pc.
    assert "main" in [f.function for f in rec.frames if f.recovered]


def test_bit_flip_candidate(
    kernel_cores: dict[str, CrashResult], records: dict[str, CrashRecord]
) -> None:
    r = kernel_cores["bit_flip"]
    rec = records["bit_flip"]
    a = next(a for a in rec.anomalies if a.name == "bit_flip_candidate")
    assert a.data["bit"] == int(r.info["flipped_bit"])
    assert a.data["mapped_address"] == r.info_int("valid_addr")
    assert a.confidence > 0.5


def test_noncanonical_address_is_recovered(
    kernel_cores: dict[str, CrashResult], records: dict[str, CrashRecord]
) -> None:
    r = kernel_cores["noncanonical"]
    rec = records["noncanonical"]
    assert rec.fault_address == 0  # what the kernel reports for a general-protection fault
    assert rec.effective_address == r.info_int("noncanonical_addr")
    a = next(a for a in rec.anomalies if a.name == "bit_flip_candidate")
    assert a.data["bit"] == 63
    assert a.data["mapped_address"] == r.info_int("valid_addr")


def test_live_signal_frame(
    kernel_cores: dict[str, CrashResult], records: dict[str, CrashRecord]
) -> None:
    r = kernel_cores["signal_race"]
    rec = records["signal_race"]
    assert len(rec.signal_frames) == 1
    s = rec.signal_frames[0]
    assert s.offset > 0  # above rsp: the handler is still running
    assert s.interrupted_pc == r.info_int("interrupted_pc")
    assert s.interrupted_sp == r.info_int("interrupted_rsp")
    assert s.function == "spin_until_signal"
    assert s.signal == 10
    assert "__restore_rt" in _names(rec)


def test_dead_signal_frame(
    kernel_cores: dict[str, CrashResult], records: dict[str, CrashRecord]
) -> None:
    r = kernel_cores["dead_signal_frame"]
    rec = records["dead_signal_frame"]
    s = next(s for s in rec.signal_frames if s.interrupted_pc == r.info_int("interrupted_pc"))
    assert s.offset < 0  # below rsp: dead stack from a handler that already returned
    assert s.function == "wait_for_signal"


@pytest.mark.parametrize(
    ("name", "waiting_fn", "live"),
    [("signal_race", "spin_until_signal", True), ("dead_signal_frame", "wait_for_signal", False)],
)
def test_signal_frame_when_the_timer_fired_before_the_loop(
    tmp_path: Path, name: str, waiting_fn: str, live: bool
) -> None:
    """The shape of a crasher descheduled right after arming its timer (CRASHER_SIGNAL_EARLY=1,
    see tests/data/crashers/crasher.h): the signal frame still names the waiting loop."""
    r = run_crasher(name, tmp_path / "run", env={"CRASHER_SIGNAL_EARLY": "1"})
    assert r.core is not None and r.info["early"] == "1"
    rec = inspect_core(r.core)
    s = next(s for s in rec.signal_frames if s.interrupted_pc == r.info_int("interrupted_pc"))
    assert s.function == waiting_fn
    assert s.interrupted_sp == r.info_int("interrupted_rsp")
    assert (s.offset > 0) is live


def test_fast_pass_matches_full_pass(
    records: dict[str, CrashRecord], kernel_cores: dict[str, CrashResult]
) -> None:
    for name in ("ret_sp_off_by_8", "return_to_null", "bit_flip", "call_null_fp"):
        core = kernel_cores[name].core
        assert core is not None
        fast = inspect_core(core, symbolize=False)
        full = records[name]
        assert fast.anomaly_names == full.anomaly_names, name
        assert fast.registers == full.registers
        assert fast.core_id == full.core_id
        assert fast.frames[0].pc == full.frames[0].pc


def test_compressed_cores_read_the_same(
    kernel_cores: dict[str, CrashResult], tmp_path: Path
) -> None:
    core = kernel_cores["ret_sp_off_by_8"].core
    assert core is not None
    raw = core.read_bytes()
    plain = inspect_core(core)
    variants = {
        "core.zst": zstandard.ZstdCompressor(level=3).compress(raw),
        "core.lz4": lz4.frame.compress(raw),
        "core.xz": lzma.compress(raw, preset=0),
    }
    for fname, data in variants.items():
        p = tmp_path / fname
        p.write_bytes(data)
        rec = inspect_core(p)
        assert rec.status is ParseStatus.OK, (fname, rec.errors)
        assert rec.core_id == plain.core_id
        assert rec.anomaly_names == plain.anomaly_names
        assert [f.pc for f in rec.frames] == [f.pc for f in plain.frames]
        assert rec.stack_window == plain.stack_window


def test_stdin(kernel_cores: dict[str, CrashResult]) -> None:
    core = kernel_cores["null_deref"].core
    assert core is not None
    with open(core, "rb") as fh:
        rec = inspect_core("-", stdin=fh)
    assert rec.status is ParseStatus.OK
    assert _names(rec)[0] == "crash_null_deref"


def test_head_only_core_is_partial_with_registers(kernel_cores: dict[str, CrashResult]) -> None:
    core = kernel_cores["ret_sp_off_by_8"].core
    assert core is not None
    rec = inspect_core(core, head_bytes=16384)
    assert rec.status is ParseStatus.PARTIAL
    assert rec.registers["rsp"] > 0 and rec.signal_name == "SIGSEGV"
    assert any("stack memory" in e for e in rec.errors)
    assert "pc_not_executable" in rec.anomaly_names  # needs only registers and program headers


def test_binaries_dir_by_build_id(kernel_cores: dict[str, CrashResult], tmp_path: Path) -> None:
    r = kernel_cores["null_deref"]
    assert r.core is not None
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shutil.copy(r.exe, bindir / "renamed-binary")
    hidden = r.exe.with_name(r.exe.name + ".away")
    r.exe.rename(hidden)
    try:
        without = inspect_core(r.core)
        with_dir = inspect_core(r.core, binaries=[bindir])
    finally:
        hidden.rename(r.exe)
    assert "crash_null_deref" not in _names(without)
    assert _names(with_dir)[0] == "crash_null_deref"
