"""The public surface of corecensus.signature is exactly its ``__all__`` (httpx-style check)."""

from __future__ import annotations

import inspect

import corecensus.signature as package


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(package).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    assert sorted(package.__all__) == sorted(public)
    assert len(package.__all__) == len(set(package.__all__))
