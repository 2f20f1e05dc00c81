"""Peak memory and time per hostile input (issue 10), not a test: prints one table.

Each hostile input is made here from a real kernel core (bench/_core crashers) and run through
the command a user would run (``inspect --json --no-symbols``, or ``ingest`` for inputs that live
beside cores), in its own process under the bench's small launcher, which reports the child's own
peak RSS (see bench/_core/crashers.py for why not ``ru_maxrss`` of a Python child). The peer is
the same command on the unmodified core: the ratio says how much more a hostile input costs
than an ordinary one. The target is a peak of at most 500 MB for any single input.

Usage: python bench/hostile_bench.py [--out docs/bench_hostile.md]
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lz4.frame
import zstandard

from _core.crashers import CRASHERS, build_launcher, check_core_pattern, make_core, run_measured

ROOT = Path(__file__).resolve().parents[1]
TARGET_MB = 500.0
NT_PRSTATUS = 1
NT_FILE = 0x46494C45


def _phdrs(data: bytes) -> list[tuple[int, int, int, int, int]]:
    """(entry offset, p_type, p_offset, p_vaddr, p_filesz) of a 64-bit little-endian core."""
    (phoff,) = struct.unpack_from("<Q", data, 32)
    (phentsize, phnum) = struct.unpack_from("<HH", data, 54)
    out = []
    for i in range(phnum):
        at = phoff + i * phentsize
        ptype, _flags, poff, vaddr, _pa, filesz = struct.unpack_from("<IIQQQQ", data, at)
        out.append((at, ptype, poff, vaddr, filesz))
    return out


def _notes(data: bytes) -> list[tuple[int, int, int]]:
    """(note start, note end, type) of every note."""
    out = []
    for _at, ptype, poff, _v, filesz in _phdrs(data):
        if ptype != 4:
            continue
        pos = poff
        while pos + 12 <= poff + filesz:
            namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
            desc = pos + 12 + ((namesz + 3) & ~3)
            end = (desc + descsz + 3) & ~3
            out.append((pos, end, ntype))
            pos = end
    return out


def _note(ntype: int, desc: bytes) -> bytes:
    return struct.pack("<III", 5, len(desc), ntype) + b"CORE\0\0\0\0" + desc + bytes(-len(desc) % 4)


def _renoted(core: bytes, drop: int | None, extra: bytes) -> bytes:
    """The core with its notes moved to the end of the file, notes of type ``drop`` removed and
    ``extra`` appended; the PT_NOTE header is pointed at them."""
    kept = b"".join(core[s:e] for s, e, t in _notes(core) if t != drop) + extra
    note_ph = next(p for p in _phdrs(core) if p[1] == 4)
    at = (len(core) + 4095) & ~4095
    out = bytearray(core) + bytes(at - len(core)) + kept
    struct.pack_into("<QQQQQ", out, note_ph[0] + 8, at, 0, 0, len(kept), len(kept))
    return bytes(out)


def nt_file_million(core: bytes, d: Path) -> Path:
    count = (1 << 20) - 1
    base = 0x7F00_0000_0000
    table = struct.pack("<QQ", count, 4096) + b"".join(
        struct.pack("<QQQ", base + i * 0x2000, base + i * 0x2000 + 0x1000, 0) for i in range(count)
    )
    names = b"".join(b"/usr/lib/x%07d.so\0" % i for i in range(count))
    p = d / "nt-file-1048575"
    p.write_bytes(_renoted(core, NT_FILE, _note(NT_FILE, table + names)))
    return p


def threads_100k(core: bytes, d: Path) -> Path:
    s, e, _t = next(n for n in _notes(core) if n[2] == NT_PRSTATUS)
    p = d / "threads-100000"
    p.write_bytes(_renoted(core, None, core[s:e] * 100_000))
    return p


def zstd_long31(core: bytes, d: Path) -> Path:
    made = subprocess.run(
        ["zstd", "--long=31", "-q", "-c"], input=core, capture_output=True, check=True
    )
    p = d / "long31.zst"
    p.write_bytes(made.stdout)
    return p


def xz_3gib_dictionary(core: bytes, d: Path) -> Path:
    xz = bytearray(lzma.compress(core, filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 20}]))
    size = (xz[12] + 1) * 4
    header = xz[12 : 12 + size]
    header[header.index(b"\x21\x01", 2) + 2] = 39  # LZMA2 dictionary: 3 GiB
    struct.pack_into("<I", header, size - 4, zlib.crc32(bytes(header[: size - 4])))
    xz[12 : 12 + size] = header
    p = d / "dict-3gib.xz"
    p.write_bytes(bytes(xz))
    return p


def zstd_bomb(core: bytes, d: Path) -> Path:
    comp = zstandard.ZstdCompressor(level=1).compressobj()
    p = d / "bomb.zst"
    p.write_bytes(b"".join(comp.compress(bytes(1 << 20)) for _ in range(1024)) + comp.flush())
    return p


def lz4_corrupt(core: bytes, d: Path) -> Path:
    # content_checksum: as the lz4 command writes by default.
    comp = bytearray(
        lz4.frame.compress(core, block_size=lz4.frame.BLOCKSIZE_MAX64KB, content_checksum=True)
    )
    mid = len(comp) // 2
    comp[mid : mid + 64] = random.Random(64).randbytes(64)
    p = d / "corrupt.lz4"
    p.write_bytes(bytes(comp))
    return p


def lz4_cli_cut(core: bytes, d: Path) -> Path:
    # The lz4 command's default 4 MiB block holds the whole core; cut it inside that block.
    made = subprocess.run(["lz4", "-q", "-c"], input=core, capture_output=True, check=True)
    p = d / "cut.lz4"
    p.write_bytes(made.stdout[: len(made.stdout) // 2])
    return p


def lz4_minimal_sequences(core: bytes, d: Path) -> Path:
    # The partial-block decoder's worst case: a 4 MiB block cut short, made of 3-byte sequences
    # that each add 4 bytes (a million of them reach the 4 MiB cap), after the core head as
    # literals.
    head = core[:4096]
    block = bytes([0xF0]) + _lz4_length(len(head) - 15) + head + b"\x01\x00"
    block += b"\x00\x01\x00" * 1_350_000
    frame = b"\x04\x22\x4d\x18" + bytes([0x60, 0x70, 0x73])  # 4 MiB independent blocks
    p = d / "minimal-sequences.lz4"
    p.write_bytes(frame + struct.pack("<I", (4 << 20) - 1) + block)
    return p


def _lz4_length(extra: int) -> bytes:
    return b"\xff" * (extra // 255) + bytes([extra % 255])


def zstd_cut(core: bytes, d: Path) -> Path:
    made = subprocess.run(["zstd", "-q", "-c"], input=core, capture_output=True, check=True)
    p = d / "cut.zst"
    p.write_bytes(made.stdout[: len(made.stdout) * 3 // 4])
    return p


def sparse_100gb(core: bytes, d: Path) -> Path:
    p = d / "sparse-100g"
    p.write_bytes(core)
    os.truncate(p, 100 << 30)
    return p


def _ingest_dir(core: bytes, d: Path, name: str) -> Path:
    cores = d / name
    cores.mkdir()
    (cores / "core.x").write_bytes(core)
    return cores


def sparse_json_2gb(core: bytes, d: Path) -> Path:
    cores = _ingest_dir(core, d, "dir-sparse-json")
    big = cores / "big.json"
    big.write_bytes(b"[")
    os.truncate(big, 2 << 30)
    return cores


def nested_json(core: bytes, d: Path) -> Path:
    cores = _ingest_dir(core, d, "dir-nested-json")
    (cores / "deep.json").write_bytes(b"[" * 500_000 + b"]" * 500_000)
    return cores


def surrogate_sidecar(core: bytes, d: Path) -> Path:
    cores = _ingest_dir(core, d, "dir-surrogate")
    (cores / "core.x.json").write_text('{"COREDUMP_HOSTNAME": "x\\ud800y"}')
    return cores


def sidecar_5000_digits(core: bytes, d: Path) -> Path:
    cores = _ingest_dir(core, d, "dir-5000-digits")
    (cores / "core.x.json").write_text('{"COREDUMP_PID": ' + "1" * 5000 + "}")
    return cores


def journal_200k(core: bytes, d: Path) -> Path:
    # A journal export of 200,000 systemd-coredump entries (143 MB), one of them this core's.
    cores = _ingest_dir(core, d, "dir-journal")
    with (d / "dir-journal.journal").open("w") as f:
        for i in range(200_000):
            entry = {
                "MESSAGE_ID": "fc2e22bc6ee647b6b90729ab34a250b1",
                "COREDUMP_FILENAME": f"/var/lib/systemd/coredump/core.x.0.b{i}.{i}.1700000000000000",
                "COREDUMP_PID": str(i),
                "COREDUMP_HOSTNAME": f"host{i % 100}",
                "COREDUMP_TIMESTAMP": str(1700000000_000000 + i),
                "COREDUMP_EXE": "/usr/bin/x",
                "COREDUMP_CMDLINE": "x --flag " * 10,
                "MESSAGE": "Process crashed " * 20,
            }
            f.write(json.dumps(entry) + "\n")
        f.write(json.dumps({"COREDUMP_FILENAME": "/x/core.x", "COREDUMP_HOSTNAME": "h"}) + "\n")
    return cores


# One line of a busy host's ``journalctl -o json`` (nginx's access log through journald's
# stdout stream), the fields journald adds to every entry; %-fields vary per line.
_NOISE_LINE = json.dumps(  # compact, as journalctl writes it
    {
        "__CURSOR": "s=5f0e1d2c3b4a59687766554433221100;i=%(i)x;b=%(boot)s;m=%(i)x;t=%(t)x;x=%(i)016x",
        "__REALTIME_TIMESTAMP": "%(t)d",
        "__MONOTONIC_TIMESTAMP": "%(i)d",
        "_BOOT_ID": "%(boot)s",
        "_MACHINE_ID": "fedcba98765432100123456789abcdef",
        "_HOSTNAME": "web-17",
        "PRIORITY": "6",
        "SYSLOG_FACILITY": "3",
        "SYSLOG_IDENTIFIER": "nginx",
        "_PID": "%(pid)d",
        "_UID": "33",
        "_GID": "33",
        "_COMM": "nginx",
        "_EXE": "/usr/sbin/nginx",
        "_CMDLINE": "nginx: worker process",
        "_CAP_EFFECTIVE": "0",
        "_SYSTEMD_CGROUP": "/system.slice/nginx.service",
        "_SYSTEMD_UNIT": "nginx.service",
        "_SYSTEMD_SLICE": "system.slice",
        "_SYSTEMD_INVOCATION_ID": "0123456789abcdef0123456789abcdef",
        "_TRANSPORT": "stdout",
        "_STREAM_ID": "89abcdef0123456789abcdef01234567",
        "MESSAGE": '10.0.%(a)d.%(b)d - - [14/Nov/2023:22:13:20 +0000] "GET /api/v1/items?page=%(i)d '
        'HTTP/1.1" 200 5123 "-" "curl/8.4.0"',
    },
    separators=(",", ":"),
)
_BOOT = "0123456789abcdef0123456789abcdef"


def _coredump_line(i: int, name: str, host: str) -> str:
    t = 1_700_000_000_000_000 + i * 1_000_000
    return json.dumps(
        {
            "__REALTIME_TIMESTAMP": str(t + 5000),
            "_BOOT_ID": _BOOT,
            "_HOSTNAME": host,
            "MESSAGE_ID": "fc2e22bc6ee647b6b90729ab34a250b1",
            "MESSAGE": f"Process {i} (x) of user 0 dumped core.",
            "COREDUMP_FILENAME": f"/var/lib/systemd/coredump/{name}",
            "COREDUMP_PID": str(i % 4_000_000 + 1),
            "COREDUMP_SIGNAL": "11",
            "COREDUMP_TIMESTAMP": str(t),
            "COREDUMP_EXE": "/usr/bin/x",
            "COREDUMP_CMDLINE": "x --flag",
        },
        separators=(",", ":"),
    )


def journal_1m_busy_host(core: bytes, d: Path) -> Path:
    # A busy host's export: 1,000,000 entries (about 0.9 GB), one in 100 a systemd-coredump
    # entry of another crash, and this core's entry near the end.
    cores = _ingest_dir(core, d, "dir-journal-1m")
    with (d / "dir-journal-1m.journal").open("w") as f:
        for i in range(1_000_000):
            if i % 100 == 99:
                f.write(_coredump_line(i, f"core.x.0.{_BOOT}.{i}.{i}000000.zst", "other") + "\n")
                continue
            fill = {"i": i, "t": 1_700_000_000_000_000 + i * 10_000, "boot": _BOOT}
            f.write(_NOISE_LINE % {**fill, "pid": 1000 + i % 4, "a": i % 250, "b": i % 199})
            f.write("\n")
        f.write(_coredump_line(1_000_000, "core.x", "the-host") + "\n")
    return cores


def crash_facts_one_line(core: bytes, d: Path) -> Path:
    # A crash-facts CSV whose second line is 200 MB (one field far past the csv module's limit).
    p = d / "one-line.csv"
    with p.open("w") as f:
        f.write("host,time,cpu,service,version,signature\nh,2024-06-01T00:00:00Z,1,s,1,")
        chunk = "A" * (1 << 20)
        for _ in range(200):
            f.write(chunk)
        f.write("\n")
    return p


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[bytes, Path], Path]
    command: str  # "inspect", "ingest" or "analyze" (of crash facts)


CASES = (
    Case("NT_FILE with 1,048,575 entries", nt_file_million, "inspect"),
    Case("100,000 threads", threads_100k, "inspect"),
    Case("zstd --long=31 (2 GiB window)", zstd_long31, "inspect"),
    Case(".xz with a 3 GiB dictionary", xz_3gib_dictionary, "inspect"),
    Case("zstd bomb (1 GiB of zeros)", zstd_bomb, "inspect"),
    Case("lz4 corrupt mid-stream", lz4_corrupt, "inspect"),
    Case("lz4 (command's 4 MiB block) cut at half", lz4_cli_cut, "inspect"),
    Case("lz4 block cut short, 1M 3-byte sequences", lz4_minimal_sequences, "inspect"),
    Case("zstd cut at three quarters", zstd_cut, "inspect"),
    Case("100 GB sparse core", sparse_100gb, "inspect"),
    Case("2 GB sparse .json beside a core", sparse_json_2gb, "ingest"),
    Case(".json nested 500,000 deep", nested_json, "ingest"),
    Case("sidecar with a lone surrogate", surrogate_sidecar, "ingest"),
    Case("sidecar with a 5,000-digit number", sidecar_5000_digits, "ingest"),
    Case("crash-facts CSV with a 200 MB line", crash_facts_one_line, "analyze"),
    Case("journal export of 200,000 entries", journal_200k, "ingest"),
    Case("journal export of 1,000,000 entries (1 % coredump)", journal_1m_busy_host, "ingest"),
)


def _command(kind: str, target: Path, scratch: Path) -> list[str]:
    if kind == "analyze":
        return [sys.executable, "-m", "corecensus", "analyze", "--json", "--crashes", str(target)]
    if kind == "inspect":
        return [
            sys.executable,
            "-m",
            "corecensus",
            "inspect",
            "--json",
            "--no-symbols",
            str(target),
        ]
    db = scratch / f"{target.name}.duckdb"
    db.unlink(missing_ok=True)
    journal = target.with_name(f"{target.name}.journal")  # beside the directory, if made
    extra = ["--journal", str(journal)] if journal.exists() else []
    return [
        sys.executable,
        "-m",
        "corecensus",
        "ingest",
        "--json",
        "--no-symbols",
        "--jobs",
        "1",
        "--db",
        str(db),
        *extra,
        str(target),
    ]


def _stored_hosts(db: Path) -> str:
    """The hosts of the crashes stored in ``db``: what a journal export matched."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return ", ".join(str(h) for (h,) in con.execute("SELECT host FROM crashes").fetchall())
    finally:
        con.close()


