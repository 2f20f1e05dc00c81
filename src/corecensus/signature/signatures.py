"""The signature record of one crash and the population keys derived from it.

A crash gets three signatures, all kept, so the analysis can group at the level that fits:

- ``address``: program, signal and the top frames as ``build_id+0xoffset`` (module-relative),
  needing no symbols; stable for one build of the code.
- ``symbolic``: normalized function names in the style of Mozilla's signature generator, stable
  across builds.
- ``anomaly_class``: the sorted register-level anomaly names (``sp_off_by_8``,
  ``pc_zero+returned_to_bad_address``) or ``none``. Hardware faults spread over many code
  paths, so this level groups what the other two scatter.

Every signature carries :data:`SIGNATURE_VERSION`; a change to the rules or to the frame lists
bumps it, and ``reprocess`` recomputes the stored signatures whose version is older.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from corecensus.model import ANOMALY_NAMES
from corecensus.signature.race import race_key

__all__ = [
    "NO_ANOMALY",
    "SIGNATURE_VERSION",
    "PopulationLevel",
    "Signatures",
    "anomaly_class",
    "anomaly_mask",
    "population_key",
]

# Bump on any change that can change a signature: rules, normalization, frame lists.
SIGNATURE_VERSION = 2

NO_ANOMALY = "none"

# The mask is stored as uint16 (one bit per ANOMALY_NAMES entry, in that order).
if len(ANOMALY_NAMES) > 16:  # pragma: no cover - guards a future edit of model.py
    raise RuntimeError("anomaly_mask is a uint16; ANOMALY_NAMES grew past 16 names")


class PopulationLevel(enum.StrEnum):
    """How coarsely crashes are grouped into populations."""

    ANOMALY = "anomaly"
    """By anomaly class alone, across programs: the level at which a bad CPU shows."""
    SYMBOLIC = "symbolic"
    """Program, signal, anomaly class and symbolic frames: one software bug per population."""
    ADDRESS = "address"
    """Anomaly class and address signature: one bug in one build."""


@dataclass(frozen=True, slots=True)
class Signatures:
    """All signatures of one crash.

    ``program`` is the executable's basename, ``signal`` the signal name (``SIGSEGV``);
    ``notes`` explain anything a rule could not do (a failing rule adds a note, the rest run).
    ``unwind_failed`` is true when frames were recovered from the stack window instead of
    unwound.
    """

    address: str
    symbolic: str
    anomaly_class: str
    program: str
    signal: str
    version: int = SIGNATURE_VERSION
    notes: tuple[str, ...] = ()
    unwind_failed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "symbolic": self.symbolic,
            "anomaly_class": self.anomaly_class,
            "program": self.program,
            "signal": self.signal,
            "version": self.version,
            "notes": list(self.notes),
            "unwind_failed": self.unwind_failed,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Signatures:
        return cls(
            address=obj["address"],
            symbolic=obj["symbolic"],
            anomaly_class=obj["anomaly_class"],
            program=obj["program"],
            signal=obj["signal"],
            version=int(obj["version"]),
            notes=tuple(obj.get("notes", ())),
            unwind_failed=bool(obj.get("unwind_failed", False)),
        )


def anomaly_class(names: Iterable[str]) -> str:
    """``"a+b"`` for the sorted distinct anomaly names, :data:`NO_ANOMALY` for none."""
    distinct = sorted({n for n in names if n})
    return "+".join(distinct) if distinct else NO_ANOMALY


def anomaly_mask(names: Iterable[str]) -> int:
    """Bit ``i`` set for ``ANOMALY_NAMES[i]``; names outside that contract are ignored."""
    mask = 0
    for name in names:
        try:
            mask |= 1 << ANOMALY_NAMES.index(name)
        except ValueError:
            continue
    return mask


def population_key(
    signatures: Signatures, level: PopulationLevel = PopulationLevel.SYMBOLIC
) -> str:
    """The key that puts crashes of one population together, at ``level``."""
    if level is PopulationLevel.ANOMALY:
        return signatures.anomaly_class
    if level is PopulationLevel.ADDRESS:
        return f"[{signatures.anomaly_class}] {signatures.address}"
    if race_key(signatures.symbolic) is not None:
        # One race, one population, whichever program or caller it struck.
        return signatures.symbolic
    return (
        f"{signatures.program} {signatures.signal} [{signatures.anomaly_class}] "
        f"{signatures.symbolic}"
    )
