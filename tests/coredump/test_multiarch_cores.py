"""Real core dumps of many Linux architectures, read by :func:`inspect_core`.

The cores in tests/data/multiarch are real, two writers per architecture where possible:

- ``*-kernel``: written by Linux, natively for x86-64 and i386, and in a qemu-system virtual
  machine running a Linux 6.1 kernel for the others: NT_FILE, NT_SIGINFO and the executable's
  first page (so its build-id) are in the core;
- ``*-qemu``: written by qemu-user 7.2 for its guest: only NT_PRSTATUS, NT_PRPSINFO and NT_AUXV,
  and no build-id in the core, so the executable must be found among ``binaries``.

Each program has two threads and the second one crashed. The expected facts in manifest.json
were read by make_multiarch.py with its own struct reader and checked against eu-readelf and
gdb-multiarch, independently of corecensus. Regenerate them with
``python3 tests/data/multiarch/make_multiarch.py`` (its docstring lists the Debian packages).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import zstandard

from corecensus.coredump import inspect_core
from corecensus.model import CrashRecord, ParseStatus

DATA = Path(__file__).resolve().parent.parent / "data" / "multiarch"
MANIFEST: dict[str, Any] = json.loads((DATA / "manifest.json").read_text())
ENTRIES: list[dict[str, Any]] = MANIFEST["cores"]
IDS = [e["id"] for e in ENTRIES]

# Every architecture corecensus promises to read; each has a core or a stated reason why not.
PROMISED = {
    "x86_64",
    "i386",
    "x32",
    "aarch64",
    "arm",
    "ppc64le",
    "ppc64",
    "s390x",
    "riscv64",
    "mips",
    "mipsel",
}


def _unzstd(src: Path, dst: Path) -> Path:
    with src.open("rb") as fin, dst.open("wb") as fout:
        zstandard.ZstdDecompressor().copy_stream(fin, fout)
    return dst


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """id -> (core file, directory holding the executable), decompressed once per module."""
    out = {}
    for entry in ENTRIES:
        root = tmp_path_factory.mktemp(entry["id"])
        bindir = root / "bin"
        bindir.mkdir()
        exe = _unzstd(DATA / entry["exe"], bindir / entry["exe_name"])
        exe.chmod(0o755)
        out[entry["id"]] = (_unzstd(DATA / entry["core"], root / "core"), bindir)
    return out


@pytest.fixture(scope="module")
def records(unpacked: dict[str, tuple[Path, Path]]) -> dict[str, CrashRecord]:
    return {key: inspect_core(core, binaries=[bindir]) for key, (core, bindir) in unpacked.items()}


def _entry(entry_id: str) -> dict[str, Any]:
    (entry,) = [e for e in ENTRIES if e["id"] == entry_id]
    return entry


def _pc(entry: dict[str, Any]) -> int:
    pc_name = next(iter(entry["registers"]))
    return int(entry["registers"][pc_name])


def test_manifest_accounts_for_every_promised_architecture() -> None:
    produced = {e["arch"] for e in ENTRIES}
    explained = {e["arch"] for e in MANIFEST["not_produced"]}
    assert produced | explained >= PROMISED
    for missing in PROMISED - produced:
        (reason,) = [e["reason"] for e in MANIFEST["not_produced"] if e["arch"] == missing]
        assert reason


@pytest.mark.parametrize("entry_id", IDS)
def test_status_is_ok_or_partial_with_reason(
    entry_id: str, records: dict[str, CrashRecord]
) -> None:
    rec = records[entry_id]
    assert rec.status in (ParseStatus.OK, ParseStatus.PARTIAL), rec.errors
    if rec.status is ParseStatus.PARTIAL:
        assert rec.errors, "a partial parse must say what is missing"
    else:
        # "ok" claims the whole job, unwinding included: the first frame is the faulting one.
        assert rec.frames, rec
        assert rec.frames[0].pc == _pc(_entry(entry_id))
        assert rec.frames[0].function == _entry(entry_id)["pc_symbol"]


@pytest.mark.parametrize("entry_id", IDS)
def test_process_identity(entry_id: str, records: dict[str, CrashRecord]) -> None:
    entry, rec = _entry(entry_id), records[entry_id]
    assert rec.arch == entry["arch"]
    assert rec.pid == entry["pid"]
    assert rec.comm == entry["comm"]
    assert rec.cmdline is not None
    assert rec.cmdline.rstrip() == entry["cmdline"]
    assert rec.signal == entry["signal"] == 11
    assert rec.signal_name == entry["signal_name"] == "SIGSEGV"


@pytest.mark.parametrize("entry_id", IDS)
def test_threads_and_crashing_thread(entry_id: str, records: dict[str, CrashRecord]) -> None:
    entry, rec = _entry(entry_id), records[entry_id]
    assert rec.threads == entry["threads"] == 2
    # The worker thread crashed, not the main thread (whose tid is the pid).
    assert rec.crashed_tid == entry["crashed_tid"] != entry["pid"]


@pytest.mark.parametrize("entry_id", IDS)
def test_pc_and_sp(entry_id: str, records: dict[str, CrashRecord]) -> None:
    entry, rec = _entry(entry_id), records[entry_id]
    for name, value in entry["registers"].items():
        assert name in rec.registers, f"{name} missing from {sorted(rec.registers)}"
        assert rec.registers[name] == value, f"{name}: {rec.registers[name]:#x} != {value:#x}"


@pytest.mark.parametrize("entry_id", IDS)
def test_registers_that_share_a_layout_name_agree(
    entry_id: str, records: dict[str, CrashRecord]
) -> None:
    """Any register corecensus names like the kernel's layout must hold the layout's value."""
    entry, rec = _entry(entry_id), records[entry_id]
    layout = MANIFEST["layouts"][entry["arch"]]
    expected = dict(entry["all_registers"])
    for alias, name in layout["aliases"].items():
        expected.setdefault(alias, expected[name])
    shared = sorted(set(expected) & set(rec.registers))
    assert len(shared) >= 2, f"no register names in common: {sorted(rec.registers)}"
    wrong = {n: (rec.registers[n], expected[n]) for n in shared if rec.registers[n] != expected[n]}
    assert not wrong


@pytest.mark.parametrize("entry_id", IDS)
def test_executable_module_and_build_id(entry_id: str, records: dict[str, CrashRecord]) -> None:
    entry, rec = _entry(entry_id), records[entry_id]
    exe_modules = [m for m in rec.modules if m.build_id == entry["exe_build_id"]]
    assert exe_modules, f"no module with build-id {entry['exe_build_id']}: {rec.modules}"
    assert min(m.base for m in exe_modules) == entry["exe_base"]
    assert all(Path(m.path).name == entry["exe_name"] for m in exe_modules)
    pc = _pc(entry)
    assert any(m.base <= pc < m.end for m in exe_modules), "pc is in no mapping of the exe"


@pytest.mark.parametrize("entry_id", [e["id"] for e in ENTRIES if e["build_id_in_core"]])
def test_build_id_found_in_the_core_alone(
    entry_id: str, unpacked: dict[str, tuple[Path, Path]]
) -> None:
    """Kernel cores keep the executable's first page, and with it the build-id note."""
    entry = _entry(entry_id)
    core, _ = unpacked[entry_id]
    rec = inspect_core(core)
    assert entry["exe_build_id"] in {m.build_id for m in rec.modules}


@pytest.mark.parametrize("entry_id", [e["id"] for e in ENTRIES if e["si_code"] is not None])
def test_siginfo_of_kernel_cores(entry_id: str, records: dict[str, CrashRecord]) -> None:
    entry, rec = _entry(entry_id), records[entry_id]
    assert "NT_SIGINFO" in entry["notes"]
    assert rec.si_code == entry["si_code"] == 1
    assert rec.si_code_name == "SEGV_MAPERR"
    assert rec.fault_address == entry["fault_address"] == 0
