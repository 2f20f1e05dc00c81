"""Hostile compressed streams and hostile note counts (issue 10): decoder memory caps, damage in
the middle of a stream always reported, and notes whose counts would cost gigabytes kept to a
cap with the truncation recorded. Peak memory per input is measured in
bench/hostile_bench.py; these tests assert on the record."""

from __future__ import annotations

import lzma
import random
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import lz4.frame
import pytest
from coretools import notes, phdrs

from corecensus.coredump import inspect_core
from corecensus.coredump.notes import MAX_FILE_MAPPINGS_KEPT
from corecensus.coredump.parse import MAX_MODULES, MAX_THREADS_KEPT, parse_core
from corecensus.coredump.source import open_core
from corecensus.model import ParseStatus
from crashers import CrashResult

pytestmark = pytest.mark.kernel_cores

NT_PRSTATUS = 1
NT_FILE = 0x46494C45


@pytest.fixture()
def core_bytes(kernel_cores: dict[str, CrashResult]) -> bytes:
    core = kernel_cores["null_deref"].core
    assert core is not None
    return core.read_bytes()


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_zstd_long31_window_is_refused(tmp_path: Path, core_bytes: bytes) -> None:
    """`zstd --long=31` from a pipe declares a 2 GiB window (2.2 GB of RSS to decode a 537 KB
    file before the cap): the record is unparsed and says why."""
    if shutil.which("zstd") is None:
        pytest.skip("the zstd command is not installed (./dev installs it)")
    made = subprocess.run(
        ["zstd", "--long=31", "-q", "-c"], input=core_bytes, capture_output=True, check=True
    )
    rec = inspect_core(_write(tmp_path, "long31.zst", made.stdout), symbolize=False)
    assert rec.status is ParseStatus.UNPARSED
    assert "needs more decoder memory than the 128 MiB cap" in rec.errors[0]


def test_zstd_default_window_is_read(tmp_path: Path, core_bytes: bytes) -> None:
    """The cap must not fire on what systemd-coredump and `zstd` write by default."""
    if shutil.which("zstd") is None:
        pytest.skip("the zstd command is not installed (./dev installs it)")
    made = subprocess.run(["zstd", "-q", "-c"], input=core_bytes, capture_output=True, check=True)
    rec = inspect_core(_write(tmp_path, "plain.zst", made.stdout), symbolize=False)
    assert rec.status is ParseStatus.OK, rec.errors


def _xz_with_dictionary(data: bytes, props_byte: int) -> bytes:
    """An .xz of ``data`` whose LZMA2 filter claims the dictionary size ``props_byte`` encodes
    (xz file format 1.1.0, section 5.3.1: 39 is 3 GiB, 40 is 4 GiB - 1); the block header's
    CRC32 is recomputed. The data is compressed with a 1 MiB dictionary, so only the decoder's
    allocation, not the content, needs the big one: the shape of a hostile header."""
    xz = bytearray(
        lzma.compress(
            data, format=lzma.FORMAT_XZ, filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 20}]
        )
    )
    block = 12  # stream header
    size = (xz[block] + 1) * 4
    header = xz[block : block + size]
    # Block flags byte 1, then one filter: ID 0x21 (LZMA2), properties size 1, properties.
    at = header.index(b"\x21\x01", 2) + 2
    header[at] = props_byte
    struct.pack_into("<I", header, size - 4, zlib.crc32(bytes(header[: size - 4])))
    xz[block : block + size] = header
    return bytes(xz)


def test_xz_3gib_dictionary_is_refused(tmp_path: Path, core_bytes: bytes) -> None:
    rec = inspect_core(
        _write(tmp_path, "dict.xz", _xz_with_dictionary(core_bytes, 39)), symbolize=False
    )
    assert rec.status is ParseStatus.UNPARSED
    assert "needs more decoder memory than the 256 MiB cap" in rec.errors[0]
    # The same core with the dictionary it was made with is read (the rule must not fire).
    fine = inspect_core(
        _write(tmp_path, "fine.xz", _xz_with_dictionary(core_bytes, 20)), symbolize=False
    )
    assert fine.status is ParseStatus.OK, fine.errors


def test_lz4_corrupt_mid_stream_is_partial_with_the_damage(
    tmp_path: Path, core_bytes: bytes
) -> None:
    """Bytes of an lz4 core overwritten half-way (small blocks, so the head decodes): once `ok`
    with no error and an empty stack window; now partial, saying where the stream broke."""
    comp = bytearray(
        lz4.frame.compress(
            core_bytes, block_size=lz4.frame.BLOCKSIZE_MAX64KB, content_checksum=True
        )
    )
    mid = len(comp) // 2
    comp[mid : mid + 64] = random.Random(64).randbytes(64)
    rec = inspect_core(_write(tmp_path, "corrupt.lz4", bytes(comp)), symbolize=False)
    assert rec.status is ParseStatus.PARTIAL
    assert rec.signal_name == "SIGSEGV" and rec.registers
    assert any(e.startswith("lz4 stream unreadable after ") for e in rec.errors), rec.errors


