"""Regenerate the committed sample cores in tests/data/samples/x86_64/.

    python tests/data/make_samples.py            # needs gcc, gdb, eu-readelf, zstd, lz4, xz

For each chosen crasher it builds and crashes the program (tests/crashers.py), then writes
`<name>/core.zst` (zstd -19), the executable (symbols and DWARF kept: they are small), and
`expected.json` holding what gdb and eu-readelf - not corecensus - read from the core.  It also
writes `gcore_null_deref/`, a core written by gdb's `gcore` rather than by the kernel, and
`null_deref/core.lz4` and `null_deref/core.xz`.  tests/data/samples/README.md explains the
fields.  Every run produces new pids and addresses, so regenerate only on purpose.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TESTS_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS_DIR))

from crashers import (  # noqa: E402  (needs the sys.path entry above)
    INFO_ENV,
    CrasherError,
    build_crasher,
    build_id,
    gdb_facts,
    readelf_notes,
    run_crasher,
)

OUT_DIR = TESTS_DIR / "data" / "samples" / "x86_64"
# A fixed, short work path: it is recorded in every core (psargs, NT_FILE, AT_EXECFN).
WORK_DIR = Path("/tmp/corecensus-samples")
KERNEL_SAMPLES = (
    "null_deref",
    "thread_crash",
    "return_to_null",
    "ret_sp_off_by_8",
    "signal_race",
    "sigbus",
    "abort",
)
FAULT_SIGNALS = {4, 7, 8, 11}  # SIGILL, SIGBUS, SIGFPE, SIGSEGV carry si_addr


def _tool_version(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[0]


def _hex(value: int | None) -> str | None:
    return None if value is None else f"{value:#x}"


def _expected(
    name: str, *, origin: str, exe: Path, core: Path, pid: int, info: Mapping[str, str]
) -> dict[str, Any]:
    notes = readelf_notes(core)
    facts = gdb_facts(exe, core)
    crashed = facts["threads"][0]
    if crashed["lwp"] != notes.prstatus_pids[0] or facts["crashed_lwp"] != crashed["lwp"]:
        raise CrasherError(f"{name}: gdb and eu-readelf disagree on the crashing thread")
    if notes.pid != pid or facts["si_signo"] != notes.si_signo:
        raise CrasherError(f"{name}: pid/signal mismatch: {notes} vs pid {pid}, {facts}")
    data = core.read_bytes()
    return {
        "name": name,
        "origin": origin,
        "exe_file": exe.name,
        "exe_build_id": build_id(exe),
        "exe_path": notes.files[0],
        "execfn": facts["execfn"],
        "psargs": notes.psargs,
        "comm": notes.comm,
        "pid": notes.pid,
        "crashed_tid": notes.prstatus_pids[0],
        "thread_tids": list(notes.prstatus_pids),
        "threads": len(notes.prstatus_pids),
        "signal": facts["si_signo"],
        "signal_name": facts["terminated_by"],
        "si_code": facts["si_code"],
        "fault_addr": _hex(facts["si_addr"]) if facts["si_signo"] in FAULT_SIGNALS else None,
        "rip": _hex(facts["rip"]),
        "rsp": _hex(facts["rsp"]),
        "rbp": _hex(facts["rbp"]),
        "stack_words": {off: _hex(w) for off, w in facts["stack_words"].items()},
        "rsp_word_after_call": facts["rsp_word_after_call"],
        "frames": crashed["frames"],
        "note_types": list(notes.note_types),
        "core_size": len(data),
        "core_sha256": hashlib.sha256(data).hexdigest(),
        "crasher_info": dict(info),
        "kernel": platform.release(),
        "tools": [_tool_version(["gdb", "--version"]), _tool_version(["eu-readelf", "--version"])],
    }


def _write_sample(name: str, exe: Path, core: Path, expected: dict[str, Any]) -> Path:
    out = OUT_DIR / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    subprocess.run(["zstd", "-19", "-q", "-o", str(out / "core.zst"), str(core)], check=True)
    (out / "core.zst").chmod(0o644)  # zstd copies the core's 0600
    shutil.copy2(exe, out / expected["exe_file"])
    (out / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    return out


def kernel_sample(name: str) -> Path:
    result = run_crasher(name, WORK_DIR / "run" / name, build_dir=WORK_DIR / "build")
    assert result.core is not None
    expected = _expected(
        name, origin="kernel", exe=result.exe, core=result.core, pid=result.pid, info=result.info
    )
    return _write_sample(name, result.exe, result.core, expected)


def gcore_sample() -> Path:
    """null_deref run under gdb, stopped at its SIGSEGV and dumped with `gcore`."""
    exe = build_crasher("null_deref", WORK_DIR / "build")
    workdir = WORK_DIR / "run" / "gcore_null_deref"
    workdir.mkdir(parents=True)
    info_path = workdir / "crasher-info.txt"
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", INFO_ENV: str(info_path)}
    cmd = ["gdb", "-batch", "-nx", "-iex", "set debuginfod enabled off"]
    cmd += ["-ex", "run", "-ex", "gcore core", str(exe)]
    subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, check=True, timeout=120)
    info = dict(line.split("=", 1) for line in info_path.read_text().splitlines())
    core = workdir / "core"
    expected = _expected(
        "gcore_null_deref", origin="gdb gcore", exe=exe, core=core, pid=int(info["pid"]), info=info
    )
    return _write_sample("gcore_null_deref", exe, core, expected)


def main() -> int:
    if WORK_DIR.exists():
        shutil.rmtree(WORK_DIR)
    WORK_DIR.mkdir(parents=True)
    for name in KERNEL_SAMPLES:
        out = kernel_sample(name)
        print(f"{out.relative_to(TESTS_DIR)}: {sum(p.stat().st_size for p in out.iterdir())} B")
    out = gcore_sample()
    print(f"{out.relative_to(TESTS_DIR)}: {sum(p.stat().st_size for p in out.iterdir())} B")
    core = WORK_DIR / "run" / "null_deref" / "core"
    null_dir = OUT_DIR / "null_deref"
    subprocess.run(["lz4", "-12", "-q", "-f", str(core), str(null_dir / "core.lz4")], check=True)
    with (null_dir / "core.xz").open("wb") as xz:
        subprocess.run(["xz", "-9e", "-c", str(core)], stdout=xz, check=True)
    (null_dir / "core.lz4").chmod(0o644)
    total = sum(p.stat().st_size for p in OUT_DIR.rglob("*") if p.is_file())
    print(f"total committed sample bytes: {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
