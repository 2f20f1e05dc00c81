"""corecensus next to eu-stack on other tools' public test cores, per architecture.

    python bench/public_cores_bench.py [--no-write]

The cores are tests/data/public (elfutils' and LLDB's test cores, see its README and
manifest.json). Each core is read, in one run, by

- ``eu-stack -i --core CORE [-e EXE]`` (elfutils; ``-e`` when the upstream test pairs the core
  with an executable, ``-i`` to show inlined frames as elfutils' own inline test asks), and
- ``corecensus.coredump.inspect_core(CORE, binaries=[the same files])``.

Per core it records whether the tool names at least one frame (a function name, not only an
address) and, for the cores whose upstream test asks a backtrace to name given functions
(manifest ``expect``: ``main`` for elfutils' backtrace cores, ``bar``/``foo``/``_start`` for
LLDB's, ``cxxfunc(int)``/``f`` for the demangle test, ``fu``/``fubar``/``main`` for the inline
test), whether every one of them is named in some thread. It prints a Markdown table per
architecture and writes it, with the per-core detail, to docs/bench_public_cores.md.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests" / "coredump"))

from corecensus.coredump import inspect_core  # noqa: E402

DATA = ROOT / "tests" / "data" / "public"
OUT = ROOT / "docs" / "bench_public_cores.md"
# "#3  0x0000000000401fa6 backtracegen" (eu-stack's frame line; the name may be absent).
_FRAME = re.compile(r"^#\d+\s+0x[0-9a-f]+(?:\s+-\s+\d+)?\s*(.*)$")


@dataclass
class Result:
    core: str
    arch: str
    expect: list[str]
    eu_named: bool
    eu_whole: bool
    cc_named: bool
    cc_whole: bool
    cc_status: str
    eu_ms: float
    cc_ms: float


def _unpack(entry: dict[str, Any], root: Path) -> tuple[Path, Path]:
    from test_public_cores import unpack

    return unpack(entry, root)


def _eu_stack(core: Path, exe: Path | None) -> tuple[set[str], float]:
    cmd = ["eu-stack", "-i", "--core", str(core)]
    if exe is not None:
        cmd += ["-e", str(exe)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    ms = (time.perf_counter() - t0) * 1000
    names = set()
    for line in proc.stdout.splitlines():
        m = _FRAME.match(line.strip())
        if m and m.group(1).strip():
            # "name" or "name - /path/to/module"; inline frames are printed the same way.
            names.add(m.group(1).split(" - ", 1)[0].strip())
    return names, ms


def _corecensus(core: Path, bindir: Path) -> tuple[set[str], str, float]:
    t0 = time.perf_counter()
    rec = inspect_core(core, binaries=[bindir])
    ms = (time.perf_counter() - t0) * 1000
    names = {f.function for t in rec.threads_detail for f in t.frames if f.function}
    names |= {f.function for f in rec.frames if f.function and not f.recovered}
    return names, rec.status.value, ms


def run() -> list[Result]:
    entries = json.loads((DATA / "manifest.json").read_text())["cores"]
    out = []
    with tempfile.TemporaryDirectory(prefix="corecensus-public-") as tmp:
        for entry in entries:
            core, bindir = _unpack(entry, Path(tmp) / entry["id"])
            exe = bindir / entry["exe"] if entry.get("exe") else None
            eu, eu_ms = _eu_stack(core, exe)
            cc, status, cc_ms = _corecensus(core, bindir)
            expect = entry["expect"]
            out.append(
                Result(
                    entry["id"],
                    entry["arch"],
                    expect,
                    bool(eu),
                    bool(expect) and set(expect) <= eu,
                    bool(cc),
                    bool(expect) and set(expect) <= cc,
                    status,
                    eu_ms,
                    cc_ms,
                )
            )
    return out


def render(results: list[Result]) -> str:
    by_arch: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        by_arch[r.arch].append(r)
    lines = [
        "| architecture | cores | frames named: eu-stack | frames named: corecensus "
        "| whole backtrace asked | whole: eu-stack | whole: corecensus |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for arch in sorted(by_arch):
        rs = by_arch[arch]
        asked = [r for r in rs if r.expect]
        lines.append(
            f"| {arch} | {len(rs)} | {sum(r.eu_named for r in rs)} | {sum(r.cc_named for r in rs)} "
            f"| {len(asked)} | {sum(r.eu_whole for r in asked)} | {sum(r.cc_whole for r in asked)} |"
        )
    asked = [r for r in results if r.expect]
    lines.append(
        f"| **all** | {len(results)} | {sum(r.eu_named for r in results)} "
        f"| {sum(r.cc_named for r in results)} | {len(asked)} | {sum(r.eu_whole for r in asked)} "
        f"| {sum(r.cc_whole for r in asked)} |"
    )
    return "\n".join(lines)


def detail(results: list[Result]) -> str:
    lines = [
        "| core | arch | asks | eu-stack named / whole | corecensus named / whole | status |",
        "|---|---|---|---|---|---|",
    ]
    yn = {True: "yes", False: "no"}
    for r in results:
        asks = ", ".join(r.expect) or "-"
        eu = yn[r.eu_named] + (" / " + yn[r.eu_whole] if r.expect else "")
        cc = yn[r.cc_named] + (" / " + yn[r.cc_whole] if r.expect else "")
        lines.append(f"| {r.core} | {r.arch} | {asks} | {eu} | {cc} | {r.cc_status} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if shutil.which("eu-stack") is None:
        print("eu-stack not found (apt-get install elfutils)", file=sys.stderr)
        return 2
    results = run()
    version = subprocess.run(
        ["eu-stack", "--version"], capture_output=True, text=True, check=False
    ).stdout.splitlines()[0]
    table = render(results)
    print(table)
    if not args.no_write:
        OUT.write_text(
            "# corecensus next to eu-stack on public test cores\n\n"
            f"`python bench/public_cores_bench.py`; peer: {version}. Cores: tests/data/public "
            '(elfutils and LLDB test suites). "Frames named": cores where the tool names at '
            'least one frame. "Whole": cores whose upstream test asks a backtrace to name '
            "given functions (manifest `expect`), where the tool names all of them.\n\n"
            f"{table}\n\n## Per core\n\n{detail(results)}\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