def test_truncated_lz4_is_partial_like_xz_and_zstd(tmp_path: Path, core_bytes: bytes) -> None:
    """Cut to half, an lz4 core of 64 KiB blocks keeps its head (registers, signal) and says
    the stream ended early, as truncated xz and zstd cores do."""
    comp = lz4.frame.compress(core_bytes, block_size=lz4.frame.BLOCKSIZE_MAX64KB)
    xz = lzma.compress(core_bytes)
    for name, data in (("half.lz4", comp), ("half.xz", xz)):
        rec = inspect_core(_write(tmp_path, name, data[: len(data) // 2]), symbolize=False)
        assert rec.status is ParseStatus.PARTIAL, (name, rec.errors)
        assert rec.signal_name == "SIGSEGV", name
        assert any("unreadable after" in e for e in rec.errors), (name, rec.errors)


def _with_notes(core: bytes, replace: dict[int, bytes], extra: bytes = b"") -> bytes:
    """The core with its notes rewritten at the end of the file: notes of a type in ``replace``
    become that note (first one only, others of the type dropped), ``extra`` (whole notes)
    follows; the PT_NOTE header points at the new place. Nothing else moves."""
    out = bytearray(core)
    kept = bytearray()
    done: set[int] = set()
    for n in notes(core):
        if n.type in replace:
            if n.type not in done:
                kept += replace[n.type]
                done.add(n.type)
            continue
        end = (n.desc_offset + n.descsz + 3) & ~3
        kept += core[n.header_offset : end]
    kept += extra
    note_ph = next(p for p in phdrs(core) if p[1] == 4)
    new_offset = (len(out) + 4095) & ~4095
    out += bytes(new_offset - len(out))
    out += kept
    struct.pack_into(
        "<QQQQ", out, note_ph[0] + 8, new_offset, 0, 0, len(kept)
    )  # offset, vaddr, paddr, filesz
    struct.pack_into("<Q", out, note_ph[0] + 40, len(kept))  # memsz
    return bytes(out)


def _note(ntype: int, name: bytes, desc: bytes) -> bytes:
    name0 = name + b"\0"
    pad = lambda b: b + bytes(-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name0), len(desc), ntype) + pad(name0) + pad(desc)


def test_nt_file_with_a_million_entries_is_capped(tmp_path: Path, core_bytes: bytes) -> None:
    """1,048,575 NT_FILE entries, each its own file (36 MB, 2.0 GB and 49 s before): the first
    65,536 mappings and 4,096 modules are kept, the record says so and is partial."""
    count = (1 << 20) - 1
    table = bytearray(struct.pack("<QQ", count, 4096))
    base = 0x7F00_0000_0000
    table += b"".join(
        struct.pack("<QQQ", base + i * 0x2000, base + i * 0x2000 + 0x1000, 0) for i in range(count)
    )
    names = b"".join(b"/usr/lib/x%07d.so\0" % i for i in range(count))
    file_note = _note(NT_FILE, b"CORE", bytes(table) + names)
    core = _write(tmp_path, "many-files", _with_notes(core_bytes, {NT_FILE: file_note}))
    assert core.stat().st_size > 30 << 20
    rec = inspect_core(core, symbolize=False)
    assert rec.status is ParseStatus.PARTIAL
    assert f"NT_FILE lists {count} mappings; kept the first {MAX_FILE_MAPPINGS_KEPT}" in rec.errors
    assert len(rec.modules) == MAX_MODULES
    assert f"{MAX_FILE_MAPPINGS_KEPT} mapped files; kept {MAX_MODULES} as modules" in rec.errors
    assert rec.signal_name == "SIGSEGV" and rec.registers["rip"]


def test_a_hundred_thousand_threads_are_counted_not_decoded(
    tmp_path: Path, core_bytes: bytes
) -> None:
    """100,000 NT_PRSTATUS notes: registers are decoded for the first 4,096 only (the crashed
    thread is the first, and the record keeps no other thread's registers), so the record is
    whole: the exact thread count, the crashed thread's registers, status ok."""
    prstatus = next(n for n in notes(core_bytes) if n.type == NT_PRSTATUS)
    one = core_bytes[prstatus.header_offset : (prstatus.desc_offset + prstatus.descsz + 3) & ~3]
    original = sum(1 for n in notes(core_bytes) if n.type == NT_PRSTATUS)
    extra = 100_000
    core = _write(tmp_path, "many-threads", _with_notes(core_bytes, {}, one * extra))
    src = open_core(core)
    try:
        parsed = parse_core(src)
        assert len(parsed.threads) == MAX_THREADS_KEPT
        assert parsed.thread_count == original + extra
    finally:
        src.close()
    rec = inspect_core(core, symbolize=False)
    assert rec.threads == original + extra
    assert rec.status is ParseStatus.OK, rec.errors
    assert rec.signal_name == "SIGSEGV" and rec.registers["rip"]


def test_corrupt_nt_file_is_not_ok(tmp_path: Path, core_bytes: bytes) -> None:
    """An NT_FILE that claims more entries than it holds: the modules are unknown, so the record
    is partial (it was `ok`)."""
    loc = next(n for n in notes(core_bytes) if n.type == NT_FILE)
    data = bytearray(core_bytes)
    struct.pack_into("<Q", data, loc.desc_offset, 1 << 19)
    rec = inspect_core(_write(tmp_path, "bad-file-note", bytes(data)), symbolize=False)
    assert rec.status is ParseStatus.PARTIAL
    assert any("NT_FILE claims" in e for e in rec.errors)
    whole = inspect_core(_write(tmp_path, "whole", core_bytes), symbolize=False)
    assert whole.status is ParseStatus.OK, whole.errors
