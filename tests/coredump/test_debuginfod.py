"""Symbols from a real debuginfod server on loopback when DEBUGINFOD_URLS is set.

The crashing program is stripped of every symbol (`strip --strip-all`); its debug file is served
only by a `debuginfod` started here. corecensus must name the frames with it, and must not
without it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from corecensus.demo.kernel_cores import crash
from crashers import build_crasher

pytestmark = pytest.mark.kernel_cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def stripped_crash(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(core, stripped exe, directory holding only the debug file)."""
    exe = build_crasher("null_deref", tmp_path / "build")
    work = tmp_path / "run"
    work.mkdir()
    stripped = work / "null_deref"
    debug_dir = tmp_path / "debug"
    debug_dir.mkdir()
    subprocess.run(
        ["objcopy", "--only-keep-debug", str(exe), str(debug_dir / "null_deref.debug")], check=True
    )
    shutil.copy(exe, stripped)
    subprocess.run(["strip", "--strip-all", str(stripped)], check=True)
    run = crash([stripped], work, env={"PATH": "/usr/bin:/bin"})
    core = run.require_core("stripped null_deref", signal.SIGSEGV)
    return core, stripped, debug_dir


PORT_ATTEMPTS = 5


def _start_debuginfod(debug_dir: Path, workdir: Path, port: int) -> subprocess.Popen[bytes]:
    log = (workdir / f"debuginfod-{port}.log").open("wb")
    with log:
        return subprocess.Popen(
            [
                "debuginfod",
                "-F",
                str(debug_dir),
                "-p",
                str(port),
                "-d",
                str(workdir / f"index-{port}.sqlite"),
                "-t",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def _serves(url: str, build_id: str, server: subprocess.Popen[bytes]) -> bool:
    """Wait until `server` serves the debug file (True) or exits (False); fail after 60 s."""
    deadline = time.monotonic() + 60
    while True:  # wait until the server has indexed the debug file
        try:
            with urllib.request.urlopen(f"{url}/buildid/{build_id}/debuginfo", timeout=5) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        if server.poll() is not None:
            return False
        if time.monotonic() > deadline:
            pytest.fail("debuginfod did not serve the debug file within 60 s")
        time.sleep(0.3)


@pytest.fixture()
def debuginfod_url(stripped_crash: tuple[Path, Path, Path], tmp_path: Path) -> Iterator[str]:
    if shutil.which("debuginfod") is None:
        pytest.skip("needs the debuginfod server (apt: debuginfod; ./dev installs it)")
    _core, _exe, debug_dir = stripped_crash
    build_id = _build_id(debug_dir / "null_deref.debug")
    # The free port is only free when _free_port() closes its socket: another process (a
    # parallel test run on the same machine) may take it before debuginfod binds it.  debuginfod
    # then exits with "cannot start http server"; try another port.
    for _ in range(PORT_ATTEMPTS):
        port = _free_port()
        server = _start_debuginfod(debug_dir, tmp_path, port)
        url = f"http://127.0.0.1:{port}"
        try:
            if _serves(url, build_id, server):
                break
        except BaseException:
            server.kill()
            server.wait(timeout=30)
            raise
        log = (tmp_path / f"debuginfod-{port}.log").read_text(errors="replace")
        if "cannot start http server" not in log:
            pytest.fail(f"debuginfod exited with {server.returncode}:\n{log[-2000:]}")
    else:
        pytest.fail(f"debuginfod found no free port in {PORT_ATTEMPTS} attempts")
    try:
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _build_id(path: Path) -> str:
    out = subprocess.run(
        ["readelf", "-n", str(path)], capture_output=True, text=True, check=True
    ).stdout
    return next(
        line.split("Build ID:")[1].strip() for line in out.splitlines() if "Build ID:" in line
    )


def _inspect(core: Path, env: dict[str, str]) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "corecensus", "inspect", "--json", str(core)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    doc: dict[str, object] = json.loads(out.stdout)
    return doc


def _functions(doc: dict[str, object]) -> list[object]:
    frames = doc["frames"]
    assert isinstance(frames, list)
    return [f["function"] for f in frames]


def test_frames_named_through_debuginfod(
    stripped_crash: tuple[Path, Path, Path], debuginfod_url: str, tmp_path: Path
) -> None:
    core, _exe, _debug = stripped_crash
    base = {k: v for k, v in os.environ.items() if not k.startswith("DEBUGINFOD")}
    without = _inspect(core, {**base, "DEBUGINFOD_CACHE_PATH": str(tmp_path / "cache0")})
    assert "crash_null_deref" not in _functions(without)
    with_server = _inspect(
        core,
        {
            **base,
            "DEBUGINFOD_URLS": debuginfod_url,
            "DEBUGINFOD_CACHE_PATH": str(tmp_path / "cache1"),
        },
    )
    assert _functions(with_server)[:2] == ["crash_null_deref", "main"]
