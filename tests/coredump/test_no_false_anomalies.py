"""No false anomalies: ordinary crashes, snapshots and odd-but-legal layouts get none.

A false hardware-flavoured anomaly can send a healthy host to quarantine, so every anomaly rule
must stay silent on this corpus of ordinary crashes -- real kernel cores of several crashers,
the committed samples (kernel- and gdb-written), the multi-architecture cores (kernel- and
qemu-written) and other tools' public test cores (tests/data/public) -- which is each rule's must-not-fire test on real data. The layouts that used to
fool the rules are reproduced for real: executable (RWX) main and thread stacks, gcore snapshots
of a live and of a stopped process, and (by editing a real core) a pc at the entry point of a
mapping the core lists without X.
"""

from __future__ import annotations

import json
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import zstandard
from coretools import notes, phdrs

from corecensus.coredump import inspect_core
from corecensus.model import ProblemKind
from crashers import CrashResult

DATA = Path(__file__).resolve().parent.parent / "data"
ORDINARY_CRASHERS = (
    "null_deref",
    "abort",
    "sigfpe",
    "sigill",
    "sigbus",
    "stack_overflow",
    "stack_overflow_call",
    "thread_crash",
    "signal_race",
    "dead_signal_frame",
    "execstack_main",
    "execstack_thread",
    "vdso_time",
)
# Committed samples that are ordinary crashes (the others crash on purpose with an anomaly).
ORDINARY_SAMPLES = ("abort", "gcore_null_deref", "null_deref", "sigbus", "signal_race",
                    "thread_crash")  # fmt: skip
MULTIARCH: list[dict[str, str]] = json.loads((DATA / "multiarch" / "manifest.json").read_text())[
    "cores"
]
PUBLIC: list[dict[str, str]] = json.loads((DATA / "public" / "manifest.json").read_text())["cores"]
PT_LOAD, PF_X, NT_AUXV, AT_ENTRY = 1, 1, 6, 9


def _unzstd(src: Path, dst: Path) -> Path:
    dst.write_bytes(
        zstandard.ZstdDecompressor().decompress(src.read_bytes(), max_output_size=1 << 30)
    )
    return dst


@pytest.mark.kernel_cores
@pytest.mark.parametrize("name", ORDINARY_CRASHERS)
def test_ordinary_kernel_cores_have_no_anomalies(
    kernel_cores: Mapping[str, CrashResult], name: str
) -> None:
    core = kernel_cores[name].core
    assert core is not None
    rec = inspect_core(core, symbolize=False)
    assert rec.anomalies == (), [a.detail for a in rec.anomalies]
    assert not any(p.kind is ProblemKind.NOT_A_CRASH for p in rec.problems)


@pytest.mark.parametrize("name", ORDINARY_SAMPLES)
def test_ordinary_samples_have_no_anomalies(tmp_path: Path, name: str) -> None:
    core = _unzstd(DATA / "samples" / "x86_64" / name / "core.zst", tmp_path / "core")
    rec = inspect_core(core, symbolize=False)
    assert rec.anomalies == (), [a.detail for a in rec.anomalies]
    # gdb stopped gcore_null_deref at its SIGSEGV: a crash, whoever wrote the core.
    assert not any(p.kind is ProblemKind.NOT_A_CRASH for p in rec.problems)


@pytest.mark.parametrize("entry", MULTIARCH, ids=[e["id"] for e in MULTIARCH])
def test_multiarch_cores_have_no_anomalies(tmp_path: Path, entry: dict[str, str]) -> None:
    core = _unzstd(DATA / "multiarch" / entry["core"], tmp_path / "core")
    rec = inspect_core(core, symbolize=False)
    assert rec.anomalies == (), [a.detail for a in rec.anomalies]


@pytest.mark.parametrize("entry", PUBLIC, ids=[e["id"] for e in PUBLIC])
def test_public_cores_have_no_anomalies(tmp_path: Path, entry: dict[str, str]) -> None:
    """Other tools' test cores (tests/data/public: elfutils, LLDB; nine architectures, kernel-
    and gdb-written, SIGILL at an R-only entry on s390, gcore snapshots) are ordinary."""
    core = _unzstd(DATA / "public" / entry["core"], tmp_path / "core")
    rec = inspect_core(core, symbolize=False)
    assert rec.anomalies == (), [a.detail for a in rec.anomalies]


