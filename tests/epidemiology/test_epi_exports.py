"""The public surface of corecensus.epidemiology is curated (__all__ matches what it exports)."""

from __future__ import annotations

import importlib
import pkgutil

import corecensus.epidemiology as epi


def test_all_names_exist_and_are_public() -> None:
    for name in epi.__all__:
        assert hasattr(epi, name), name
    public = {n for n in dir(epi) if not n.startswith("_")}
    modules = {m.name for m in pkgutil.iter_modules(epi.__path__)}
    assert public - set(epi.__all__) - modules - {"annotations"} == set()


def test_every_module_declares_all() -> None:
    for info in pkgutil.iter_modules(epi.__path__):
        module = importlib.import_module(f"corecensus.epidemiology.{info.name}")
        assert isinstance(getattr(module, "__all__", None), list), info.name
        for name in module.__all__:
            assert hasattr(module, name), (info.name, name)
