"""Crash -> population key, in levels (address, symbolic, anomaly class), all kept and versioned.

Pure: reads :class:`corecensus.model.CrashRecord`, imports nothing above the model.
"""

from __future__ import annotations

from corecensus.signature.generator import SignatureGenerator, compute_signatures, default_pipeline
from corecensus.signature.normalize import address_frame, normalize_function
from corecensus.signature.race import (
    RACE_PREFIX,
    SP_SLACK,
    SignalRace,
    race_evidence,
    race_key,
    signal_race,
)
from corecensus.signature.rules import SignatureResult, SignatureRule
from corecensus.signature.siglists import (
    IRRELEVANT_FRAMES,
    PREFIX_FRAMES,
    SYSTEM_MODULES,
    FrameList,
    load_frame_list,
)
from corecensus.signature.signatures import (
    NO_ANOMALY,
    SIGNATURE_VERSION,
    PopulationLevel,
    Signatures,
    anomaly_class,
    anomaly_mask,
    population_key,
)

__all__ = [
    "IRRELEVANT_FRAMES",
    "NO_ANOMALY",
    "PREFIX_FRAMES",
    "RACE_PREFIX",
    "SIGNATURE_VERSION",
    "SP_SLACK",
    "SYSTEM_MODULES",
    "FrameList",
    "PopulationLevel",
    "SignalRace",
    "SignatureGenerator",
    "SignatureResult",
    "SignatureRule",
    "Signatures",
    "address_frame",
    "anomaly_class",
    "anomaly_mask",
    "compute_signatures",
    "default_pipeline",
    "load_frame_list",
    "normalize_function",
    "population_key",
    "race_evidence",
    "race_key",
    "signal_race",
]
