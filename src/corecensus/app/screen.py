"""Use case: screen this host's CPUs and record the result (golden values, a file for ingest,
the store beside the crash populations)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from corecensus.errors import CorecensusError
from corecensus.pipeline import screen_row
from corecensus.screening import GoldenValues, ScreenConfig, ScreenResult, Topology, run_screen
from corecensus.store import SCREEN_RESULTS, open_store

__all__ = ["screen_and_record", "store_screen_record", "write_atomic"]


def screen_and_record(
    config: ScreenConfig,
    *,
    topology: Topology,
    proc_root: Path,
    env: Mapping[str, str],
    golden_path: Path | None = None,
    out_path: Path | None = None,
    db: Path | None = None,
) -> ScreenResult:
    """Run the screen; extend the golden-values file with this screen's agreed values; write
    the record to ``out_path`` (atomically) and store it in ``db`` when given."""
    golden = GoldenValues.load(golden_path) if golden_path else None
    run = run_screen(config, topology=topology, proc_root=proc_root, env=env, golden=golden)
    result = run.result
    if golden_path is not None and run.golden_added:
        run.golden.save(golden_path)
    record = result.to_json()
    if out_path is not None:
        write_atomic(out_path, json.dumps(record, indent=1) + "\n")
    if db is not None:
        store_screen_record(db, record)
    return result


def store_screen_record(db: Path, record: Mapping[str, Any]) -> None:
    store = open_store(db)
    try:
        store.add(SCREEN_RESULTS, [screen_row(record)])
    finally:
        store.close()


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary name beside ``path`` and rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CorecensusError(f"{path}: cannot write the screen record: {exc.strerror}") from exc
