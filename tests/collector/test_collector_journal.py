"""The collector's write-ahead journal (collector/journal.py) on real files: frames read back
as written, segments roll and are deleted once applied, a torn tail is cut at open, damage
elsewhere is reported, and a failed append (a file size limit) leaves nothing of itself."""

from __future__ import annotations

import errno
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest
from tests.store.store_records import T0, make_record, rows

from corecensus.app.uploads import UploadRows
from corecensus.collector.journal import (
    Journal,
    JournalError,
    JournalPosition,
    JournalRows,
    decode_rows,
    encode_rows,
    frame_parts,
    journal_rows,
    piece_rows,
    rows_of,
)
from corecensus.ingest.wire import RecordKind
from corecensus.store import HEARTBEATS, Heartbeat


def _payloads(journal: Journal, start: JournalPosition) -> list[bytes]:
    return [p for p, _ in journal.frames(start, 1 << 40) if p]


def test_rows_round_trip_through_a_frame() -> None:
    group = UploadRows(
        crashes=rows([make_record(1), make_record(2)]),
        heartbeats=[Heartbeat("web-1", T0, "svc", "1.0", uptime_s=5, lost='{"x": 1}')],
        screens=[],
    )
    assert decode_rows(encode_rows(group)) == group


def test_a_frame_holds_each_request_s_rows_as_they_were_encoded() -> None:
    """The writer appends the bytes a front end encoded (and the link carried), undecoded:
    each piece's payload is in the frame as it is, and the frame decodes to every piece's
    rows, by kind."""
    crashes = [journal_rows(RecordKind.CRASHES, rows([make_record(i)])) for i in range(20)]
    beats = journal_rows(RecordKind.HEARTBEATS, [Heartbeat("web-1", T0, "svc", "1.0")])
    pieces = [*crashes[:10], beats, *crashes[10:]]
    payload = b"".join(frame_parts(pieces))
    for piece in pieces:
        assert piece.payload in payload
    decoded = decode_rows(payload)
    assert decoded.crashes == [row for piece in crashes for row in piece_rows(piece)]
    assert decoded.heartbeats == piece_rows(beats)
    assert decoded == rows_of(pieces)


def test_a_frame_the_writer_wrote_before_still_loads() -> None:
    """Format 1, each group's rows decoded and encoded again: a journal a collector of the
    previous version left behind (kill -9, then an upgrade) loads the same."""
    group = UploadRows(
        crashes=rows([make_record(1)]),
        heartbeats=[Heartbeat("web-1", T0, "svc", "1.0")],
        screens=[],
    )
    old = msgspec.msgpack.encode((1, list(group.crashes), list(group.heartbeats), []))
    assert decode_rows(old) == group
    with pytest.raises(JournalError, match="format 3"):
        decode_rows(msgspec.msgpack.encode((3, [])))


def test_rows_from_another_process_must_be_as_many_as_their_keys() -> None:
    beat = Heartbeat("web-1", T0, "svc", "1.0")
    sent = journal_rows(RecordKind.HEARTBEATS, [beat, beat])
    # msgpack carries the heartbeats' key tuples as lists; they arrive as tuples again
    keys = msgspec.msgpack.decode(msgspec.msgpack.encode(sent.keys))
    received = JournalRows.received(RecordKind.HEARTBEATS, keys, sent.payload)
    assert received.keys == [HEARTBEATS.key_of(beat)] * 2
    with pytest.raises(JournalError, match="not as many rows"):
        JournalRows.received(RecordKind.HEARTBEATS, keys[:1], sent.payload)
    with pytest.raises(JournalError, match="not as many rows"):
        JournalRows.received(RecordKind.CRASHES, ["a"], b"not msgpack")


