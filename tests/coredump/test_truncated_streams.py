"""Compressed kernel cores cut short (issue 10): the readable start is read and the record says
where the stream broke, whatever the compressor and wherever the cut.

lz4's frame decoder hands out a block only once it is whole, and the `lz4` command writes 4 MiB
blocks, so a core cut inside its first block was `unparsed`; zstd's stream reader ended quietly
at a cut, so a truncated zstd core read as a shorter core with no word of the damage, or as an
"empty file". Each core here is a real kernel core compressed by the real `lz4`, `zstd` and `xz`
commands (python-lz4 for a linked-block frame), cut at points chosen from its own frame layout.
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
from pathlib import Path

import lz4.frame
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corecensus.coredump import inspect_core
from corecensus.coredump.lz4stream import decode_block_prefix
from corecensus.coredump.source import open_core
from corecensus.errors import CompressionError
from corecensus.model import ParseStatus
from crashers import CrashResult

pytestmark = pytest.mark.kernel_cores


@pytest.fixture()
def core_bytes(kernel_cores: dict[str, CrashResult]) -> bytes:
    core = kernel_cores["null_deref"].core
    assert core is not None
    return core.read_bytes()


def _compress(tool: list[str], data: bytes) -> bytes:
    if shutil.which(tool[0]) is None:
        pytest.skip(f"the {tool[0]} command is not installed (./dev installs it)")
    return subprocess.run([*tool, "-q", "-c"], input=data, capture_output=True, check=True).stdout


def _lz4_blocks(frame: bytes) -> list[tuple[int, int]]:
    """(offset, size) of each data block of a one-frame lz4 file (lz4_Frame_format.md)."""
    flg = frame[4]
    at = 4 + 2 + (8 if flg & 0x08 else 0) + (4 if flg & 0x01 else 0) + 1
    blocks = []
    while True:
        (word,) = struct.unpack_from("<I", frame, at)
        if word == 0:
            return blocks
        size = word & 0x7FFFFFFF
        blocks.append((at + 4, size))
        at += 4 + size + (4 if flg & 0x10 else 0)


def _decoded_prefix(data: bytes, name: str, tmp_path: Path) -> bytes:
    """Every byte the core source yields of a (cut) compressed core, read forward."""
    path = tmp_path / name
    path.write_bytes(data)
    src = open_core(path)
    try:
        out = bytearray()
        while chunk := src.pread(len(out), 1 << 16):
            out += chunk
        return bytes(out)
    finally:
        src.close()


def _inspect(tmp_path: Path, name: str, data: bytes):  # type: ignore[no-untyped-def]
    path = tmp_path / name
    path.write_bytes(data)
    return inspect_core(path, symbolize=False)


def test_lz4_cli_core_cut_inside_its_one_block_is_partial(
    tmp_path: Path, core_bytes: bytes
) -> None:
    """The `lz4` command's default 4 MiB block holds the whole core: cut anywhere past the
    ELF head, the complete sequences are read (an exact prefix of the core), the record is
    partial with signal and registers, and it names the block the input ends inside."""
    comp = _compress(["lz4"], core_bytes)
    blocks = _lz4_blocks(comp)
    assert len(blocks) == 1, "the core no longer fits one 4 MiB block; the test needs one"
    start, size = blocks[0]
    for cut in (start + size // 4, start + size // 2, start + size - 1):
        got = _decoded_prefix(comp[:cut], f"cut{cut}.lz4", tmp_path)
        assert len(got) > 4096 and core_bytes.startswith(got), cut
        rec = _inspect(tmp_path, f"rec{cut}.lz4", comp[:cut])
        assert rec.status is ParseStatus.PARTIAL, (cut, rec.errors)
        assert rec.signal_name == "SIGSEGV" and rec.registers["rip"], cut
        damage = [e for e in rec.errors if e.startswith("lz4 stream unreadable after ")]
        assert damage and "inside block 1 (compressed offset 11" in damage[0], rec.errors


def test_lz4_cut_inside_the_frame_header_is_unparsed_and_says_truncated(
    tmp_path: Path, core_bytes: bytes
) -> None:
    comp = _compress(["lz4"], core_bytes)
    for cut in (5, 6, 10):
        rec = _inspect(tmp_path, f"head{cut}.lz4", comp[:cut])
        assert rec.status is ParseStatus.UNPARSED
        assert rec.errors[0].endswith(
            "truncated lz4 stream: it ends before any of the core decodes "
            "(Compressed file ended before the end-of-stream marker was reached)"
        ), rec.errors


def test_lz4_cut_between_and_inside_later_blocks(tmp_path: Path, core_bytes: bytes) -> None:
    """64 KiB blocks (`lz4 -B4`, independent; and linked blocks from python-lz4, whose matches
    reach back into the block before): cut exactly between two blocks the core reads up to the
    boundary; cut inside a block it reads past the boundary, and every byte is the core's."""
    independent = _compress(["lz4", "-B4"], core_bytes)
    linked = lz4.frame.compress(
        core_bytes, block_size=lz4.frame.BLOCKSIZE_MAX64KB, block_linked=True
    )
    for kind, comp in (("independent", independent), ("linked", linked)):
        blocks = _lz4_blocks(comp)
        assert len(blocks) >= 3, kind
        (_s1, _z1), (s2, z2) = blocks[0], blocks[1]
        between = s2 - 4  # the second block's size word is not there
        got = _decoded_prefix(comp[:between], f"between-{kind}.lz4", tmp_path)
        assert got == core_bytes[: 64 << 10], kind
        inside = s2 + z2 // 2
        got = _decoded_prefix(comp[:inside], f"inside-{kind}.lz4", tmp_path)
        assert len(got) > 64 << 10 and core_bytes.startswith(got), kind
        rec = _inspect(tmp_path, f"rec-{kind}.lz4", comp[:inside])
        assert rec.status is ParseStatus.PARTIAL, (kind, rec.errors)
        assert any(f"after {len(got)} decompressed bytes" in e for e in rec.errors), rec.errors
        assert any("inside block 2" in e for e in rec.errors), rec.errors


