"""Number options refuse nan and inf in one line (Click's ranges are comparisons, which nan
passes: ``agent gate --budget nan`` and ``inspect --stdin-timeout nan`` were tracebacks)."""

from __future__ import annotations

import pytest

from corecensus.cli.main import main


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["agent", "gate", "--budget", "nan"], "--budget"),
        (["agent", "gate", "--budget", "inf"], "--budget"),
        (["agent", "gate", "--budget", "1e300"], "--budget"),
        (["inspect", "--stdin-timeout", "nan", "-"], "--stdin-timeout"),
        (["inspect", "--stdin-timeout", "-inf", "-"], "--stdin-timeout"),
    ],
)
def test_non_finite_numbers_are_one_line_errors(
    argv: list[str], option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Invalid value for '{option}': "), err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
