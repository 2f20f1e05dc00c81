"""`corecensus inspect` as a command loads only what the core needs (issue 8, speed as a
command): no NumPy, Rich or drgn for `--no-symbols --json`, capstone only when an instruction is
decoded, a decompressor only for a compressed core. Which modules load is asserted, not time
(bench/core_bench.py times the processes). The stack window found without NumPy is the one
found with it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from corecensus.coredump import inspect_core
from crashers import CrashResult
from libunwind_race import RaceCore
from module_probe import cli_modules

pytestmark = pytest.mark.kernel_cores

HEAVY = ("numpy", "scipy", "rich", "drgn", "capstone", "duckdb", "zstandard", "lz4", "logging")


def _inspect(tmp_path: Path, *args: str) -> tuple[str, set[str]]:
    """(stdout, top-level modules loaded) of `corecensus inspect ARGS` in a fresh process."""
    return cli_modules(tmp_path, "inspect", *args)


def _core(kernel_cores: Mapping[str, CrashResult], name: str) -> Path:
    core = kernel_cores[name].core
    assert core is not None
    return core


def test_no_symbols_json_of_a_crash_at_pc_zero_loads_nothing_heavy(
    libunwind_race_cores: list[RaceCore],
    kernel_cores: Mapping[str, CrashResult],
    tmp_path: Path,
) -> None:
    # pc 0: no instruction to decode, so not even capstone
    for core in (libunwind_race_cores[0].core, _core(kernel_cores, "return_to_null")):
        out, modules = _inspect(tmp_path, "--no-symbols", "--json", str(core))
        assert json.loads(out)["registers"]["rip"] == 0
        assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_capstone_loads_when_the_faulting_instruction_is_decoded(
    kernel_cores: Mapping[str, CrashResult], tmp_path: Path
) -> None:
    out, modules = _inspect(
        tmp_path, "--no-symbols", "--json", str(_core(kernel_cores, "null_deref"))
    )
    assert json.loads(out)["effective_address"] is not None  # decoded from the instruction
    assert "capstone" in modules
    assert not modules & {"numpy", "scipy", "rich", "drgn", "duckdb"}


def test_symbols_load_drgn_but_neither_numpy_nor_rich(
    kernel_cores: Mapping[str, CrashResult], tmp_path: Path
) -> None:
    out, modules = _inspect(tmp_path, "--json", str(_core(kernel_cores, "null_deref")))
    assert any(f["function"] for f in json.loads(out)["frames"])
    assert "drgn" in modules
    assert not modules & {"numpy", "scipy", "rich", "duckdb"}


def test_the_table_loads_rich_and_a_compressed_core_its_decoder(
    kernel_cores: Mapping[str, CrashResult], tmp_path: Path
) -> None:
    core = _core(kernel_cores, "null_deref")
    _out, modules = _inspect(tmp_path, "--no-symbols", str(core))
    assert "rich" in modules and "numpy" not in modules
    zst = tmp_path / "core.zst"
    subprocess.run(["zstd", "-q", "-f", str(core), "-o", str(zst)], check=True)
    _out, modules = _inspect(tmp_path, "--no-symbols", "--json", str(zst))
    assert "zstandard" in modules and "lz4" not in modules


def _window(record: Mapping[str, Any]) -> tuple[object, ...]:
    return (
        record["stack_window"],
        record["signal_frames"],
        record["anomalies"],
        record["frames"],
        record["status"],
    )


def test_the_window_without_numpy_is_the_window_with_it(
    libunwind_race_cores: list[RaceCore],
    kernel_cores: Mapping[str, CrashResult],
    tmp_path: Path,
) -> None:
    import numpy  # noqa: F401 - loaded here, so the in-process pass takes the NumPy way

    names = (
        "null_deref",
        "return_to_null",
        "dead_signal_frame",
        "signal_race",
        "thread_crash",
        "abort",
    )
    cores = [libunwind_race_cores[0].core, *(_core(kernel_cores, n) for n in names)]
    for core in cores:
        out, modules = _inspect(tmp_path, "--no-symbols", "--json", str(core))
        assert "numpy" not in modules
        by_bytes = json.loads(out)
        with_numpy = json.loads(json.dumps(inspect_core(core, symbolize=False).to_json()))
        assert _window(by_bytes) == _window(with_numpy), core
        assert by_bytes["stack_window"], core
        if core in (cores[0], _core(kernel_cores, "dead_signal_frame")):
            assert by_bytes["signal_frames"], core  # found by the segment word, without NumPy
