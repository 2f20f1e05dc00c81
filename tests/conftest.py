"""Shared pytest fixtures: real kernel core dumps from the crashers in tests/data/crashers.

Tests that need the kernel to write core files are marked `kernel_cores` (using the
`kernel_cores` fixture marks a test automatically).  They skip, with the reason, when
kernel.core_pattern is not a plain file name (a pipe to systemd-coredump or apport, or a fixed
directory) - unless CORECENSUS_REQUIRE_KERNEL_CORES=1, as in CI, where that is a failure: CI must
never go green by skipping the tests that matter most.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

from crashers import CRASHERS, CrashResult, kernel_core_support, run_crasher

if TYPE_CHECKING:
    from libunwind_race import RaceCore

pytest_plugins = ("pytester",)  # test_crashers.py runs the skip/fail logic in a sub-session

REQUIRE_ENV = "CORECENSUS_REQUIRE_KERNEL_CORES"

# Hypothesis draws fresh examples on every run by default, and CI runs the suite once on a clean
# clone (no example database): a property that fails for one rare input would fail there by
# chance, not because of the change under test.  So every run draws the same examples
# (derandomize: seeded from each test's own code), with no per-example deadline and no
# slow-data-generation health check (a loaded machine is slow, not wrong).
# `pytest --hypothesis-profile=explore` draws fresh examples, to look for such inputs on purpose.
_HYPOTHESIS_TIMING = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "deterministic", parent=_HYPOTHESIS_TIMING, derandomize=True, database=None
)
settings.register_profile("explore", parent=_HYPOTHESIS_TIMING)
settings.load_profile("deterministic")


class KernelCores(Mapping[str, CrashResult]):
    """name -> CrashResult, each crasher built and crashed once, on first access.

    Iteration (keys, values, items, len) covers the crashers every kernel can produce; the
    optional ones (mce_sigbus) are reached only by name.  Asking for one this kernel cannot
    produce (mce_sigbus without CONFIG_MEMORY_FAILURE) skips the asking test with the crasher's
    own reason: a property of the kernel, not a misconfiguration, so
    CORECENSUS_REQUIRE_KERNEL_CORES does not turn it into a failure.
    """

    def __init__(self, root: Path) -> None:
        self._root = root
        self._results: dict[str, CrashResult] = {}

    def __getitem__(self, name: str) -> CrashResult:
        if name not in CRASHERS:
            raise KeyError(name)
        if name not in self._results:
            self._results[name] = run_crasher(
                name, self._root / "run" / name, build_dir=self._root / "build"
            )
        result = self._results[name]
        if result.unsupported is not None:
            pytest.skip(f"{name}: {result.unsupported}")
        return result

    def __contains__(self, name: object) -> bool:
        return name in CRASHERS  # without running it, unlike Mapping's default

    def __iter__(self) -> Iterator[str]:
        return (name for name, spec in CRASHERS.items() if not spec.optional)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _require_kernel_cores() -> None:
    ok, reason = kernel_core_support()
    if ok:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but kernel cores are unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "kernel_cores" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kernel_cores)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel_cores") is not None:
        _require_kernel_cores()


@pytest.fixture(scope="session")
def kernel_cores(tmp_path_factory: pytest.TempPathFactory) -> KernelCores:
    """Real core dumps of every crasher, keyed by name; see tests/crashers.py."""
    _require_kernel_cores()
    return KernelCores(tmp_path_factory.mktemp("kernel_cores"))


@pytest.fixture(scope="session")
def libunwind_race_cores(tmp_path_factory: pytest.TempPathFactory) -> list[RaceCore]:
    """Three real cores of the libunwind signal race, one per throwing code path (see
    tests/libunwind_race.py). Skips without g++, gdb or libunwind-dev, unless
    CORECENSUS_REQUIRE_KERNEL_CORES=1 (./dev installs them all)."""
    # Imported here, not at the top: test_crashers.py runs this conftest in a sub-session
    # with crashers.py alone beside it.
    from libunwind_race import build, missing_tools, race_core

    _require_kernel_cores()
    missing = missing_tools()
    if missing is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but the libunwind race cannot run: {missing}")
        pytest.skip(missing)
    root = tmp_path_factory.mktemp("libunwind_race")
    exe = build(root / "build")
    return [race_core(exe, path, root / f"run{path}") for path in (1, 2, 3)]
