"""The kill switch: the file or the variable disables, nothing else does."""

from __future__ import annotations

from pathlib import Path

import pytest

from corecensus.agent.killswitch import disabled_reason


@pytest.mark.parametrize("value", ["1", "yes", "true", " on "])
def test_variable_disables(tmp_path: Path, value: str) -> None:
    assert disabled_reason({"CORECENSUS_DISABLED": value}, tmp_path / "nope") is not None


@pytest.mark.parametrize("value", ["", "0", "false", "no", "off", "OFF"])
def test_off_values_do_not_disable(tmp_path: Path, value: str) -> None:
    assert disabled_reason({"CORECENSUS_DISABLED": value}, tmp_path / "nope") is None


def test_file_disables_whatever_it_holds(tmp_path: Path) -> None:
    flag = tmp_path / "disabled"
    assert disabled_reason({}, flag) is None
    flag.write_text("0\n")
    assert disabled_reason({}, flag) == f"{flag} exists"
    flag.unlink()
    assert disabled_reason({}, flag) is None  # removing it resumes, no restart needed
