"""Journal export parsing and matching, on lines written by the real journalctl where possible."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from corecensus.ingest import JournalIndex, collect_metadata, load_journal
from corecensus.ingest.journal import decode_journal_value

BOOT = "0123456789abcdef0123456789abcdef"
OTHER_BOOT = "fedcba9876543210fedcba9876543210"
JOURNAL_REMOTE = next(
    (
        p
        for p in ("/usr/lib/systemd/systemd-journal-remote", "/lib/systemd/systemd-journal-remote")
        if Path(p).exists()
    ),
    None,
)


def _export_field(name: str, value: bytes) -> bytes:
    # Journal Export Format (systemd docs/JOURNAL_EXPORT_FORMATS.md): text as NAME=value,
    # anything with control characters as NAME\n<le64 size><data>\n.
    if any(b < 32 and b != 9 for b in value):
        return name.encode() + b"\n" + struct.pack("<Q", len(value)) + value + b"\n"
    return name.encode() + b"=" + value + b"\n"


def _real_journalctl_json(tmp_path: Path, entries: list[list[tuple[str, bytes]]]) -> Path:
    """Entries -> journal file (systemd-journal-remote) -> ``journalctl -o json`` output."""
    if JOURNAL_REMOTE is None or shutil.which("journalctl") is None:
        pytest.skip("needs journalctl and systemd-journal-remote (apt: systemd-journal-remote)")
    export = tmp_path / "in.export"
    export.write_bytes(
        b"".join(b"".join(_export_field(n, v) for n, v in e) + b"\n" for e in entries)
    )
    journal_file = tmp_path / "crashes.journal"
    subprocess.run(
        [JOURNAL_REMOTE, "-o", str(journal_file), str(export)], check=True, capture_output=True
    )
    out = subprocess.run(
        ["journalctl", "--file", str(journal_file), "-o", "json", "--no-pager"],
        check=True,
        capture_output=True,
    ).stdout
    path = tmp_path / "journal.json"
    path.write_bytes(out)
    return path


def _coredump_entry(pid: int, ts: int, boot: str = BOOT, **extra: bytes) -> list[tuple[str, bytes]]:
    fields = [
        ("__REALTIME_TIMESTAMP", str(ts + 5000).encode()),
        ("__MONOTONIC_TIMESTAMP", b"1000"),
        ("_BOOT_ID", boot.encode()),
        ("_HOSTNAME", b"web-1"),
        ("MESSAGE_ID", b"fc2e22bc6ee647b6b90729ab34a250b1"),
        ("MESSAGE", f"Process {pid} (svc) of user 0 dumped core.".encode()),
        ("COREDUMP_PID", str(pid).encode()),
        ("COREDUMP_SIGNAL", b"11"),
        ("COREDUMP_TIMESTAMP", str(ts).encode()),
        ("COREDUMP_EXE", b"/usr/bin/svc"),
    ]
    fields += [(k, v) for k, v in extra.items()]
    return fields


def test_real_journalctl_output_binary_and_repeated_fields(tmp_path: Path) -> None:
    name = f"core.svc.0.{BOOT}.4242.1700000000000000.zst"
    path = _real_journalctl_json(
        tmp_path,
        [
            [
                ("__REALTIME_TIMESTAMP", b"1699999999000000"),
                ("__MONOTONIC_TIMESTAMP", b"900"),
                ("MESSAGE", b"an unrelated log line"),
                ("_BOOT_ID", BOOT.encode()),
            ],
            _coredump_entry(
                4242,
                1_700_000_000_000_000,
                COREDUMP_FILENAME=f"/var/lib/systemd/coredump/{name}".encode(),
                COREDUMP_CMDLINE=b"svc --mode \x01fast",
            ),
        ],
    )
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    # journalctl really wrote the binary value as a byte array.
    assert any(isinstance(obj.get("COREDUMP_CMDLINE"), list) for obj in raw)
    index = load_journal(path)
    assert index.errors == []
    assert index.skipped_non_coredump == 1
    assert len(index.entries) == 1
    entry = index.match(tmp_path / name, {})
    assert entry is not None
    assert entry.fields["COREDUMP_PID"] == "4242"
    assert entry.fields["COREDUMP_CMDLINE"] == "svc --mode \x01fast"
    # The journal's trusted fields fill in what COREDUMP_* lacks.
    assert entry.fields["COREDUMP_BOOT_ID"] == BOOT
    assert entry.fields["COREDUMP_HOSTNAME"] == "web-1"
    assert entry.origin == f"{path}:2"


def test_real_journalctl_repeated_field_keeps_first_value(tmp_path: Path) -> None:
    entry = _coredump_entry(7, 1_700_000_000_000_000)
    entry += [("COREDUMP_PACKAGE_NAME", b"svc"), ("COREDUMP_PACKAGE_NAME", b"svc-extra")]
    path = _real_journalctl_json(tmp_path, [entry])
    assert '"COREDUMP_PACKAGE_NAME":["svc","svc-extra"]' in path.read_text()
    index = load_journal(path)
    (found,) = index.entries
    assert found.fields["COREDUMP_PACKAGE_NAME"] == "svc"
    assert any("COREDUMP_PACKAGE_NAME has 2 values" in n for n in found.notes)


def test_documented_json_example_values() -> None:
    # The example object of the Journal JSON Format document.
    binary = [116, 104, 105, 115, 32, 105, 115, 32, 97, 32, 98, 105, 110, 97, 114, 121]
    binary += [32, 118, 97, 108, 117, 101, 32, 7]
    assert decode_journal_value("Hello World") == ("Hello World", 1)
    assert decode_journal_value(["/dev/alias1", "/dev/alias2"]) == ("/dev/alias1", 2)
    assert decode_journal_value(binary) == ("this is a binary value \x07", 1)
    assert decode_journal_value(None) == (None, 1)
    assert decode_journal_value(4242) == ("4242", 1)
    assert decode_journal_value([None, [104, 105]]) == ("hi", 2)
    assert decode_journal_value([0xFF, 0x41]) == ("\\xffA", 1)


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_malformed_lines_are_reported_with_file_and_line_and_the_rest_is_read(
    tmp_path: Path,
) -> None:
    good = {"COREDUMP_PID": "10", "COREDUMP_TIMESTAMP": "1700000000000000", "_BOOT_ID": BOOT}
    path = _write_lines(
        tmp_path / "j.json",
        [
            json.dumps(good),
            "{not json",
            "[1, 2, 3]",
            json.dumps({"COREDUMP_PID": 3.5, "COREDUMP_EXE": "/bin/x"}),
            json.dumps({"COREDUMP_PID": [300, 1]}),
            "",
            json.dumps({"COREDUMP_PID": "11", "COREDUMP_SIGNAL": {"x": 1}}),
            "[" * 200_000,
        ],
    )
    index = load_journal(path)
    messages = [str(e) for e in index.errors]
    assert any(m.startswith(f"{path}:2: not JSON") for m in messages)
    assert any(m.startswith(f"{path}:3: expected a JSON object, got list") for m in messages)
    assert any(m.startswith(f"{path}:4: COREDUMP_PID: unexpected JSON float") for m in messages)
    assert any(m.startswith(f"{path}:5: COREDUMP_PID: number array") for m in messages)
    assert any(m.startswith(f"{path}:7: COREDUMP_SIGNAL: unexpected JSON dict") for m in messages)
    assert any(m.startswith(f"{path}:8:") for m in messages)
    # Line 1, line 4 (its EXE) and line 7 (its PID) still gave entries.
    assert [e.origin for e in index.entries] == [f"{path}:1", f"{path}:4", f"{path}:7"]
    assert index.entries[1].fields == {"COREDUMP_EXE": "/bin/x"}


def test_overlong_line_is_skipped_without_losing_the_next(tmp_path: Path) -> None:
    path = _write_lines(
        tmp_path / "j.json",
        [
            json.dumps({"COREDUMP_PID": "1", "COREDUMP": list(range(256)) * 50}),
            json.dumps({"COREDUMP_PID": "2"}),
        ],
    )
    index = load_journal(path, max_line_bytes=1024)
    assert [str(e) for e in index.errors] == [f"{path}:1: line longer than 1024 bytes"]
    assert [e.fields["COREDUMP_PID"] for e in index.entries] == ["2"]


def test_unreadable_journal_is_a_metadata_error(tmp_path: Path) -> None:
    from corecensus.errors import MetadataError

    with pytest.raises(MetadataError, match="cannot read journal export"):
        load_journal(tmp_path / "missing.json")


def _index(tmp_path: Path, objs: list[dict[str, str]]) -> JournalIndex:
    return load_journal(_write_lines(tmp_path / "j.json", [json.dumps(o) for o in objs]))


def test_match_by_file_name_ignores_compression_suffix(tmp_path: Path) -> None:
    index = _index(
        tmp_path,
        [
            {
                "COREDUMP_PID": "5",
                "COREDUMP_FILENAME": "/var/lib/systemd/coredump/core.a.0.x.5.1.zst",
            }
        ],
    )
    assert index.match(tmp_path / "core.a.0.x.5.1", {}) is not None
    assert index.match(tmp_path / "core.a.0.x.5.1.xz", {}) is not None
    assert index.match(tmp_path / "core.b", {}) is None


def test_match_by_pid_and_time_and_boot_id(tmp_path: Path) -> None:
    t = 1_700_000_000_000_000
    index = _index(
        tmp_path,
        [
            {"COREDUMP_PID": "9", "COREDUMP_TIMESTAMP": str(t), "_BOOT_ID": BOOT, "N": "a"},
            {"COREDUMP_PID": "9", "COREDUMP_TIMESTAMP": str(t + 60_000_000), "N": "b"},
            {"COREDUMP_PID": "9", "COREDUMP_TIMESTAMP": str(t), "_BOOT_ID": OTHER_BOOT, "N": "c"},
        ],
    )
    core = tmp_path / "core"

    def found(hints: dict[str, str]) -> str | None:
        entry = index.match(core, hints)
        return entry.fields["N"] if entry else None

    assert (
        found(
            {"COREDUMP_PID": "9", "COREDUMP_TIMESTAMP": str(t + 400_000), "COREDUMP_BOOT_ID": BOOT}
        )
        == "a"
    )
    assert (
        found({"COREDUMP_PID": "9", "COREDUMP_TIMESTAMP": str(t), "COREDUMP_BOOT_ID": OTHER_BOOT})
        == "c"
    )
    assert found({"COREDUMP_PID": "9", "COREDUMP_TIMESTAMP": str(t + 59_500_000)}) == "b"
    assert found({"COREDUMP_PID": "9", "COREDUMP_TIMESTAMP": str(t + 30_000_000)}) is None
    assert found({"COREDUMP_PID": "10", "COREDUMP_TIMESTAMP": str(t)}) is None
    # pid + boot id without a time: only an unambiguous entry matches.
    assert found({"COREDUMP_PID": "9", "COREDUMP_BOOT_ID": OTHER_BOOT}) == "c"
    assert found({"COREDUMP_PID": "9"}) is None


def test_collect_metadata_uses_the_file_name_to_find_the_journal_entry(tmp_path: Path) -> None:
    t = 1_700_000_000_000_000
    index = _index(
        tmp_path,
        [
            {
                "COREDUMP_PID": "77",
                "COREDUMP_TIMESTAMP": str(t),
                "_BOOT_ID": BOOT,
                "COREDUMP_UNIT": "svc.service",
            }
        ],
    )
    # A copied core: no xattrs, a different directory, but systemd's name survives.
    core = tmp_path / f"core.svc.0.{BOOT}.77.{t}.zst"
    core.write_bytes(b"\x7fELF")
    meta = collect_metadata(core, index)
    assert meta.fields["COREDUMP_UNIT"] == "svc.service"
    assert str(meta.provenance["COREDUMP_UNIT"]) == "journal"


def _busy_export(path: Path, entries: int, every: int) -> dict[int, dict[str, str]]:
    """A busy host's export: ``entries`` lines, one in ``every`` a coredump entry (kept by line
    number in the result) and the rest other services' log lines, compact as journalctl writes
    them. Some crashes have no file name (matched by pid and time), and some file names and
    pids come back on later lines with other values: the matcher must tell them apart."""
    t0 = 1_700_000_000_000_000
    coredumps: dict[int, dict[str, str]] = {}
    with path.open("w") as f:
        for lineno in range(1, entries + 1):
            i = lineno // every
            if lineno % every:
                obj = {
                    "__REALTIME_TIMESTAMP": str(t0 + lineno),
                    "_BOOT_ID": BOOT,
                    "_PID": str(i % 7 + 1),
                    "MESSAGE": f"GET /item/{lineno} 200",
                    "SYSLOG_IDENTIFIER": "nginx",
                }
            else:
                obj = {
                    "MESSAGE_ID": "fc2e22bc6ee647b6b90729ab34a250b1",
                    "_BOOT_ID": BOOT if i % 3 else OTHER_BOOT,
                    "COREDUMP_PID": str(i % 1000 + 1),  # pids are reused, across boots too
                    "COREDUMP_TIMESTAMP": str(t0 + i * 10_000_000),
                    "COREDUMP_HOSTNAME": f"h{lineno}",
                }
                if i % 5:
                    # Names come back 2,000 crashes later: the latest entry of a name wins.
                    obj["COREDUMP_FILENAME"] = f"/var/lib/systemd/coredump/core.svc.{i % 2000}.zst"
                coredumps[lineno] = obj
            f.write(json.dumps(obj, separators=(",", ":")) + "\n")
    return coredumps


def test_a_busy_hosts_export_matches_the_right_entry_to_each_core(tmp_path: Path) -> None:
    """50,000 lines, one in 10 a coredump entry: every crash is found, by its file name (the
    latest entry of that name) or by pid, time and boot id, and nothing else is."""
    path = tmp_path / "busy.json"
    coredumps = _busy_export(path, 50_000, 10)
    index = load_journal(path)
    assert index.errors == []
    assert (index.count, index.skipped_non_coredump, index.lines) == (5000, 45_000, 50_000)
    latest: dict[str, int] = {}
    for lineno, obj in coredumps.items():
        if "COREDUMP_FILENAME" in obj:
            latest[Path(obj["COREDUMP_FILENAME"]).name.removesuffix(".zst")] = lineno
    assert len(latest) == 1600 and len(coredumps) - 1000 > 1600
    for name, lineno in latest.items():
        entry = index.match(tmp_path / "copied" / name, {})
        assert entry is not None and entry.origin == f"{path}:{lineno}", name
        assert entry.fields["COREDUMP_HOSTNAME"] == f"h{lineno}"
    by_time = [(n, o) for n, o in coredumps.items() if "COREDUMP_FILENAME" not in o]
    assert len(by_time) == 1000
    for lineno, obj in by_time:
        hints = {
            "COREDUMP_PID": obj["COREDUMP_PID"],
            "COREDUMP_TIMESTAMP": str(int(obj["COREDUMP_TIMESTAMP"]) + 400_000),
            "COREDUMP_BOOT_ID": obj["_BOOT_ID"],
        }
        entry = index.match(tmp_path / "core", hints)
        assert entry is not None and entry.origin == f"{path}:{lineno}", hints
        # The same crash on the other boot is not this one.
        other = OTHER_BOOT if obj["_BOOT_ID"] == BOOT else BOOT
        assert index.match(tmp_path / "core", {**hints, "COREDUMP_BOOT_ID": other}) is None
    assert index.match(tmp_path / "core.svc.5", {}) is None  # no entry has that name
    # A pid with its time two seconds off is no match (entries of one pid are 10,000 s apart).
    _, first = by_time[0]
    late = str(int(first["COREDUMP_TIMESTAMP"]) + 2_000_000)
    hints = {"COREDUMP_PID": first["COREDUMP_PID"], "COREDUMP_TIMESTAMP": late}
    assert index.match(tmp_path / "core", hints) is None


def test_names_that_share_a_key_are_told_apart_on_their_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index keeps a 64-bit key of each file name; a match is confirmed on the entry's
    line. Every name given the same key here, as a collision would: each core still gets its
    own entry, and a name with no entry none."""
    from corecensus.ingest import journal

    real_key = journal._key
    monkeypatch.setattr(
        journal, "_key", lambda text: 7 if text.startswith("core.") else real_key(text)
    )
    index = _index(
        tmp_path,
        [
            {"COREDUMP_FILENAME": f"/var/lib/systemd/coredump/core.{n}.zst", "N": str(n)}
            for n in range(50)
        ],
    )
    for n in range(50):
        entry = index.match(tmp_path / f"core.{n}.lz4", {})
        assert entry is not None and entry.fields["N"] == str(n)
    assert index.match(tmp_path / "core.50", {}) is None