def test_a_frame_of_more_parts_than_one_writev_takes_reads_back_whole(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    parts = [b"%d," % i for i in range(3000)]
    journal.append(*parts)
    journal.append(b"next")
    assert _payloads(journal, journal.start) == [b"".join(parts), b"next"]
    journal.close()


def test_the_frames_checksum_is_zlib_s_crc32_so_older_journals_load(tmp_path: Path) -> None:
    """The checksum is computed by zlib-ng, and is zlib's CRC-32 all the same: a segment the
    journal wrote before (zlib.crc32) is read and appended to, and what it writes now carries
    zlib's checksum, of payloads written in parts at every alignment."""
    directory = tmp_path / "j"
    directory.mkdir()
    old = [bytes(range(256)) * 3 + b"old %d" % i for i in range(3)]
    (directory / f"{1:020d}.seg").write_bytes(
        b"".join(struct.pack(">II", len(p), zlib.crc32(p)) + p for p in old)
    )
    journal = Journal(directory)
    assert journal.torn_bytes == 0
    parts = [os.urandom(n) for n in (1, 7, 64, 4093, 65_537, 3)]
    journal.append(*parts)
    journal.close()
    data = (directory / f"{1:020d}.seg").read_bytes()
    at, frames = 0, []
    while at < len(data):
        length, crc = struct.unpack_from(">II", data, at)
        payload = data[at + 8 : at + 8 + length]
        assert crc == zlib.crc32(payload)
        frames.append(payload)
        at += 8 + length
    assert frames == [*old, b"".join(parts)]
    reopened = Journal(directory)
    assert _payloads(reopened, reopened.start) == frames
    reopened.close()


def test_frames_read_back_in_order_across_segments_and_applied_ones_are_deleted(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "j", segment_bytes=100)
    start = journal.end()
    assert start == JournalPosition(1, 0)
    ends = [journal.append(bytes([i]) * 60) for i in range(5)]
    # 68 bytes a frame: a segment takes two (past 100 bytes), then the next begins.
    assert [e.segment for e in ends] == [1, 1, 2, 2, 3]
    assert journal.segments() == [1, 2, 3]
    assert _payloads(journal, start) == [bytes([i]) * 60 for i in range(5)]
    assert journal.bytes_after(start) == 5 * 68
    # Read a little at a time: each position read resumes where the last read ended.
    first = list(journal.frames(start, 1))
    assert [p for p, _ in first] == [bytes([0]) * 60]
    assert _payloads(journal, first[-1][1]) == [bytes([i]) * 60 for i in range(1, 5)]
    journal.release(ends[2])  # the store holds the first three frames
    assert journal.segments() == [2, 3]
    assert sorted(p.name for p in (tmp_path / "j").iterdir()) == [f"{n:020d}.seg" for n in (2, 3)]
    journal.close()
    # Reopened where the store says it applied: the two frames after it, nothing else.
    again = Journal(tmp_path / "j", applied=ends[2], segment_bytes=100)
    assert again.start == ends[2]
    assert _payloads(again, again.start) == [bytes([3]) * 60, bytes([4]) * 60]
    again.close()
    # Everything applied, the last segment deleted by hand: the next frames go to a new one.
    for p in (tmp_path / "j").iterdir():
        p.unlink()
    fresh = Journal(tmp_path / "j", applied=ends[4], segment_bytes=100)
    assert fresh.start == JournalPosition(ends[4].segment + 1, 0)
    assert fresh.append(b"next").segment == ends[4].segment + 1
    fresh.close()


def test_segments_applied_before_a_crash_are_deleted_at_open(tmp_path: Path) -> None:
    """A crash between the store's commit and the deletion leaves applied segments: opening
    at the store's position deletes them and reads none of their frames again."""
    journal = Journal(tmp_path / "j", segment_bytes=10)
    ends = [journal.append(b"frame %d" % i) for i in range(4)]
    journal.close()
    # (each frame fills a segment: the fifth is empty, the next to append to)
    assert [e.segment for e in ends] == [1, 2, 3, 4]
    reopened = Journal(tmp_path / "j", applied=ends[2], segment_bytes=10)
    assert reopened.segments() == [3, 4, 5]
    assert sorted(p.name for p in (tmp_path / "j").iterdir())[0] == f"{3:020d}.seg"
    assert _payloads(reopened, reopened.start) == [b"frame 3"]
    reopened.close()


def test_a_torn_last_frame_is_cut_at_open_and_the_frames_before_it_stay(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.append(b"acknowledged one")
    end = journal.append(b"acknowledged two")
    journal.close()
    segment = tmp_path / "j" / f"{1:020d}.seg"
    whole = segment.read_bytes()
    # A crash in the middle of the third frame's write: its header and half its payload.
    torn = Journal(tmp_path / "tmp")
    torn.append(b"never acknowledged, cut short")
    torn.close()
    partial = (tmp_path / "tmp" / f"{1:020d}.seg").read_bytes()[:20]
    segment.write_bytes(whole + partial)
    reopened = Journal(tmp_path / "j")
    assert reopened.torn_bytes == 20
    assert segment.stat().st_size == len(whole)
    assert reopened.end() == end
    assert _payloads(reopened, reopened.start) == [b"acknowledged one", b"acknowledged two"]
    # Appending goes on after the last whole frame.
    reopened.append(b"three")
    assert _payloads(reopened, reopened.start)[-1] == b"three"
    reopened.close()
    # A flipped bit in the last frame's payload: its checksum fails, it is cut too.
    data = bytearray(segment.read_bytes())
    data[-1] ^= 1
    segment.write_bytes(bytes(data))
    cut = Journal(tmp_path / "j")
    assert _payloads(cut, cut.start) == [b"acknowledged one", b"acknowledged two"]
    cut.close()


def test_damage_before_the_last_segment_is_reported_not_skipped(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", segment_bytes=10)
    for i in range(3):
        journal.append(b"frame %d" % i)
    journal.close()
    first = tmp_path / "j" / f"{1:020d}.seg"
    data = bytearray(first.read_bytes())
    data[-1] ^= 1
    first.write_bytes(bytes(data))
    reopened = Journal(tmp_path / "j", segment_bytes=10)
    with pytest.raises(JournalError, match=r"byte 0 is damaged"):
        _payloads(reopened, reopened.start)
    reopened.close()


def test_an_append_past_a_file_size_limit_fails_and_leaves_nothing_of_itself(
    tmp_path: Path,
) -> None:
    """RLIMIT_FSIZE stands in for a full disk (in a child process: the limit is per
    process): the write fails with EFBIG, the segment is cut back, the error is a
    JournalError, and the frames before it read back whole."""
    script = textwrap.dedent(
        f"""
        import resource, sys
        from corecensus.collector.journal import Journal, JournalError
        journal = Journal({str(tmp_path / "j")!r})
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
        ok = 0
        try:
            while True:
                journal.append(b"x" * 300)
                ok += 1
        except JournalError as exc:
            print(ok, journal.end().offset, exc, file=sys.stderr)
        """
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": src},
    )
    assert done.returncode == 0, done.stderr
    ok, end, *message = done.stderr.split()
    assert (int(ok), int(end)) == (3, 3 * 308)
    assert "File too large" in " ".join(message)
    segment = tmp_path / "j" / f"{1:020d}.seg"
    assert segment.stat().st_size == 3 * 308
    journal = Journal(tmp_path / "j")
    assert journal.torn_bytes == 0
    assert _payloads(journal, journal.start) == [b"x" * 300] * 3
    journal.close()


def test_a_failed_append_that_cannot_be_cut_back_takes_nothing_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that stops half way and a cut that fails too leave part of a frame at the end:
    appending after it would bury a torn frame mid-segment, so the journal refuses every
    append after that; the next open cuts the part off."""
    journal = Journal(tmp_path / "j")
    journal.append(b"kept")
    real_writev, real_truncate = os.writev, os.ftruncate

    def half_then_full(fd: int, buffers: Sequence[bytes | memoryview]) -> int:
        if fd != journal._fd:
            return real_writev(fd, buffers)
        real_writev(fd, [b"".join(buffers)[:5]])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def cannot_cut(fd: int, size: int) -> None:
        if fd != journal._fd:
            real_truncate(fd, size)
            return
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "writev", half_then_full)
    monkeypatch.setattr(os, "ftruncate", cannot_cut)
    with pytest.raises(JournalError, match="No space left"):
        journal.append(b"lost")
    monkeypatch.undo()
    with pytest.raises(JournalError, match="cutting a failed append"):
        journal.append(b"after")
    journal.close()
    reopened = Journal(tmp_path / "j")
    assert reopened.torn_bytes == 5
    assert _payloads(reopened, reopened.start) == [b"kept"]
    reopened.close()
