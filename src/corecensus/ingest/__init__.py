"""Getting crash data in: crash metadata from sidecars, xattrs, journal exports and file names."""

from __future__ import annotations

from corecensus.ingest.journal import JournalEntry, JournalIndex, load_journal
from corecensus.ingest.metadata import (
    PRECEDENCE,
    XATTR_FIELDS,
    CrashMetadata,
    Source,
    SourceFields,
    collect_metadata,
    merge_sources,
    parse_core_filename,
    read_sidecar,
    read_xattrs,
    sidecar_path,
)

__all__ = [
    "PRECEDENCE",
    "XATTR_FIELDS",
    "CrashMetadata",
    "JournalEntry",
    "JournalIndex",
    "Source",
    "SourceFields",
    "collect_metadata",
    "load_journal",
    "merge_sources",
    "parse_core_filename",
    "read_sidecar",
    "read_xattrs",
    "sidecar_path",
]