def test_lines_that_are_not_coredump_entries_are_skimmed_but_bad_ones_still_reported(
    tmp_path: Path,
) -> None:
    """A line naming no COREDUMP_ field is only checked to be one JSON object (its values are
    not looked at); when that check fails the line is read as before, so its error is the
    stdlib's, and a line the check refuses but JSON allows (a byte order mark) is still read."""
    path = _write_lines(
        tmp_path / "j.json",
        [
            json.dumps({"MESSAGE": "ok", "_PID": 5}),
            '{"MESSAGE": "cut sho',
            json.dumps({"MESSAGE": 3.5}),
            "\ufeff" + json.dumps({"COREDUMP_PID": "4", "COREDUMP_EXE": "/bin/bom"}),
            '{"MESSAGE": "mentions \\"COREDUMP_PID\\" in a value"}',
            '"a string"',
            json.dumps({"COREDUMP_PID": "3"}),
        ],
    )
    index = load_journal(path)
    assert [str(e) for e in index.errors] == [
        # The newline the cut line ends with:
        f"{path}:2: not JSON: Invalid control character at: line 1 column 21 (char 20)",
        f"{path}:6: expected a JSON object, got str",
    ]
    assert index.skipped_non_coredump == 3  # lines 1, 3 and 5
    assert [e.origin for e in index.entries] == [f"{path}:4", f"{path}:7"]
    assert index.entries[0].fields == {"COREDUMP_PID": "4", "COREDUMP_EXE": "/bin/bom"}
