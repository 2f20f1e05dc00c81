"""The registry of SDC checks: one module per check, referenced by ``"module:Class"``.

The registry holds import paths, not objects, so it costs nothing to import and can be sent to a
worker process as plain text: the worker imports exactly the checks it was given. A test or a
site can register its own checks (:meth:`CheckRegistry.with_check`), e.g. a check that hangs, to
prove the runner's time budget.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from corecensus.errors import ScreeningError
from corecensus.screening.checks.protocol import (
    Check,
    CheckContext,
    CheckNotApplicable,
    Observation,
    Tally,
    digest,
)

__all__ = [
    "BUILTIN_CHECKS",
    "QUICK_CHECKS",
    "Check",
    "CheckContext",
    "CheckNotApplicable",
    "CheckRegistry",
    "Observation",
    "Tally",
    "default_registry",
    "digest",
    "load_check",
]

# name -> "module:Class". Order is the order a round runs them in (cheap, high-yield first).
BUILTIN_CHECKS: Mapping[str, str] = MappingProxyType(
    {
        "libm_pow": "corecensus.screening.checks.libm_pow:LibmPow",
        "libm_sweep": "corecensus.screening.checks.libm_sweep:LibmSweep",
        "fma_matmul": "corecensus.screening.checks.fma_matmul:FmaMatmul",
        "vector": "corecensus.screening.checks.vector:VectorArith",
        "bigint": "corecensus.screening.checks.bigint:BigInt",
        "hashing": "corecensus.screening.checks.hashing:Hashing",
        "crc32": "corecensus.screening.checks.crc:Crc",
        "compression": "corecensus.screening.checks.compression:Compression",
        "aes": "corecensus.screening.checks.aes:Aes",
        "memory": "corecensus.screening.checks.memory:MemoryPatterns",
        "sorting": "corecensus.screening.checks.sorting:Sorting",
        "shared_counter": "corecensus.screening.checks.threads:SharedCounter",
        "crosscore": "corecensus.screening.checks.crosscore:CrossCore",
    }
)

# A reduced battery for quick repeated runs (tests, smoke checks): the two shimmed paths, the
# cross-core trick and two cheap families.
QUICK_CHECKS: tuple[str, ...] = ("libm_pow", "crc32", "crosscore", "bigint", "aes")


def load_check(spec: str) -> Check:
    """Import ``"module:Class"`` and instantiate it; checks take no constructor arguments."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ScreeningError(f"bad check reference {spec!r}: expected 'module:Class'")
    try:
        module = importlib.import_module(module_name)
        factory = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise ScreeningError(f"cannot load check {spec!r}: {exc}") from exc
    try:
        check = factory()
    except TypeError as exc:
        raise ScreeningError(f"cannot instantiate check {spec!r}: {exc}") from exc
    if not isinstance(check, Check):
        raise ScreeningError(f"{spec!r} is not a check (needs name, family, description, run)")
    return check


@dataclass(frozen=True, slots=True)
class CheckRegistry:
    """An ordered set of checks by name."""

    specs: Mapping[str, str] = field(default_factory=lambda: dict(BUILTIN_CHECKS))

    def __iter__(self) -> Iterator[str]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    def names(self) -> tuple[str, ...]:
        return tuple(self.specs)

    def spec(self, name: str) -> str:
        try:
            return self.specs[name]
        except KeyError:
            known = ", ".join(self.specs)
            raise ScreeningError(f"unknown check {name!r} (known: {known})") from None

    def with_check(self, name: str, spec: str) -> CheckRegistry:
        """A registry with one more check (or ``name`` pointing elsewhere)."""
        return CheckRegistry({**self.specs, name: spec})

    def subset(self, names: Iterable[str]) -> CheckRegistry:
        """Only ``names``, in the registry's order; unknown names are an error."""
        wanted = list(dict.fromkeys(names))
        for name in wanted:
            self.spec(name)
        return CheckRegistry({n: s for n, s in self.specs.items() if n in wanted})


def default_registry() -> CheckRegistry:
    """Every built-in check."""
    return CheckRegistry()
