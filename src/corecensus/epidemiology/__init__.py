"""Epidemiology of crash populations: rates against exposure, CPU concentration,
disproportionality, onsets and verdicts (pure NumPy/SciPy, no I/O: files are read by adapters
such as :mod:`corecensus.ingest.tables`).

The entry point is :func:`analyze`; docs/statistics.md explains every method.
"""

from __future__ import annotations

from corecensus.epidemiology.analysis import analyze
from corecensus.epidemiology.categorical import Categorical
from corecensus.epidemiology.findings import (
    AttributeSignal,
    FleetAnalysis,
    HostFinding,
    HostKind,
    Onset,
    PopulationFinding,
    PopulationInfo,
    PopulationVerdict,
    Split,
    Suspect,
)
from corecensus.epidemiology.params import HARDWARE_ANOMALIES, AnalysisParams
from corecensus.epidemiology.table import CrashTable, Deploys, ExposureTable

__all__ = [
    "HARDWARE_ANOMALIES",
    "AnalysisParams",
    "AttributeSignal",
    "Categorical",
    "CrashTable",
    "Deploys",
    "ExposureTable",
    "FleetAnalysis",
    "HostFinding",
    "HostKind",
    "Onset",
    "PopulationFinding",
    "PopulationInfo",
    "PopulationVerdict",
    "Split",
    "Suspect",
    "analyze",
]
