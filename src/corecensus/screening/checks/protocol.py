"""What a check is: a known-answer computation on the CPU it runs on.

A check gets a :class:`CheckContext` (a seed, an amount of work, the CPU it is pinned to and a
partner CPU) and returns an :class:`Observation`: whether every known answer matched, the first
mismatch as ``expected`` / ``observed`` text, and a ``fingerprint`` -- a digest of everything it
computed. Two CPUs of one model given the same seed must produce the same fingerprint, so the
screen can flag a core that disagrees with the others even where no answer is known in advance
(Hochschild et al., "Cores that don't count", HotOS 2021: compare the same work across cores).

Checks raise :class:`CheckNotApplicable` when the host cannot run them (no partner CPU for the
cross-core check); any other exception is a failed run, since a corrupted core often shows up as a
library raising on bad data (an AES-GCM tag mismatch, a corrupt deflate stream).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Check",
    "CheckContext",
    "CheckNotApplicable",
    "Observation",
    "Tally",
    "digest",
]


class CheckNotApplicable(Exception):
    """The check cannot run on this host (the reason is shown as the ``skipped`` detail)."""


@dataclass(frozen=True, slots=True)
class CheckContext:
    """The inputs of one run of a check.

    ``seed`` selects the data (the same seed on every CPU, so results can be compared);
    ``scale`` is the amount of work, 1.0 being the ``oneshot`` size (tens of milliseconds on a
    current server core); ``cpu`` is the CPU the worker is pinned to and ``partner`` the one the
    cross-core check verifies on.
    """

    seed: int
    scale: float = 1.0
    cpu: int | None = None
    partner: int | None = None

    def units(self, base: int, minimum: int = 1) -> int:
        """``base`` scaled by :attr:`scale`, never below ``minimum``."""
        return max(minimum, int(base * self.scale))


@dataclass(frozen=True, slots=True)
class Observation:
    """The result of one run: ``ok`` is true when every known answer matched."""

    ok: bool
    expected: str
    observed: str
    fingerprint: str
    detail: str = ""


@runtime_checkable
class Check(Protocol):
    """A registered check: ``name`` is a stable id (JSON, store), ``family`` its instruction
    class, ``description`` one line for people."""

    name: str
    family: str
    description: str

    def run(self, ctx: CheckContext) -> Observation: ...


def digest(*parts: bytes | str | int | float) -> str:
    """A 128-bit BLAKE2b digest of ``parts`` as hex (the fingerprint of a run).

    Floats are hashed by their IEEE-754 bits, so a last-place difference changes the digest.
    """
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        if isinstance(part, bytes):
            h.update(part)
        elif isinstance(part, str):
            h.update(part.encode())
        elif isinstance(part, float):
            h.update(struct.pack("<d", part))
        else:
            h.update(part.to_bytes(part.bit_length() // 8 + 1, "little", signed=True))
        h.update(b"\x00")
    return h.hexdigest()


class Tally:
    """Collects known-answer comparisons; keeps the first mismatch and counts the rest.

    ``summary`` describes what was checked (the ``expected`` text of a passing run).
    """

    def __init__(self, summary: str) -> None:
        self.summary = summary
        self.compared = 0
        self.mismatches = 0
        self.first: tuple[str, str, str] | None = None
        self._fp: list[bytes | str | int | float] = []

    def expect(self, label: str, expected: object, observed: object) -> bool:
        """Compare ``observed`` with ``expected`` exactly; returns whether they matched."""
        return self.judge(label, expected == observed, expected, observed)

    def judge(self, label: str, ok: bool, expected: object, observed: object) -> bool:
        """Record a comparison decided by the caller (tolerances, identities)."""
        self.compared += 1
        if not ok:
            self.mismatches += 1
            if self.first is None:
                self.first = (label, _show(expected), _show(observed))
        return ok

    def arrays(self, label: str, want: Any, got: Any) -> bool:
        """Compare two NumPy arrays exactly; on a mismatch, report the first differing element."""
        import numpy as np

        want_a, got_a = np.asarray(want), np.asarray(got)
        if want_a.shape == got_a.shape and bool(np.array_equal(want_a, got_a)):
            return self.judge(label, True, "", "")
        if want_a.shape != got_a.shape:
            return self.judge(f"{label} shape", False, want_a.shape, got_a.shape)
        idx = tuple(int(i) for i in np.argwhere(want_a != got_a)[0])
        where = ",".join(map(str, idx))
        return self.judge(f"{label}[{where}]", False, want_a[idx].item(), got_a[idx].item())

    def feed(self, *parts: bytes | str | int | float) -> None:
        """Add computed values to the run's fingerprint."""
        self._fp.extend(parts)

    def feed_all(self, parts: Iterable[bytes | str | int | float]) -> None:
        self._fp.extend(parts)

    def observation(self) -> Observation:
        fingerprint = digest(*self._fp)
        if self.first is None:
            return Observation(
                ok=True,
                expected=self.summary,
                observed=f"all {self.compared} comparisons matched",
                fingerprint=fingerprint,
            )
        label, expected, observed = self.first
        more = f" (+{self.mismatches - 1} more mismatches)" if self.mismatches > 1 else ""
        return Observation(
            ok=False,
            expected=f"{label} = {expected}",
            observed=f"{label} = {observed}",
            fingerprint=fingerprint,
            detail=f"{self.mismatches} of {self.compared} comparisons failed{more}",
        )


def _show(value: object, limit: int = 160) -> str:
    if isinstance(value, float):
        text = f"{value!r} ({value.hex()})"
    elif isinstance(value, bytes):
        text = value.hex()
    elif isinstance(value, int) and value.bit_length() > 256:
        text = f"<{value.bit_length()}-bit integer ending ...{value & 0xFFFFFFFF:08x}>"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
