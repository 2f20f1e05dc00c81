"""Which modules a `corecensus` command loads, run in a fresh interpreter (start-up cost is
paid per import: the tests name the modules a path must not load, they do not time it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_PROBE = """
import json, os, sys
from corecensus.cli.main import main
status = main(sys.argv[1:])
with open(os.environ["MODULES_OUT"], "w") as fh:
    json.dump(sorted(sys.modules), fh)
sys.exit(status)
"""


def cli_modules(tmp_path: Path, *args: str) -> tuple[str, set[str]]:
    """(stdout, top-level modules loaded) of `corecensus ARGS` in a fresh process, which must
    exit 0."""
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "MODULES_OUT": str(out), "COLUMNS": "200"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, {m.split(".")[0] for m in json.loads(out.read_text())}
