"""The shipped systemd units, checked by systemd's own ``systemd-analyze verify`` (the
executable path pointed at this checkout's ``corecensus``), and every command they run exists."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
INSTALLED = "/usr/local/bin/corecensus"
HERE = Path(sys.executable).parent / "corecensus"

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)


def _verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("unit", ["corecensus-agent.service", "corecensus-gate.service"])
def test_unit_verifies_and_runs_real_commands(unit: str, tmp_path: Path) -> None:
    text = (UNITS / unit).read_text()
    local = tmp_path / unit
    local.write_text(text.replace(INSTALLED, str(HERE)))
    done = _verify(local)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr
    for line in text.splitlines():
        if line.startswith(("ExecStart=", "ExecStartPre=", "ExecStopPost=")):
            argv = line.split("=", 1)[1].split()
            assert argv[0] == INSTALLED
            sub = [w for w in argv[1:] if not w.startswith("-")][:2]
            helped = subprocess.run(
                [str(HERE), *sub, "--help"], capture_output=True, text=True, check=False
            )
            assert helped.returncode == 0, (line, helped.stderr)


def test_a_broken_unit_is_caught(tmp_path: Path) -> None:
    """Must fire: the check is not vacuous."""
    text = (UNITS / "corecensus-agent.service").read_text().replace(INSTALLED, str(HERE))
    bad = tmp_path / "corecensus-agent.service"
    bad.write_text(text.replace("Nice=10", "Nicenes=10"))
    done = _verify(bad)
    assert "Unknown key" in done.stderr
