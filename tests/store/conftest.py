"""Both store implementations, for the contract tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from corecensus.store import DuckDBStore, MemoryStore, Store


@pytest.fixture(params=["duckdb", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store
    if request.param == "duckdb":
        s = DuckDBStore(tmp_path / "corecensus.duckdb", clock=lambda: 1_700_000_100.0)
    else:
        s = MemoryStore(clock=lambda: 1_700_000_100.0)
    with s:
        yield s