def test_lz4_cut_read_from_stdin(core_bytes: bytes) -> None:
    """From a pipe the frames are walked through the spool (no seeking): same prefix."""
    comp = _compress(["lz4"], core_bytes)
    cut = comp[: len(comp) // 2]
    src = open_core("-", stdin=io.BytesIO(cut))
    try:
        got = src.pread(0, len(core_bytes))
    finally:
        src.close()
    assert len(got) > 4096 and core_bytes.startswith(got)
    assert src.damage is not None and "inside block 1" in src.damage


def _zstd_first_block(frame: bytes) -> tuple[int, int, int]:
    """(offset of its contents, size, block type) of the first block of a zstd frame
    (RFC 8878 3.1.1)."""
    fhd = frame[4]
    single_segment = bool(fhd & 0x20)
    fcs = (0, 2, 4, 8)[fhd >> 6] or (1 if single_segment else 0)
    at = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[fhd & 3] + fcs
    word = frame[at] | frame[at + 1] << 8 | frame[at + 2] << 16
    return at + 3, word >> 3, (word >> 1) & 3


def test_zstd_cut_is_reported_as_damage(tmp_path: Path, core_bytes: bytes) -> None:
    """zstd's reader ends quietly at a cut: inside the first block the record was an "empty
    file", further on a shorter core with no decoder damage. Now: truncated, and where."""
    comp = _compress(["zstd", "-B65536"], core_bytes)
    early = _inspect(tmp_path, "early.zst", comp[:200])
    assert early.status is ParseStatus.UNPARSED
    assert "truncated zstd stream: it ends inside its first block" in early.errors[0]
    late = _inspect(tmp_path, "late.zst", comp[: len(comp) * 3 // 4])
    assert late.status is ParseStatus.PARTIAL, late.errors
    assert late.signal_name == "SIGSEGV"
    assert any(
        e.startswith("zstd stream unreadable after ") and "of frame 1" in e for e in late.errors
    ), late.errors
    # The whole file, and two whole frames one after the other, are read with no damage.
    whole = _inspect(tmp_path, "whole.zst", comp)
    assert whole.status is ParseStatus.OK, whole.errors
    half = len(core_bytes) // 2
    two = _compress(["zstd"], core_bytes[:half]) + _compress(["zstd"], core_bytes[half:])
    assert _decoded_prefix(two, "two.zst", tmp_path) == core_bytes


def test_a_zstd_core_cut_inside_its_first_block_has_nothing_decodable_and_says_so(
    tmp_path: Path, core_bytes: bytes
) -> None:
    """A compressed zstd block cannot be decoded in part. Checked on zstandard's own streaming
    decompressor, fed the core cut anywhere inside its first block: it returns nothing (and
    the whole block once it is whole). The record says exactly that, in one line, with how much
    of the block is there; a cut inside the frame's header says that instead."""
    import zstandard

    comp = _compress(["zstd"], core_bytes)
    start, size, kind = _zstd_first_block(comp)
    assert kind == 2, "the core's first block is not compressed; the test needs it to be"
    for cut in (start, start + size // 3, start + size - 1):
        assert zstandard.ZstdDecompressor().decompressobj().decompress(comp[:cut]) == b"", cut
        rec = _inspect(tmp_path, f"first{cut}.zst", comp[:cut])
        assert rec.status is ParseStatus.UNPARSED, rec.errors
        assert list(rec.errors) == [
            f"{tmp_path / f'first{cut}.zst'}: truncated zstd stream: it ends inside its first "
            f"block ({cut - start:,} of the block's {size:,} compressed bytes, which hold up to "
            "128 KiB of the core); a compressed zstd block cannot be decoded in part, so "
            "nothing is decodable"
        ]
    whole = zstandard.ZstdDecompressor().decompressobj().decompress(comp[: start + size])
    assert len(whole) == 128 << 10 and core_bytes.startswith(whole)
    rec = _inspect(tmp_path, "header.zst", comp[:5])
    assert rec.status is ParseStatus.UNPARSED
    assert rec.errors[0].endswith(
        "truncated zstd stream: it ends before any of the core decodes (input ends inside the "
        "header of frame 1 (compressed offset 0))"
    ), rec.errors


def test_a_zstd_core_of_raw_blocks_cut_inside_its_first_is_not_said_to_be_undecodable(
    tmp_path: Path, core_bytes: bytes
) -> None:
    """A raw (stored) block is decoded in part by libzstd (zstandard's decompressobj returns
    every byte of it that is there), so "nothing is decodable" is not said of one: the record
    is partial, with the damage. A frame of raw blocks made by hand (RFC 8878 3.1.1.2), valid
    for the zstd command."""
    import zstandard

    block = 128 << 10
    frame = bytearray(struct.pack("<I", 0xFD2FB528) + bytes([0x00, 7 << 3]))  # 128 KiB window
    for at in range(0, len(core_bytes), block):
        chunk = core_bytes[at : at + block]
        word = (len(chunk) << 3) | (at + block >= len(core_bytes))
        frame += struct.pack("<I", word)[:3] + chunk
    assert zstandard.ZstdDecompressor().decompress(bytes(frame), max_output_size=1 << 30) == (
        core_bytes
    )
    cut = bytes(frame[: 6 + 3 + 100_000])
    assert zstandard.ZstdDecompressor().decompressobj().decompress(cut) == core_bytes[:100_000]
    rec = _inspect(tmp_path, "raw.zst", cut)
    assert rec.status is ParseStatus.PARTIAL, rec.errors
    damage = [e for e in rec.errors if e.startswith("zstd stream unreadable after ")]
    assert damage and "inside block 1 of frame 1" in damage[0], rec.errors
    assert not any("nothing is decodable" in e for e in rec.errors)


@pytest.mark.parametrize("tool", [["lz4"], ["lz4", "-B4", "-BD"], ["zstd"], ["xz"]], ids="_".join)
def test_every_compressor_cut_past_its_first_block_is_partial(
    tmp_path: Path, core_bytes: bytes, tool: list[str]
) -> None:
    """Three quarters of the file: past zstd's first 128 KiB block (a zstd block cannot be read
    in part: its sequences are decoded from the end of their bitstream), inside lz4's."""
    comp = _compress(tool, core_bytes)
    rec = _inspect(tmp_path, "cut", comp[: len(comp) * 3 // 4])
    assert rec.status is ParseStatus.PARTIAL, (tool, rec.errors)
    assert rec.signal_name == "SIGSEGV", tool
    assert any(" stream unreadable after " in e for e in rec.errors), (tool, rec.errors)


def test_block_decoder_stops_at_what_is_not_data() -> None:
    """Hand-made blocks (lz4_Block_format.md) for what a real encoder never writes: an offset
    of zero or before the start, and a match run claiming more than the block may hold."""
    # 4 literals "abcd", then a match of 4 at offset 4: "abcdabcd"; then the cut.
    assert decode_block_prefix(b"\x40abcd\x04\x00", b"", 1 << 16) == b"abcdabcd"
    # The same with an overlapping match (offset 1, length 4+3): a run of one byte.
    assert decode_block_prefix(b"\x13z\x01\x00", b"", 1 << 16) == b"zzzzzzzz"
    # A match into the history (offset 2 reaches the last two bytes before the block).
    assert decode_block_prefix(b"\x00\x02\x00", b"xyQR", 1 << 16) == b"QRQR"
    # Offset zero, and an offset past everything decoded: decoding stops before the match.
    assert decode_block_prefix(b"\x40abcd\x00\x00", b"", 1 << 16) == b"abcd"
    assert decode_block_prefix(b"\x40abcd\x09\x00", b"", 1 << 16) == b"abcd"
    # A match length of 15 + 255 * 1000 + ... against a 64 KiB block cap: stops at the cap.
    bomb = b"\x1fz\x01\x00" + b"\xff" * 1000 + b"\x00"
    assert decode_block_prefix(bomb, b"", 1 << 16) == b"z"
    # Literals cut short: the ones that arrived are kept.
    assert decode_block_prefix(b"\x50abc", b"", 1 << 16) == b"abc"


def test_a_core_cut_before_its_notes_is_not_said_to_be_from_qemu(
    tmp_path: Path, core_bytes: bytes
) -> None:
    """qemu-user is recognised by what its cores lack (NT_FILE, NT_SIGINFO); a kernel core cut
    before or inside its notes lacks them too and was "written by qemu-user". A real qemu-user
    core is still recognised whole, and is "unknown" when cut the same way."""
    import zstandard

    qemu_zst = Path(__file__).parents[1] / "data/multiarch/aarch64/core-qemu.zst"
    qemu = zstandard.ZstdDecompressor().decompress(qemu_zst.read_bytes(), max_output_size=1 << 30)
    whole = _inspect(tmp_path, "qemu-core", qemu)
    assert whole.writer == "qemu-user", whole.errors
    for name, data in (("kernel", core_bytes), ("qemu", qemu)):
        for cut in (100, 1000):
            rec = _inspect(tmp_path, f"{name}-{cut}", data[:cut])
            assert rec.status is ParseStatus.PARTIAL, (name, cut, rec.errors)
            assert rec.writer == "unknown", (name, cut, rec.writer)
    assert _inspect(tmp_path, "kernel-whole", core_bytes).writer == "kernel"


class _Cores(dict[str, tuple[bytes, bytes]]):
    def __repr__(self) -> str:  # hypothesis prints the arguments of a failing example
        return f"<{len(self)} compressed cores>"


@pytest.fixture(scope="module")
def compressed(kernel_cores: dict[str, CrashResult]) -> dict[str, tuple[bytes, bytes]]:
    """(core, compressed core) per compressor: the lz4 command's 4 MiB block, linked 64 KiB
    lz4 blocks with block checksums, zstd."""
    core = kernel_cores["null_deref"].core
    assert core is not None
    raw = core.read_bytes()
    return _Cores(
        {
            "lz4": (raw, _compress(["lz4"], raw)),
            "lz4-linked": (raw, _compress(["lz4", "-B4", "-BD", "-BX"], raw)),
            "zstd": (raw, _compress(["zstd"], raw)),
        }
    )


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(["lz4", "lz4-linked", "zstd"]), fraction=st.floats(0.0, 1.0))
def test_any_cut_reads_an_exact_prefix_and_says_so(
    compressed: dict[str, tuple[bytes, bytes]],
    tmp_path_factory: pytest.TempPathFactory,
    kind: str,
    fraction: float,
) -> None:
    """Wherever a compressed core is cut, what is read is the core's own first bytes (never a
    byte of anything else), and a cut short of the end is reported: damage on the source, or an
    error when nothing at all could be decoded."""
    raw, comp = compressed[kind]
    cut = int(len(comp) * fraction)
    path = tmp_path_factory.mktemp("cut") / f"cut.{kind}"
    path.write_bytes(comp[:cut])
    src = open_core(path)
    if src.compression is None:  # too short to carry the magic number: read as a plain file
        src.close()
        assert cut < 4
        return
    got = bytearray()
    try:
        while chunk := src.pread(len(got), 1 << 16):
            got += chunk
    except CompressionError:
        assert not got and cut < len(comp)
        return
    finally:
        src.close()
    assert raw.startswith(got), (kind, cut, len(got))
    if cut < len(comp):
        assert src.damage is not None, (kind, cut)
    else:
        assert bytes(got) == raw and src.damage is None
