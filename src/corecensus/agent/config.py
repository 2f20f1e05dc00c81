"""The agent's settings, declared once: name, default, unit, meaning (STYLE.md habit 12).

Read by the CLI from a TOML file (``/etc/corecensus/agent.toml`` by default) and from
``CORECENSUS_AGENT_<NAME>`` environment variables; an unknown key or a bad value is a
:class:`~corecensus.errors.ConfigError` naming it. Sizes are bytes, times seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corecensus.agent import corehold
from corecensus.errors import ConfigError

__all__ = ["DEFAULT_CONFIG_FILE", "ENV_PREFIX", "AgentConfig", "ServiceSpec"]

DEFAULT_CONFIG_FILE = Path(corehold.DEFAULT_CONFIG_FILE)
ENV_PREFIX = corehold.ENV_PREFIX


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A service whose processes count as exposure, and whose crashes carry its name/version:
    a process belongs to it when its executable path or comm equals ``exe``/``comm``."""

    name: str
    version: str = ""
    exe: str | None = None
    comm: str | None = None

    def matches(self, exe: str | None, comm: str | None) -> bool:
        return (self.exe is not None and exe == self.exe) or (
            self.comm is not None and comm == self.comm
        )


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Every agent setting with its production default (see the module docstring for units)."""

    state_dir: Path = Path(corehold.DEFAULT_STATE_DIR)  # spool, stored cores, handler memory
    core_dir: Path | None = None  # stored cores; default <state_dir>/cores
    core_max_bytes: int = corehold.DEFAULT_CORE_MAX_BYTES  # per core, uncompressed
    cores_max_total_bytes: int = 4 << 30  # all stored cores, compressed
    cores_max_age_s: float = 7 * 86400.0
    zstd_level: int = 3
    handler_budget_s: float = corehold.DEFAULT_HANDLER_BUDGET_S  # longest a crash is held
    parse_budget_s: float = 20.0  # head parse after the process is released
    spool_max_bytes: int = 64 << 20
    collector_url: str | None = None
    token: str | None = None
    hostname: str | None = None  # default: the kernel's nodename
    batch_records: int = 200
    batch_max_bytes: int = 1 << 20
    request_timeout_s: float = 10.0
    requests_per_s: float = 0.5  # at most this many requests per host, averaged
    request_burst: int = 3
    backoff_base_s: float = 2.0
    backoff_max_s: float = 600.0
    first_contact_window_s: float = 120.0  # first request after start-up: uniform in [0, this)
    heartbeat_interval_s: float = 300.0
    watch_dirs: tuple[Path, ...] = ()
    systemd_coredump_dir: Path = Path("/var/lib/systemd/coredump")
    journalctl: str | None = "journalctl"  # asked about systemd-coredump's cores; "": never
    scan_interval_s: float = 10.0
    screen_mode: str | None = "periodic"  # None: no scheduled screens
    screen_interval_s: float = 86400.0
    screen_budget_s: float | None = None  # per CPU; None: the mode's default
    services: tuple[ServiceSpec, ...] = field(default_factory=tuple)

    @property
    def cores(self) -> Path:
        return self.core_dir if self.core_dir is not None else self.state_dir / "cores"

    @property
    def spool_dir(self) -> Path:
        return self.state_dir / "spool"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], origin: str) -> AgentConfig:
        """Settings from a parsed TOML table or environment strings; ConfigError names the key."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, raw in values.items():
            if key not in fields:
                raise ConfigError(f"{origin}: unknown agent setting {key!r}")
            kwargs[key] = _convert(key, raw, cls.__dataclass_fields__[key].default, origin)
        config = cls(**kwargs)
        config.validate(origin)
        return config

    def replace(self, **changes: Any) -> AgentConfig:
        return dataclasses.replace(self, **changes)

    def validate(self, origin: str = "agent settings") -> None:
        for name in (
            "core_max_bytes",
            "cores_max_total_bytes",
            "spool_max_bytes",
            "batch_records",
            "batch_max_bytes",
            "request_burst",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{origin}: {name} must be positive")
        for name in (
            "handler_budget_s",
            "parse_budget_s",
            "request_timeout_s",
            "requests_per_s",
            "backoff_base_s",
            "backoff_max_s",
            "heartbeat_interval_s",
            "scan_interval_s",
            "screen_interval_s",
            "cores_max_age_s",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{origin}: {name} must be positive seconds")
        if self.first_contact_window_s < 0:
            raise ConfigError(f"{origin}: first_contact_window_s cannot be negative")


def _convert(key: str, raw: Any, default: Any, origin: str) -> Any:
    try:
        if key == "services":
            return tuple(ServiceSpec(**dict(s)) for s in raw)
        if key == "watch_dirs":
            items = raw.split(":") if isinstance(raw, str) else raw
            return tuple(Path(p) for p in items if p)
        if key in ("state_dir", "systemd_coredump_dir", "core_dir"):
            return Path(raw)
        if key in ("collector_url", "token", "hostname", "screen_mode", "journalctl"):
            return None if raw in ("", None) else str(raw)
        if isinstance(default, bool):
            raise TypeError
        if isinstance(default, int) or key == "core_dir":
            return int(raw)
        if isinstance(default, float) or key == "screen_budget_s":
            return None if raw in ("", None) else float(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: {key}: bad value {raw!r} ({exc})") from None
    raise ConfigError(f"{origin}: {key}: bad value {raw!r}")