def _outcome(kind: str, stdout: str) -> str:
    try:
        doc = json.loads(stdout)
    except json.JSONDecodeError:
        return "refused, one-line error" if kind == "analyze" else "no JSON"
    if kind == "analyze":
        return f"{doc.get('crashes')} crashes analyzed"
    if kind == "inspect":
        return str(doc.get("status"))
    return f"{doc.get('ingested')} stored, {len(doc.get('screen_errors', []))} .json refused"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_hostile.md")
    args = ap.parse_args(argv)
    problem = check_core_pattern()
    if problem:
        print(f"hostile_bench: {problem}", file=sys.stderr)
        return 2
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="hostile-bench-") as tmp:
        work = Path(tmp)
        launcher = build_launcher(work)
        crasher = next(c for c in CRASHERS if c.name == "null_deref")
        core = make_core(crasher, work).path.read_bytes()
        plain = work / "plain-core"
        plain.write_bytes(core)
        peer = {}
        facts = work / "plain-facts.csv"
        facts.write_text(
            "host,time,cpu,service,version,signature\nh,2024-06-01T00:00:00Z,1,s,1,x\n"
        )
        for kind in ("inspect", "ingest", "analyze"):
            target = {"inspect": plain, "analyze": facts}.get(kind) or _ingest_dir(
                core, work, "dir-plain"
            )
            run = run_measured(launcher, _command(kind, target, work), env, work)
            peer[kind] = run.maxrss_kib / 1024
            print(
                f"peer: {kind} of the plain core: {peer[kind]:.0f} MB, {run.wall_s:.2f} s, "
                f"{run.cpu_s:.2f} s CPU"
            )
        rows = []
        for case in CASES:
            target = case.make(core, work)
            run = run_measured(launcher, _command(case.command, target, work), env, work)
            mb = run.maxrss_kib / 1024
            outcome = _outcome(case.command, run.stdout)
            if target.with_name(f"{target.name}.journal").exists():
                outcome += f", host {_stored_hosts(work / f'{target.name}.duckdb')}"
            rows.append(
                (
                    case.name,
                    case.command,
                    mb,
                    mb / peer[case.command],
                    run.wall_s,
                    run.cpu_s,
                    outcome,
                    run.returncode,
                )
            )
            print(
                f"{case.name}: {mb:.0f} MB, {run.wall_s:.2f} s, {run.cpu_s:.2f} s CPU, {outcome}",
                flush=True,
            )
            if target.is_file():
                target.unlink()
    lines = [
        "| hostile input | command | peak RSS (MB) | × plain core | wall (s) | CPU (s) | outcome "
        "| exit |",
        "|---|---|---:|---:|---:|---:|---|---:|",
        *(
            f"| {n} | {c} | {mb:.0f} | {ratio:.2f} | {wall:.2f} | {cpu:.2f} | {out} | {rc} |"
            for n, c, mb, ratio, wall, cpu, out, rc in rows
        ),
    ]
    table = "\n".join(lines)
    worst = max(r[2] for r in rows)
    verdict = f"worst peak {worst:.0f} MB; target <= {TARGET_MB:.0f} MB: {'met' if worst <= TARGET_MB else 'NOT met'}"
    # Wall time on a shared machine says little; CPU seconds and the load say how much.
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = (
        f"1-minute load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    )
    print()
    print(table)
    print(verdict)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        "# Hostile inputs: peak memory per input\n\n"
        "Made by `python bench/hostile_bench.py` (see its docstring). Peer: the same command on "
        f"the unmodified core ({peer['inspect']:.0f} MB for inspect, {peer['ingest']:.0f} MB for "
        f"ingest), and a one-row crash-facts file for analyze ({peer['analyze']:.0f} MB). "
        f"Run {when}, {load}.\n\n" + table + "\n\n" + verdict + "\n"
    )
    return 0 if worst <= TARGET_MB else 1


if __name__ == "__main__":
    raise SystemExit(main())
