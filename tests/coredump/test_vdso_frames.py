"""The vDSO as a module: a real kernel core whose crash is inside the vDSO.

tests/data/crashers/vdso_time.c calls time() with a bad pointer; x86-64 glibc resolves time() to
the kernel's ``__vdso_time``, which faults storing through it. gdb and eu-stack name that frame
``__vdso_time``; corecensus names it the same, in the module ``[vdso]`` (no file backs it: its
image, build-id and symbols are read from the core's memory), and unwinds on through the caller.
The oracle is eu-stack on the same core, not corecensus.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping

import pytest

from corecensus.coredump import inspect_core
from corecensus.model import ParseStatus
from crashers import CrashResult

pytestmark = pytest.mark.kernel_cores


def _eu_stack_names(r: CrashResult) -> list[str]:
    assert r.core is not None
    out = subprocess.run(
        ["eu-stack", "--core", str(r.core), "-e", str(r.exe)],
        capture_output=True, text=True, timeout=60, check=False,
    ).stdout  # fmt: skip
    return [
        line.split()[2]
        for line in out.splitlines()
        if line.startswith("#") and len(line.split()) > 2
    ]


def test_crash_in_the_vdso_is_named_in_the_vdso_module(
    kernel_cores: Mapping[str, CrashResult],
) -> None:
    r = kernel_cores["vdso_time"]
    assert r.core is not None
    rec = inspect_core(r.core)
    assert rec.status is ParseStatus.OK, rec.problems
    (vdso,) = [m for m in rec.modules if m.path == "[vdso]"]
    assert vdso.build_id
    first = rec.frames[0]
    assert (first.function, first.module) == ("__vdso_time", "[vdso]")
    assert vdso.base <= first.pc < vdso.end
    assert rec.fault_address == r.info_int("fault_addr") == 16
    names = [f.function for f in rec.frames]
    assert names[:3] == ["__vdso_time", "crash_vdso_time", "main"]
    assert _eu_stack_names(r)[:3] == names[:3]
    assert rec.anomalies == ()
