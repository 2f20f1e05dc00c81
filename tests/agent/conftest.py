"""Fixtures of the agent tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A state directory with a short path: the handler's command line must fit in the 127
    bytes the kernel keeps of core_pattern, and pytest's tmp_path is too long for that."""
    path = Path(tempfile.mkdtemp(prefix="cc", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
