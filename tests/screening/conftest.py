"""Fixtures of the screening tests: the fault shim, built from C for real, and the CPUs it needs.

The shim (tests/data/sdc_shim/sdc_shim.c) is the one fake in these tests: a defective core cannot
be had on demand, so an LD_PRELOAD library makes one CPU compute pow() and crc32() wrongly.
Everything around it is real: real worker processes pinned to real CPUs, the real C library.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from screening_helpers import BAD_CPU, SHIM_SOURCE


@pytest.fixture(scope="session")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fault shim, compiled for this machine."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the fault shim (./dev installs gcc)")
    out = tmp_path_factory.mktemp("shim") / "sdc_shim.so"
    subprocess.run(
        [
            cc,
            "-O2",
            "-Wall",
            "-Werror",
            "-shared",
            "-fPIC",
            "-o",
            str(out),
            str(SHIM_SOURCE),
            "-ldl",
        ],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="session")
def two_cpus() -> tuple[int, int]:
    """CPUs 0 and 1 (the machine this runs on has two; the bad CPU is 1)."""
    usable = os.sched_getaffinity(0)
    if not {0, BAD_CPU} <= usable:
        pytest.skip(f"needs CPUs 0 and {BAD_CPU} in this process's affinity, have {sorted(usable)}")
    return 0, BAD_CPU
