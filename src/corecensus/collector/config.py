"""The collector's settings: one frozen dataclass, every field documented with its unit.

``--config FILE`` (TOML, read by the CLI) may set any field by name; an unknown name or a value
of the wrong type is a :class:`ConfigError`, never ignored.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corecensus.errors import ConfigError
from corecensus.ingest.wire import WireLimits

__all__ = ["MAX_PORT", "MAX_WORKERS", "CollectorConfig", "config_from_mapping", "connection_limit"]

MAX_PORT = 65535
# Front-end processes at most: each is a whole interpreter (~60 MB) feeding one writer, which
# stops gaining from more of them long before this (docs/collector.md, "Several processes");
# an unbounded count once spawned processes until the machine's load average passed 400.
MAX_WORKERS = 64


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    db: Path
    host: str = "127.0.0.1"
    port: int = 8470
    tokens: Path | None = None
    limits: WireLimits = field(default_factory=WireLimits)
    # The client's deadline when it sends none (milliseconds), and the largest it may ask for.
    default_deadline_ms: int = 30_000
    max_deadline_ms: int = 600_000
    # Bounds on work accepted but not yet committed: records waiting for the writer, and
    # upload requests past admission (reading, decoding or waiting for their commit).
    max_queue_records: int = 20_000
    max_inflight_requests: int = 128
    # Records per group commit (one transaction per record kind).
    max_commit_records: int = 1000
    # Each agent's upload requests: a token bucket of this rate (per second) and burst.
    agent_rate_per_s: float = 2.0
    agent_burst: int = 20
    # A client that has not sent its headers, or its whole body, within this is cut off.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    # An idle kept-alive connection is closed after this many seconds (uvicorn's
    # timeout_keep_alive, whose default this is; httpx, the agent's client, keeps an idle one
    # as long). Past half of the connection limit (8 x max_inflight_requests) answers close
    # their connections instead (collector/protocol.py).
    keep_alive_s: int = 5
    # /api/v1/analysis is recomputed at most this often (seconds); reads between get the cache.
    analysis_interval_s: float = 60.0
    # How often the store's snapshot for other readers (`corecensus analyze --db`) is renewed
    # while there are new commits (seconds; at least ten times the copy's own time).
    snapshot_interval_s: float = 30.0
    # While uploads keep coming (no second without a commit), how long a due snapshot may wait
    # for a quiet moment (seconds, from the last one): the copy's writes slow the journal's.
    snapshot_busy_interval_s: float = 300.0
    # On SIGTERM, how long in-flight requests may take to finish (seconds).
    shutdown_timeout_s: float = 30.0
    # Threads that decompress and check upload bodies (off the event loop), per process, and
    # the decompressed size (bytes) up to which a body is decompressed, checked and signed on
    # the event loop instead, without the hand-off to a thread (0: every body on a thread).
    decode_threads: int = 2
    inline_decode_bytes: int = 256 << 10
    # HTTP front-end processes (they check, sign and hand rows to one writer process, the
    # store's owner); 1: one process does everything. 0: chosen from the CPU count.
    workers: int = 0
    # The journal in front of the store (FILE.journal/, collector/loader.py): acknowledged
    # uploads are appended there and loaded into the store on the loader's thread every
    # load_interval_s, or at once when load_batch_bytes wait (bytes of journal per store
    # transaction). At most journal_max_bytes not yet loaded (then 503 queue_full); past a
    # quarter of that (or two batches, if more), admission counts the time the loader needs
    # to catch up. A segment file holds about journal_segment_bytes. Two seconds and 32 MiB
    # make loads of a whole row group (store_row_group_rows) from about 1,000 crashes/s up.
    journal_max_bytes: int = 128 << 20
    journal_segment_bytes: int = 16 << 20
    load_interval_s: float = 2.0
    load_batch_bytes: int = 32 << 20
    # The loader checkpoints the store's write-ahead log: when it has loaded the whole journal,
    # nothing was appended for a second and the log holds the first, or after a load whatever
    # waits once it holds the second (docs/collector.md, Checkpoints).
    checkpoint_idle_bytes: int = 16 << 20
    checkpoint_max_bytes: int = 128 << 20
    # DuckDB's threads in the store (its loads, checkpoints, snapshot copies and the analysis).
    # All of that is background work now that the journal takes the acknowledgements; with
    # DuckDB's default of one thread per CPU a checkpoint took both CPUs of a 2-CPU machine
    # from the front ends, and the requests admitted before it missed their deadlines (bench,
    # quiet, 5x overload: admitted p99 2.44-3.31 s with 2 threads, 2.21 s with 1; README).
    store_threads: int = 1
    # Rows per row group of the store's tables (a multiple of 2048; DuckDB's default 122,880).
    # A load of at least this many rows is written into the file as it is inserted, and its
    # commit logs only where (docs/collector.md, Checkpoints): the loader's CPU per crash fell
    # by a fifth. Smaller row groups cost readers a little (the analysis 3-12 % more CPU on
    # 100,000 crashes) and make the file larger (twice, for the bench's near-identical records).
    store_row_group_rows: int = 2048


_PATHS = {"db", "tokens"}


def connection_limit(config: CollectorConfig) -> int:
    """Open connections per front-end process (uvicorn's ``limit_concurrency``): past it every
    request but the probes and the metrics is refused (503 ``connections_full``), and past half
    of it answers close their connections (collector/protocol.py)."""
    return config.max_inflight_requests * 8


def config_from_mapping(
    base: CollectorConfig, values: Mapping[str, Any], origin: str
) -> CollectorConfig:
    """``base`` with the fields ``values`` names (a parsed TOML table; ``limits`` a sub-table)."""
    known = {f.name: f for f in dataclasses.fields(CollectorConfig)}
    changes: dict[str, Any] = {}
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"{origin}: unknown setting {name!r}")
        if name == "limits":
            changes[name] = _limits(base.limits, value, origin)
            continue
        current = getattr(base, name)
        if name == "workers" and isinstance(value, int) and not 0 <= value <= MAX_WORKERS:
            raise ConfigError(
                f"{origin}: workers must be 0 (from the CPU count) to {MAX_WORKERS}, not {value}"
            )
        if name == "store_row_group_rows" and isinstance(value, int) and value % 2048:
            raise ConfigError(f"{origin}: store_row_group_rows must be a multiple of 2048")
        if name == "inline_decode_bytes" and isinstance(value, int) and value < 0:
            raise ConfigError(f"{origin}: inline_decode_bytes must be 0 (off) or more")
        if name == "port" and isinstance(value, int) and not 0 <= value <= MAX_PORT:
            raise ConfigError(f"{origin}: port must be 0 (any free port) to {MAX_PORT}")
        if isinstance(value, float) and not math.isfinite(value):
            # nan passed the "must be positive" check below (every comparison with nan is
            # false) and inf turns a timeout off: neither is a setting
            raise ConfigError(f"{origin}: {name} must be a finite number, not {value}")
        if name in _PATHS:
            if not isinstance(value, str):
                raise ConfigError(f"{origin}: {name} must be a path string")
            changes[name] = Path(value)
        elif isinstance(current, bool) or isinstance(value, bool):
            raise ConfigError(f"{origin}: {name} must be a number")
        elif isinstance(current, int) and isinstance(value, int):
            changes[name] = value
        elif isinstance(current, float) and isinstance(value, (int, float)):
            changes[name] = float(value)
        elif isinstance(current, str) and isinstance(value, str):
            changes[name] = value
        else:
            raise ConfigError(f"{origin}: {name} must be {type(current).__name__}, got {value!r}")
        if (
            isinstance(changes[name], (int, float))
            and changes[name] <= 0
            and name not in ("port", "workers", "inline_decode_bytes")
        ):
            raise ConfigError(f"{origin}: {name} must be positive")
    return dataclasses.replace(base, **changes)


def _limits(base: WireLimits, values: Any, origin: str) -> WireLimits:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{origin}: limits must be a table")
    known = {f.name for f in dataclasses.fields(WireLimits)}
    for name, value in values.items():
        if name not in known:
            raise ConfigError(f"{origin}: unknown setting limits.{name}")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{origin}: limits.{name} must be a positive integer")
    return dataclasses.replace(base, **dict(values))
