"""Run the signature rules over a crash (socorro ``signature/generator.py``'s shape)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from corecensus.model import CrashRecord
from corecensus.signature.rules import (
    AddressSignatureRule,
    AnomalyClassRule,
    EmptySignatureRule,
    FrameSelectionRule,
    ProgramSignalRule,
    SignalRaceRule,
    SignatureResult,
    SignatureRule,
    SymbolicSignatureRule,
    TruncateRule,
)
from corecensus.signature.siglists import (
    IRRELEVANT_FRAMES,
    PREFIX_FRAMES,
    SYSTEM_MODULES,
    load_frame_list,
)
from corecensus.signature.signatures import SIGNATURE_VERSION, Signatures

__all__ = ["SignatureGenerator", "compute_signatures", "default_pipeline"]


def default_pipeline(lists_directory: Path | None = None) -> list[SignatureRule]:
    """The rules in order. ``lists_directory`` replaces the packaged frame lists."""
    return [
        ProgramSignalRule(),
        AnomalyClassRule(),
        FrameSelectionRule(),
        AddressSignatureRule(load_frame_list(SYSTEM_MODULES, lists_directory)),
        SymbolicSignatureRule(
            irrelevant=load_frame_list(IRRELEVANT_FRAMES, lists_directory),
            prefix=load_frame_list(PREFIX_FRAMES, lists_directory),
        ),
        SignalRaceRule(),
        # These come last, in this order (as in socorro's DEFAULT_PIPELINE).
        EmptySignatureRule(),
        TruncateRule(),
    ]


class SignatureGenerator:
    """Computes :class:`Signatures`; each rule that raises adds a note and the rest still run."""

    def __init__(self, pipeline: Sequence[SignatureRule] | None = None) -> None:
        self.pipeline = list(pipeline) if pipeline is not None else default_pipeline()

    def explain(self, crash: CrashRecord) -> SignatureResult:
        """The full result, including the debug log of what every rule did."""
        result = SignatureResult()
        for rule in self.pipeline:
            try:
                if rule.predicate(crash, result):
                    rule.action(crash, result)
            except Exception as exc:  # a rule's bug must not cost the other signatures
                result.note(rule.name, f"rule failed: {type(exc).__name__}: {exc}")
        return result

    def generate(self, crash: CrashRecord) -> Signatures:
        result = self.explain(crash)
        return Signatures(
            address=result.address,
            symbolic=result.symbolic,
            anomaly_class=result.anomaly_class,
            program=result.program,
            signal=result.signal,
            version=SIGNATURE_VERSION,
            notes=tuple(result.notes),
            unwind_failed=result.unwind_failed,
        )


@functools.cache
def _default_generator() -> SignatureGenerator:
    # Built on first use (reads and compiles the frame lists once), not at import.
    return SignatureGenerator()


def compute_signatures(crash: CrashRecord) -> Signatures:
    """Signatures of ``crash`` with the default rules and packaged frame lists."""
    return _default_generator().generate(crash)
