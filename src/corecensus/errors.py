"""The one exception root of corecensus.

    CorecensusError
    ├── CoreError                  a core dump could not be read (carries ``path``)
    │   ├── NotACoreError          not an ELF core (wrong magic, wrong ELF type)
    │   ├── KernelDumpError        a kernel crash dump (vmcore), which corecensus refuses
    │   ├── CompressionError       a compressed core whose stream is corrupt or a bomb
    │   └── CoreLimitError         a core that asks for more than the hard limits allow
    ├── StoreError                 the embedded store could not be opened or written
    ├── MetadataError              a sidecar, xattr set or journal line is malformed
    ├── ConfigError                unknown setting or bad value
    └── ScreeningError             the SDC screen could not run at all

Third-party errors (drgn's ``FaultError``, zstandard's ``ZstdError``, DuckDB's exceptions) are
translated at the adapter boundary into one of these, so callers catch one tree.
"""

from __future__ import annotations

__all__ = [
    "CompressionError",
    "ConfigError",
    "CoreError",
    "CoreLimitError",
    "CorecensusError",
    "KernelDumpError",
    "MetadataError",
    "NotACoreError",
    "ScreeningError",
    "StoreError",
]


class CorecensusError(Exception):
    """Root of every error corecensus raises on purpose."""


class CoreError(CorecensusError):
    """A core dump could not be read."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path

    def __str__(self) -> str:
        base = super().__str__()
        return f"{self.path}: {base}" if self.path else base


class NotACoreError(CoreError):
    """The file is not an ELF core dump."""


class KernelDumpError(CoreError):
    """The file is a kernel crash dump (vmcore, kdump), not a user-space core."""


class CompressionError(CoreError):
    """A compressed core is corrupt, truncated in a way that hides everything, or a bomb."""


class CoreLimitError(CoreError):
    """The core asks for more than a hard limit allows (note sizes, header counts)."""


class StoreError(CorecensusError):
    """The embedded store could not be opened, read or written."""


class MetadataError(CorecensusError):
    """Crash metadata (sidecar, xattrs, journal export) is malformed."""


class ConfigError(CorecensusError):
    """An unknown setting, or a setting with a bad value."""


class ScreeningError(CorecensusError):
    """The SDC screen could not run at all (no CPUs, topology unreadable)."""
