"""Instruction spans measured in the binary a race's cores ran (libunwind 1.6.2), against
objdump's disassembly of the same bytes as the oracle."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from corecensus.coredump import inspect_core
from corecensus.coredump.codespan import MAX_SPAN_BYTES, instruction_span
from corecensus.model import MappedFile, SignalFrame
from libunwind_race import RaceCore

pytestmark = pytest.mark.kernel_cores

_LINE = re.compile(r"^\s*([0-9a-f]+):\s")


@pytest.fixture(scope="module")
def race_spot(libunwind_race_cores: list[RaceCore]) -> tuple[SignalFrame, MappedFile]:
    record = inspect_core(libunwind_race_cores[0].core)
    frame = next(s for s in record.signal_frames if s.function == "_Ux86_64_setcontext")
    module = next(m for m in record.modules if m.path == frame.module)
    return frame, module


def _objdump_addresses(path: str, start: int, stop: int) -> list[int]:
    """Instruction addresses objdump decodes in [start, stop) of the file's link-time space."""
    if shutil.which("objdump") is None:
        pytest.skip("objdump (binutils) not found")
    out = subprocess.run(
        ["objdump", "-d", f"--start-address={start:#x}", f"--stop-address={stop:#x}", path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [int(m.group(1), 16) for m in map(_LINE.match, out.splitlines()) if m]


def test_one_offset_is_one_instruction(race_spot: tuple[SignalFrame, MappedFile]) -> None:
    frame, module = race_spot
    assert frame.module_offset is not None
    span = instruction_span(module.path, module.build_id, [frame.module_offset], "x86_64")
    assert span == 1


def test_a_span_counts_instructions_as_objdump_decodes_them(
    race_spot: tuple[SignalFrame, MappedFile],
) -> None:
    frame, module = race_spot
    assert frame.module_offset is not None and frame.function_offset is not None
    # libunwind.so's first PT_LOAD maps file offset 0 at link address 0, so module offsets are
    # objdump's addresses; the oracle decodes from the function's start, not from our offset.
    start = frame.module_offset - frame.function_offset
    addresses = _objdump_addresses(module.path, start, start + 0x80)
    assert frame.module_offset in addresses
    after = [a for a in addresses if a >= frame.module_offset]
    assert len(after) >= 4
    # the racy instruction and the three after it (push, mov, mov in libunwind 1.6.2)
    span = instruction_span(
        module.path, module.build_id, [after[3], frame.module_offset, after[1]], "x86_64"
    )
    assert span == 4
    # the whole function prefix up to the racy instruction, as objdump counts it
    upto = [a for a in addresses if a <= frame.module_offset]
    assert instruction_span(
        module.path, module.build_id, [start, frame.module_offset], "x86_64"
    ) == len(upto)


def test_no_span_from_a_wrong_or_missing_binary(
    race_spot: tuple[SignalFrame, MappedFile], tmp_path: Path
) -> None:
    frame, module = race_spot
    assert frame.module_offset is not None
    off = [frame.module_offset]
    assert instruction_span(module.path, "00" * 20, off, "x86_64") is None  # other build
    assert instruction_span(str(tmp_path / "gone.so"), None, off, "x86_64") is None
    assert instruction_span(module.path, module.build_id, off, "mips") is None  # not decoded
    # an offset inside an instruction is not a place a signal can interrupt
    inside = [frame.module_offset, frame.module_offset + 1]
    assert instruction_span(module.path, module.build_id, inside, "x86_64") is None
    far = [frame.module_offset, frame.module_offset + MAX_SPAN_BYTES + 1]
    assert instruction_span(module.path, module.build_id, far, "x86_64") is None
    # the right build found in a --binaries directory when the mapped path is gone
    copy = tmp_path / "bin"
    copy.mkdir()
    shutil.copy(module.path, copy / "libunwind-copy.so")
    assert (
        instruction_span(
            "/nonexistent/libunwind.so", module.build_id, off, "x86_64", binaries=[copy]
        )
        == 1
    )
