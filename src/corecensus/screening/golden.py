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
from corecensus.outside import json_int, open_regular, strip_bom

__all__ = ["GoldenValues", "scale_key"]

_FORMAT = 1
# A golden file holds one fingerprint per (CPU model, check, scale): kilobytes.
MAX_GOLDEN_BYTES = 16 << 20


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
            with open_regular(path) as fh:  # a FIFO must not block the screen
                data = fh.read(MAX_GOLDEN_BYTES + 1)
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise ScreeningError(f"{path}: cannot read golden values: {exc.strerror}") from exc
        if len(data) > MAX_GOLDEN_BYTES:
            raise ScreeningError(f"{path}: larger than {MAX_GOLDEN_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ScreeningError(
                f"{path}: golden values are not UTF-8 text (byte {exc.start})"
            ) from exc
        try:
            doc = json.loads(strip_bom(text), parse_int=json_int)
        except json.JSONDecodeError as exc:
            raise ScreeningError(
                f"{path}:{exc.lineno}: golden values are not JSON: {exc.msg}"
            ) from exc
        except ValueError as exc:  # json_int's refusal
            raise ScreeningError(f"{path}: golden values are not JSON we read: {exc}") from exc
        except RecursionError as exc:
            raise ScreeningError(f"{path}: golden values nested too deeply") from exc
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
        # The directory is the operator's to make: a mistyped path must fail, not quietly
        # create a tree nobody reads (issue 10).
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        except OSError as exc:
            raise ScreeningError(f"{path}: cannot write golden values: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise ScreeningError(f"{path}: cannot write golden values: {exc.strerror}") from exc
