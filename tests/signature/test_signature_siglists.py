"""Frame lists: the packaged ones load and mean what they say; bad ones fail with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from corecensus.errors import ConfigError
from corecensus.signature import (
    IRRELEVANT_FRAMES,
    PREFIX_FRAMES,
    SYSTEM_MODULES,
    default_pipeline,
    load_frame_list,
)


@pytest.mark.parametrize("name", [IRRELEVANT_FRAMES, PREFIX_FRAMES, SYSTEM_MODULES])
def test_packaged_lists_load(name: str) -> None:
    frames = load_frame_list(name)
    assert len(frames) > 10
    assert frames.origin.endswith(f"{name}.txt")


@pytest.mark.parametrize(
    "frame",
    [
        "abort",
        "raise",
        "__pthread_kill_implementation",
        "__libc_start_call_main",
        "_dl_fixup",
        "__memmove_avx_unaligned_erms",
        "memcpy",
        "__strlen_evex",
        "__memcpy_chk",
        "__wmemset_avx2_unaligned",
        "strcmp",
        "__cxa_throw",
        "std::terminate",
        "__gnu_cxx::__verbose_terminate_handler",
        "@0x7f00deadbeef",
        "libc.so.6@0x29d90",
        "libstdc++.so.6@0xae20c",
    ],
)
def test_irrelevant(frame: str) -> None:
    assert load_frame_list(IRRELEVANT_FRAMES).matches(frame)


@pytest.mark.parametrize(
    "frame",
    [
        "main",
        "Server::handle",
        "svc@0x1234",
        "@0x0",
        "strlen_checked",
        "memcpy_safe",
        "my_abort_handler",
    ],
)
def test_relevant(frame: str) -> None:
    assert not load_frame_list(IRRELEVANT_FRAMES).matches(frame)


@pytest.mark.parametrize(
    "frame",
    [
        "malloc",
        "free",
        "_int_free",
        "operator new",
        "operator delete",
        "std::__throw_length_error",
        "__assert_fail",
        "__cxa_pure_virtual",
        "@0x0",
        "@stack",
    ],
)
def test_prefix(frame: str) -> None:
    assert load_frame_list(PREFIX_FRAMES).matches(frame)


@pytest.mark.parametrize("frame", ["Server::handle", "free_list_pop", "mallocator"])
def test_not_prefix(frame: str) -> None:
    assert not load_frame_list(PREFIX_FRAMES).matches(frame)


def test_system_modules() -> None:
    modules = load_frame_list(SYSTEM_MODULES)
    for name in ("libc.so.6", "ld-linux-x86-64.so.2", "libstdc++.so.6", "libgcc_s.so.1"):
        assert modules.matches(name), name
    for name in ("svc", "libunwind.so.8", "libfoo.so"):
        assert not modules.matches(name), name


def _site_lists(directory: Path, irrelevant: str) -> Path:
    for name in (PREFIX_FRAMES, SYSTEM_MODULES):
        (directory / f"{name}.txt").write_text("malloc$\n")
    (directory / f"{IRRELEVANT_FRAMES}.txt").write_text(irrelevant)
    return directory


def test_invalid_regex_names_file_and_line(tmp_path: Path) -> None:
    _site_lists(tmp_path, "# comment\n\nabort$\nfoo(\n")
    with pytest.raises(ConfigError) as excinfo:
        default_pipeline(tmp_path)
    message = str(excinfo.value)
    assert message.startswith(f"{tmp_path / 'irrelevant_frames.txt'}:4: invalid regular expression")
    assert "'foo('" in message


def test_pattern_matching_everything_is_refused(tmp_path: Path) -> None:
    _site_lists(tmp_path, "abort$\n.*\n")
    with pytest.raises(
        ConfigError, match=r"irrelevant_frames\.txt:2: pattern '\.\*' matches the empty"
    ):
        default_pipeline(tmp_path)


def test_non_utf8_list_names_the_line(tmp_path: Path) -> None:
    (tmp_path / f"{IRRELEVANT_FRAMES}.txt").write_bytes(b"abort$\nra\xffise$\n")
    with pytest.raises(ConfigError, match=r"irrelevant_frames\.txt:2: not UTF-8"):
        load_frame_list(IRRELEVANT_FRAMES, tmp_path)


def test_missing_list_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read frame list"):
        load_frame_list(IRRELEVANT_FRAMES, tmp_path)
