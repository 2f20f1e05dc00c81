"""Crash metadata from sidecars, real xattrs on real files, core file names, and the merge."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from corecensus.errors import MetadataError
from corecensus.ingest import (
    PRECEDENCE,
    XATTR_FIELDS,
    Source,
    collect_metadata,
    load_journal,
    parse_core_filename,
    read_sidecar,
    read_xattrs,
    sidecar_path,
)

BOOT = "0123456789abcdef0123456789abcdef"
SYSTEMD_NAME = f"core.svc.1000.{BOOT}.4242.1700000000000000.zst"


def _supports_user_xattrs(directory: Path) -> bool:
    probe = directory / ".xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.corecensus.probe", b"1")
    except OSError:
        return False
    finally:
        probe.unlink()
    return True


@pytest.fixture
def xattr_dir(tmp_path: Path) -> Path:
    # tmp_path is on the root file system here (ext4, user xattrs on). Where it is not, this
    # skips with the reason instead of passing vacuously.
    if not _supports_user_xattrs(tmp_path):
        pytest.skip(f"{tmp_path}: file system without user xattrs")
    return tmp_path


def _core(directory: Path, name: str = "core") -> Path:
    path = directory / name
    path.write_bytes(b"\x7fELF" + b"\x00" * 60)
    return path


def _set_systemd_xattrs(path: Path, **values: str) -> None:
    # What systemd-coredump's fix_xattr() writes: the value without a trailing NUL.
    for name, value in values.items():
        os.setxattr(path, f"user.coredump.{name}", value.encode())


# -- sidecar -------------------------------------------------------------------------------


def test_sidecar_fields_kept_including_unknown_ones(tmp_path: Path) -> None:
    core = _core(tmp_path)
    sidecar_path(core).write_text(
        json.dumps(
            {
                "COREDUMP_HOSTNAME": "web-7",
                "COREDUMP_TIMESTAMP": "1700000000123456",
                "COREDUMP_PID": 4242,
                "CORECENSUS_CPU": "13",
                "CORECENSUS_MICROCODE": "0xb000040",
                "SITE_RACK": "r12",
                "COREDUMP_UNIT": None,
            }
        )
    )
    found = read_sidecar(core)
    assert found is not None
    assert found.source is Source.SIDECAR
    assert found.fields == {
        "COREDUMP_HOSTNAME": "web-7",
        "COREDUMP_TIMESTAMP": "1700000000123456",
        "COREDUMP_PID": "4242",
        "CORECENSUS_CPU": "13",
        "CORECENSUS_MICROCODE": "0xb000040",
        "SITE_RACK": "r12",
    }
    assert found.errors == ()


def test_no_sidecar_is_none(tmp_path: Path) -> None:
    assert read_sidecar(_core(tmp_path)) is None


def test_sidecar_path_appends_json_to_the_full_name(tmp_path: Path) -> None:
    assert sidecar_path(tmp_path / "core.x.zst").name == "core.x.zst.json"


def test_sidecar_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    core = _core(tmp_path)
    sidecar_path(core).write_text('{\n  "COREDUMP_PID": "1",\n  "COREDUMP_EXE": oops\n}\n')
    with pytest.raises(MetadataError, match=r"core\.json:3: not JSON"):
        read_sidecar(core)


def test_sidecar_duplicate_key_names_the_second_line(tmp_path: Path) -> None:
    core = _core(tmp_path)
    sidecar_path(core).write_text('{\n "COREDUMP_PID": "1",\n "COREDUMP_PID": "2"\n}\n')
    with pytest.raises(MetadataError, match=r"core\.json:3: duplicate key 'COREDUMP_PID'"):
        read_sidecar(core)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b'["a list"]', r"core\.json:1: expected a JSON object, got list"),
        (b'{"COREDUMP_EXE": "/bin/\xff"}', r"core\.json:1: not UTF-8"),
        (b"[" * 100_000, r"core\.json"),
    ],
)
def test_malformed_sidecar_raises_metadata_error(
    tmp_path: Path, content: bytes, pattern: str
) -> None:
    core = _core(tmp_path)
    sidecar_path(core).write_bytes(content)
    with pytest.raises(MetadataError, match=pattern):
        read_sidecar(core)


def test_bad_values_are_dropped_one_by_one_with_their_line(tmp_path: Path) -> None:
    core = _core(tmp_path)
    sidecar_path(core).write_text(
        "{\n"
        '  "COREDUMP_HOSTNAME": "db-3",\n'
        '  "COREDUMP_PID": "12x",\n'
        '  "COREDUMP_TIMESTAMP": "yesterday",\n'
        '  "CORECENSUS_CPU": ["7"],\n'
        '  "COREDUMP_BOOT_ID": "01234567-89AB-CDEF-0123-456789ABCDEF"\n'
        "}\n"
    )
    found = read_sidecar(core)
    assert found is not None
    assert found.fields == {"COREDUMP_HOSTNAME": "db-3", "COREDUMP_BOOT_ID": BOOT}
    messages = sorted(str(e) for e in found.errors)
    assert len(messages) == 3
    assert any(":3: COREDUMP_PID: malformed value '12x'" in m for m in messages)
    assert any(":4: COREDUMP_TIMESTAMP: malformed value" in m for m in messages)
    assert any(":5: CORECENSUS_CPU: expected a string, got list" in m for m in messages)


def test_environment_and_core_payload_are_never_kept(tmp_path: Path) -> None:
    core = _core(tmp_path)
    sidecar_path(core).write_text(
        json.dumps({"COREDUMP_ENVIRON": "AWS_SECRET=x", "COREDUMP": "ELF...", "COREDUMP_PID": "9"})
    )
    found = read_sidecar(core)
    assert found is not None
    assert found.fields == {"COREDUMP_PID": "9"}
    assert len(found.notes) == 2


# -- xattrs --------------------------------------------------------------------------------


def test_systemd_xattrs_map_to_journal_field_names(xattr_dir: Path) -> None:
    core = _core(xattr_dir, SYSTEMD_NAME)
    values = {
        "pid": "4242",
        "uid": "1000",
        "gid": "1000",
        "signal": "11",
        "timestamp": "1700000000000000",
        "rlimit": "18446744073709551615",
        "hostname": "web-1",
        "comm": "svc",
        "exe": "/usr/bin/svc",
    }
    _set_systemd_xattrs(core, **values)
    found = read_xattrs(core)
    assert found is not None
    assert found.source is Source.XATTR
    assert found.fields == {XATTR_FIELDS[f"user.coredump.{k}"]: v for k, v in values.items()}
    assert found.fields["COREDUMP_RLIMIT"] == "18446744073709551615"
    assert found.errors == ()


def test_unknown_coredump_xattrs_are_kept_and_others_ignored(xattr_dir: Path) -> None:
    core = _core(xattr_dir)
    _set_systemd_xattrs(core, pid="7", unit="svc.service")
    os.setxattr(core, "user.mime_type", b"application/x-core")
    found = read_xattrs(core)
    assert found is not None
    assert found.fields == {"COREDUMP_PID": "7", "COREDUMP_UNIT": "svc.service"}


def test_malformed_xattr_value_is_dropped_and_reported(xattr_dir: Path) -> None:
    core = _core(xattr_dir)
    _set_systemd_xattrs(core, pid="-3", hostname="web-1")
    found = read_xattrs(core)
    assert found is not None
    assert found.fields == {"COREDUMP_HOSTNAME": "web-1"}
    assert len(found.errors) == 1
    assert "COREDUMP_PID: malformed value '-3'" in str(found.errors[0])
    assert str(core) in str(found.errors[0])


def test_file_without_xattrs_is_none(xattr_dir: Path) -> None:
    assert read_xattrs(_core(xattr_dir)) is None


def test_file_system_without_user_xattrs_is_none() -> None:
    # procfs refuses user xattrs (setxattr gives EOPNOTSUPP); reading finds none.
    assert read_xattrs("/proc/self/status") is None


def test_missing_core_file_is_a_metadata_error(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="cannot list xattrs"):
        read_xattrs(tmp_path / "gone")


# -- file name -----------------------------------------------------------------------------


def test_systemd_core_file_name_is_parsed() -> None:
    found = parse_core_filename(f"/var/lib/systemd/coredump/{SYSTEMD_NAME}")
    assert found is not None
    assert found.fields == {
        "COREDUMP_COMM": "svc",
        "COREDUMP_UID": "1000",
        "COREDUMP_BOOT_ID": BOOT,
        "COREDUMP_PID": "4242",
        "COREDUMP_TIMESTAMP": "1700000000000000",
    }


def test_escaped_comm_in_file_name_is_unescaped() -> None:
    # coredump.c filename_escape() = xescape(s, "./ "): '.', '/', ' ' and '\' become \xNN.
    name = rf"core.my\x2eapp\x20v2.0.{BOOT}.17.1700000000000000.lz4"
    found = parse_core_filename(name)
    assert found is not None
    assert found.fields["COREDUMP_COMM"] == "my.app v2"
    assert found.fields["COREDUMP_UID"] == "0"


@pytest.mark.parametrize(
    "name",
    ["core", "core.4242", f"core.svc.1000.{BOOT}.4242", f"core.svc.x.{BOOT}.1.2", "vmcore"],
)
def test_other_names_are_not_parsed(name: str) -> None:
    assert parse_core_filename(name) is None


# -- merge ---------------------------------------------------------------------------------


def test_precedence_is_sidecar_xattr_journal_filename() -> None:
    assert PRECEDENCE == (Source.SIDECAR, Source.XATTR, Source.JOURNAL, Source.FILENAME)


def test_merge_takes_each_field_from_the_highest_source_and_notes_disagreements(
    xattr_dir: Path,
) -> None:
    core = _core(xattr_dir, SYSTEMD_NAME)
    sidecar_path(core).write_text(
        json.dumps(
            {"COREDUMP_HOSTNAME": "web-1.prod", "CORECENSUS_CPU": "5", "COREDUMP_PID": "4242"}
        )
    )
    _set_systemd_xattrs(core, pid="4242", hostname="web-1", signal="11", exe="/usr/bin/svc")
    journal = xattr_dir / "journal.json"
    journal.write_text(
        json.dumps(
            {
                "COREDUMP_FILENAME": f"/var/lib/systemd/coredump/{SYSTEMD_NAME}",
                "COREDUMP_PID": "4242",
                "COREDUMP_SIGNAL": "6",
                "COREDUMP_CMDLINE": "svc --serve",
                "COREDUMP_UNIT": "svc.service",
            }
        )
        + "\n"
    )
    meta = collect_metadata(core, load_journal(journal))
    assert meta.fields["COREDUMP_HOSTNAME"] == "web-1.prod"
    assert meta.provenance["COREDUMP_HOSTNAME"] is Source.SIDECAR
    assert meta.fields["COREDUMP_SIGNAL"] == "11"
    assert meta.provenance["COREDUMP_SIGNAL"] is Source.XATTR
    assert meta.fields["COREDUMP_CMDLINE"] == "svc --serve"
    assert meta.provenance["COREDUMP_CMDLINE"] is Source.JOURNAL
    assert meta.fields["COREDUMP_BOOT_ID"] == BOOT
    assert meta.provenance["COREDUMP_BOOT_ID"] is Source.FILENAME
    assert meta.int_field("CORECENSUS_CPU") == 5
    assert any(
        "COREDUMP_HOSTNAME: sidecar says 'web-1.prod', xattr says 'web-1'" in n for n in meta.notes
    )
    assert any("COREDUMP_SIGNAL: xattr says '11', journal says '6'" in n for n in meta.notes)
    assert meta.errors == ()


def test_a_broken_source_is_reported_and_the_others_still_count(xattr_dir: Path) -> None:
    core = _core(xattr_dir, SYSTEMD_NAME)
    sidecar_path(core).write_text("{not json")
    _set_systemd_xattrs(core, hostname="web-9")
    meta = collect_metadata(core)
    assert meta.fields["COREDUMP_HOSTNAME"] == "web-9"
    assert meta.fields["COREDUMP_PID"] == "4242"  # from the file name
    assert len(meta.errors) == 1
    assert isinstance(meta.errors[0], MetadataError)
    assert f"{core}.json:1: not JSON" in str(meta.errors[0])


def test_nothing_known_is_empty_not_an_error(tmp_path: Path) -> None:
    meta = collect_metadata(_core(tmp_path))
    assert dict(meta.fields) == {}
    assert meta.errors == ()
    assert meta.int_field("COREDUMP_PID") is None
