"""Signal frames of other architectures, in real cores qemu-user wrote for its guest.

tests/data/sigframes/make_sigframes.py made them: a handler ran and returned, then the thread
crashed, so the frame lies in dead stack. With SA_SIGINFO the handler printed the saved pc and sp
of its ucontext (manifest.json); with a plain sa_handler the siginfo is not written, and the
saved pc must lie in wait_for_signal (its range from nm).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import zstandard

from corecensus.coredump import inspect_core
from corecensus.model import CrashRecord

DATA = Path(__file__).resolve().parent.parent / "data" / "sigframes"
MANIFEST: dict[str, Any] = json.loads((DATA / "manifest.json").read_text())


def _record(tmp_path: Path, arch: str, mode: str) -> CrashRecord:
    core = tmp_path / f"{arch}-{mode}.core"
    core.write_bytes(
        zstandard.ZstdDecompressor().decompress((DATA / arch / f"core-{mode}.zst").read_bytes())
    )
    return inspect_core(core, symbolize=False)


@pytest.mark.parametrize("arch", sorted(MANIFEST))
def test_siginfo_handler_frame(tmp_path: Path, arch: str) -> None:
    facts = MANIFEST[arch]["siginfo"]
    rec = _record(tmp_path, arch, "siginfo")
    assert rec.arch == arch
    assert len(rec.signal_frames) == 1, rec.signal_frames
    s = rec.signal_frames[0]
    assert s.offset < 0  # dead: below the crash's sp
    assert s.interrupted_pc == facts["interrupted_pc"]
    assert s.interrupted_sp == facts["interrupted_sp"]
    assert s.signal == facts["signal"]


@pytest.mark.parametrize("arch", sorted(MANIFEST))
def test_plain_handler_frame_has_no_signal_number(tmp_path: Path, arch: str) -> None:
    start, end = MANIFEST[arch]["wait_for_signal"]
    rec = _record(tmp_path, arch, "plain")
    assert len(rec.signal_frames) == 1, rec.signal_frames
    s = rec.signal_frames[0]
    assert s.offset < 0
    assert start <= s.interrupted_pc < end
    assert s.signal is None


@pytest.mark.parametrize("arch", sorted(MANIFEST))
def test_no_frame_without_its_fpsimd_record(tmp_path: Path, arch: str) -> None:
    """The frame is found by its FP/SIMD record; with that record's magic gone, nothing is."""
    assert len(_record(tmp_path, arch, "siginfo").signal_frames) == 1
    core = tmp_path / f"{arch}-siginfo.core"
    data = bytearray(core.read_bytes())
    magic = (0x46508001).to_bytes(4, "little") + (0x210).to_bytes(4, "little")
    assert data.count(magic) == 1
    data[data.index(magic)] ^= 0xFF
    core.write_bytes(bytes(data))
    assert inspect_core(core, symbolize=False).signal_frames == ()
