"""Each public package's surface is exactly its ``__all__`` (httpx tests/test_exported_members.py).

The store, signature, ingest and epidemiology packages have their own such test; this one covers
the rest.
"""

from __future__ import annotations

import importlib
import inspect

import pytest

PACKAGES = [
    "corecensus",
    "corecensus.coredump",
    "corecensus.model",
    "corecensus.errors",
    "corecensus.demo",
    "corecensus.collector",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_exactly_the_public_names(name: str) -> None:
    package = importlib.import_module(name)
    public = {
        n
        for n, value in vars(package).items()
        if (not n.startswith("_") or n == "__version__")
        and not inspect.ismodule(value)
        and n != "annotations"
    }
    # Names a module merely imports for its own use (typing helpers, dataclass decorators) are
    # not its surface.
    imported_helpers = {"Any", "Iterable", "Mapping", "dataclass", "field", "enum"}
    assert sorted(package.__all__) == sorted(public - imported_helpers)
    assert len(package.__all__) == len(set(package.__all__))
