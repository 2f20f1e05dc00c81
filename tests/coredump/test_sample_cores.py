"""Committed zstd/lz4/xz cores (kernel- and gcore-written), parsed on every machine.

The expected facts in each expected.json were read with gdb and eu-readelf when the samples were
made (tests/data/make_samples.py), not with corecensus.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from corecensus.coredump import inspect_core
from corecensus.model import ParseStatus

SAMPLES = Path(__file__).parent.parent / "data" / "samples" / "x86_64"
CASES = sorted((d.name, f.name) for d in SAMPLES.iterdir() if d.is_dir() for f in d.glob("core.*"))


@pytest.mark.parametrize(("sample", "fname"), CASES)
def test_sample(sample: str, fname: str) -> None:
    d = SAMPLES / sample
    want = json.loads((d / "expected.json").read_text())
    rec = inspect_core(d / fname, binaries=[d])
    assert rec.status is ParseStatus.OK, rec.errors
    assert rec.writer == ("gdb-gcore" if want["origin"] == "gdb gcore" else "kernel")
    assert rec.pid == want["pid"]
    assert rec.comm == want["comm"]
    assert rec.crashed_tid == want["crashed_tid"]
    assert rec.threads == want["threads"]
    assert rec.signal == want["signal"]
    assert rec.si_code == want["si_code"]
    if want.get("fault_addr") is not None:
        assert rec.fault_address == int(want["fault_addr"], 16)
    assert rec.registers["rip"] == int(want["rip"], 16)
    assert rec.registers["rsp"] == int(want["rsp"], 16)
    assert rec.exe == want["execfn"]
    exe = next(m for m in rec.modules if m.path == want["exe_path"])
    assert exe.build_id == want["exe_build_id"]
    # The executable is not at its recorded path here: it is found in --binaries by build-id.
    # Frames are compared for the sample's own functions (gdb and drgn name libc internals and
    # inlined frames differently: "<signal handler called>", "__pthread_kill_internal").
    own = _defined_functions(d / want["exe_file"])
    got = [f.function for f in rec.frames]
    mine = [n for n in want["frames"] if n in own]
    assert mine, want["frames"]
    assert [n for n in got if n in own][: len(mine)] == mine
    words = {w.offset: w.address for w in rec.stack_window}
    for off, value in want["stack_words"].items():
        v = int(value, 16)
        if int(off) in words:
            assert words[int(off)] == v


def _defined_functions(exe: Path) -> set[str]:
    out = subprocess.run(
        ["nm", "--defined-only", str(exe)], capture_output=True, text=True, check=True
    )
    return {
        line.split()[-1] for line in out.stdout.splitlines() if line.split()[1:2] in (["T"], ["t"])
    }
