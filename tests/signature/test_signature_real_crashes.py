"""Signatures of real crashes: a C++ program crashes on purpose, the kernel writes real cores,
gdb reads their frames, mappings, build ids and stack, and the signatures must group runs of
the same bug (under ASLR) and separate different bugs.

gdb stands in for the coredump layer here (which the signature package must not import); the
record it yields has the same shape: frames with pc and name, NT_FILE mappings, the stack.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from corecensus.demo.kernel_cores import build_program, crash
from corecensus.model import CrashRecord, Frame, MappedFile, ParseStatus, StackWord
from corecensus.signature import PopulationLevel, Signatures, compute_signatures, population_key

HERE = Path(__file__).parent / "crashers"
pytestmark = pytest.mark.kernel_cores


@pytest.fixture(scope="module")
def crasher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gdb") is None:
        pytest.skip("needs gdb")
    return build_program(
        "sigcrash",
        [HERE / "sigcrash.cpp"],
        tmp_path_factory.mktemp("crasher"),
        flags=("-O0", "-g"),
        compilers=("g++", "c++"),
    )


def _crash(crasher: Path, mode: str, workdir: Path) -> Path:
    return crash([crasher, mode], workdir).require_core(f"sigcrash {mode}")


def _gdb_record(crasher: Path, core: Path, *, unwound: bool = True) -> CrashRecord:
    """A CrashRecord from gdb's view of a core. With ``unwound=False`` only the crashing pc is
    kept and the rest must come from the stack window, as when an unwinder gives up."""
    done = subprocess.run(
        ["gdb", "-batch", "-nx", "-q", "-x", str(HERE / "frames.gdb.py"), str(crasher), str(core)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("JSON:"))
    data = json.loads(line[5:])
    build_ids: dict[str, str] = data["build_ids"]
    modules = tuple(
        MappedFile(path, start, end, offset, build_ids.get(path), True)
        for start, end, offset, path in data["mappings"]
    )
    frames = tuple(Frame(pc, name) for pc, name in data["frames"])
    if not unwound:
        frames = frames[:1]
    window = tuple(StackWord(off, word, name) for off, word, name in data["stack"])
    return CrashRecord(
        core_id=str(core),
        status=ParseStatus.OK,
        exe=str(crasher),
        signal=data["signal"],
        registers={"rsp": data["sp"], "rip": data["frames"][0][0]},
        modules=modules,
        frames=frames,
        stack_window=window,
    )


Signer = Callable[[str], Signatures]


@pytest.fixture(scope="module")
def sign(crasher: Path, tmp_path_factory: pytest.TempPathFactory) -> Signer:
    cache: dict[str, Signatures] = {}

    def run(key: str) -> Signatures:
        if key not in cache:
            mode, _, variant = key.partition(":")
            work = tmp_path_factory.mktemp(key.replace(":", "-"))
            core = _crash(crasher, mode, work / mode)
            record = _gdb_record(crasher, core, unwound=variant != "window")
            cache[key] = compute_signatures(record)
        return cache[key]

    return run


def test_uncaught_exception_is_named_by_the_throwing_function(sign: Signer) -> None:
    sig = sign("throw")
    assert sig.signal == "SIGABRT"
    assert sig.program == "sigcrash"
    # abort/raise/pthread_kill, the unnamed libstdc++ terminate frames, std::terminate and
    # __cxa_throw are all irrelevant.
    assert sig.symbolic == "handle_request"
    assert not sig.unwind_failed


def test_double_free_keeps_the_allocator_frames_as_prefix(sign: Signer) -> None:
    # glibc's internal names (_int_free, malloc_printerr) come from its debug info.
    if not any(Path("/usr/lib/debug/.build-id").glob("*/*.debug")):
        pytest.skip("needs glibc debug symbols (Debian: libc6-dbg) to name _int_free")
    sig = sign("free")
    assert sig.symbolic == "_int_free | __libc_free | release_buffer"


def test_null_call_groups_across_runs_and_address_layouts(sign: Signer) -> None:
    first, second = sign("null"), sign("null:again")
    assert first.signal == "SIGSEGV"
    assert first.symbolic == "@0x0 | dispatch"
    assert first.address.startswith("sigcrash SIGSEGV @0x0 | ")
    assert first.unwind_failed
    for level in PopulationLevel:
        assert population_key(first, level) == population_key(second, level)


def test_null_call_from_another_function_is_another_population(sign: Signer) -> None:
    assert sign("null2").symbolic == "@0x0 | dispatch_other"
    assert population_key(sign("null2")) != population_key(sign("null"))
    assert population_key(sign("null2"), PopulationLevel.ADDRESS) != population_key(
        sign("null"), PopulationLevel.ADDRESS
    )


def test_without_an_unwind_the_stack_window_still_finds_the_caller(sign: Signer) -> None:
    unwound, window = sign("null"), sign("null:window")
    assert window.symbolic == "@0x0 | dispatch"
    assert population_key(window) == population_key(unwound)
    assert any("stack window" in note for note in window.notes)
    # Runs of one bug agree although the stack's far end differs between runs (only the
    # nearest window words sign a crash).
    again = sign("null:window-again")
    assert window.address == again.address
    assert window.address.count(" | ") == 2


def test_core_files_really_came_from_the_kernel(crasher: Path, tmp_path: Path) -> None:
    core = _crash(crasher, "null", tmp_path / "null")
    assert core.read_bytes()[:4] == b"\x7fELF"
    assert os.path.getsize(core) > 4096
