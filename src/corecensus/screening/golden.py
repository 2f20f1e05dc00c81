"""Golden values: the fingerprints a CPU model produced for round 0 of each check.

Round 0 always runs with the same seeds (:data:`~corecensus.screening.wire.GOLDEN_SEED`), so its
fingerprints can be compared across hosts and over time. Where a result depends on the CPU's code
path (libm and BLAS pick implementations per CPU), agreement is only expected within one model;
the file keeps one value per (model, check, scale). A host whose CPUs all agree with each other
but not with the recorded value has changed software (a library, the kernel's FPU handling),
not grown a defect on every core at once.

File format (JSON, written atomically)::

    {"format": 1, "models": {"<model_key>": {"<check>": {"scale=1": "<fingerprint>"}}}}
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from corecensus.errors import ScreeningError

__all__ = ["GoldenValues", "scale_key"]

_FORMAT = 1


def scale_key(scale: float) -> str:
    return f"scale={scale:g}"


@dataclass(frozen=True, slots=True)
class GoldenValues:
    """model_key -> check -> scale key -> fingerprint."""

    models: Mapping[str, Mapping[str, Mapping[str, str]]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def lookup(self, model_key: str, check: str, scale: float) -> str | None:
        return self.models.get(model_key, {}).get(check, {}).get(scale_key(scale))

    def with_entries(self, entries: Mapping[tuple[str, str, float], str]) -> GoldenValues:
        """A copy with ``(model_key, check, scale) -> fingerprint`` added; existing values win."""
        merged: dict[str, dict[str, dict[str, str]]] = {
            m: {c: dict(s) for c, s in checks.items()} for m, checks in self.models.items()
        }
        for (model, check, scale), fp in entries.items():
            merged.setdefault(model, {}).setdefault(check, {}).setdefault(scale_key(scale), fp)
        return GoldenValues(merged)

    def to_json(self) -> dict[str, object]:
        return {
            "format": _FORMAT,
            "models": {
                m: {c: dict(s) for c, s in checks.items()} for m, checks in self.models.items()
            },
        }

    @classmethod
    def load(cls, path: Path) -> GoldenValues:
        """Read a golden file; a missing file is an empty table, a malformed one an error."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise ScreeningError(f"{path}: cannot read golden values: {exc.strerror}") from exc
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScreeningError(
                f"{path}:{exc.lineno}: golden values are not JSON: {exc.msg}"
            ) from exc
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise ScreeningError(f"{path}: not a golden-values file of format {_FORMAT}")
        models = doc.get("models")
        if not isinstance(models, dict):
            raise ScreeningError(f"{path}: 'models' must be an object")
        for model, checks in models.items():
            if not isinstance(checks, dict) or not all(
                isinstance(v, dict) and all(isinstance(fp, str) for fp in v.values())
                for v in checks.values()
            ):
                raise ScreeningError(f"{path}: model {model!r} must map check -> scale -> string")
        return cls(models)

    def save(self, path: Path) -> None:
        """Write atomically (temporary file in the same directory, then rename)."""
        data = json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise ScreeningError(f"{path}: cannot write golden values: {exc.strerror}") from exc