def _load_of(core: bytes, addr: int) -> tuple[int, int, int, int, int, int, int]:
    return next(h for h in phdrs(core) if h[1] == PT_LOAD and h[4] <= addr < h[4] + h[6])


@pytest.mark.kernel_cores
@pytest.mark.parametrize("name", ["execstack_main", "execstack_thread"])
def test_an_executable_stack_is_still_a_stack(
    kernel_cores: Mapping[str, CrashResult], name: str
) -> None:
    core = kernel_cores[name].core
    assert core is not None
    rec = inspect_core(core, symbolize=False)
    data = core.read_bytes()
    stack = _load_of(data, rec.registers["rsp"])
    assert stack[2] & PF_X, "not vacuous: the crash's stack is executable in this core"
    if name == "execstack_thread":
        assert rec.crashed_tid == kernel_cores[name].crash_tid
        below = [h for h in phdrs(data) if h[1] == PT_LOAD and h[4] + h[6] == stack[4]]
        assert below and below[0][2] & 7 == 0, "a guard mapping with no access lies below"
    assert "sp_outside_stack" not in rec.anomaly_names


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """gcore of a live process, and of the same process stopped by SIGSTOP."""
    if shutil.which("gcore") is None:
        pytest.skip("gcore (gdb) not found")
    root = tmp_path_factory.mktemp("gcore")
    proc = subprocess.Popen(["sleep", "120"], stdin=subprocess.DEVNULL)
    try:
        time.sleep(0.2)  # let it reach its nanosleep (gcore works at any point; this is tidier)
        out: dict[str, Path] = {}
        for label in ("live", "stopped"):
            if label == "stopped":
                proc.send_signal(signal.SIGSTOP)
            prefix = root / label
            done = subprocess.run(
                ["gcore", "-o", str(prefix), str(proc.pid)],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            core = root / f"{label}.{proc.pid}"
            if done.returncode != 0 or not core.is_file():
                pytest.skip(f"gcore could not attach here: {done.stderr.strip()}")
            out[label] = core
        yield out
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("label", ["live", "stopped"])
def test_a_snapshot_is_not_a_crash_and_says_so(snapshots: dict[str, Path], label: str) -> None:
    rec = inspect_core(snapshots[label])
    assert rec.writer == "gdb-gcore"
    assert rec.anomalies == ()
    problems = [p for p in rec.problems if p.kind is ProblemKind.NOT_A_CRASH]
    assert len(problems) == 1
    assert "not a crash" in problems[0].detail


def _edit_core(core: Path, out: Path, *, strip_x_at: int, entry: int | None) -> Path:
    data = bytearray(core.read_bytes())
    index_offset = _load_of(bytes(data), strip_x_at)[0]
    (flags,) = struct.unpack_from("<I", data, index_offset + 4)
    struct.pack_into("<I", data, index_offset + 4, flags & ~PF_X)
    if entry is not None:
        auxv = next(n for n in notes(bytes(data)) if n.type == NT_AUXV)
        for pos in range(auxv.desc_offset, auxv.desc_offset + auxv.descsz, 16):
            if struct.unpack_from("<Q", data, pos)[0] == AT_ENTRY:
                struct.pack_into("<Q", data, pos + 8, entry)
                break
        else:
            raise AssertionError("no AT_ENTRY in NT_AUXV")
    out.write_bytes(bytes(data))
    return out


@pytest.mark.kernel_cores
def test_pc_at_the_entry_point_of_a_mapping_listed_without_x(
    kernel_cores: Mapping[str, CrashResult], tmp_path: Path
) -> None:
    """A core from a CPU without NX lists program text without X; the process still ran it.
    A SIGILL at the very first instruction (pc == AT_ENTRY) is no jump into data."""
    core = kernel_cores["sigill"].core
    assert core is not None
    pc = inspect_core(core, symbolize=False).registers["rip"]
    control = inspect_core(
        _edit_core(core, tmp_path / "control", strip_x_at=pc, entry=None), symbolize=False
    )
    assert "pc_not_executable" in control.anomaly_names  # the edit is what the rule sees
    at_entry = inspect_core(
        _edit_core(core, tmp_path / "entry", strip_x_at=pc, entry=pc), symbolize=False
    )
    assert "pc_not_executable" not in at_entry.anomaly_names
