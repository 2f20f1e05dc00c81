"""Hostile exposure and deploy files (issue 10): absurd numbers are a one-line error naming the
line, and a FIFO where a CSV is expected is refused instead of waited on."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import pytest

from corecensus.errors import MetadataError
from corecensus.ingest.tables import read_deploys, read_exposure

HEADER = "host,start,end,service,version,cpu_model,processes\n"


def test_processes_beyond_any_host_is_an_error_not_an_overflow() -> None:
    text = HEADER + "h1,2024-01-01T00:00:00,2024-01-02T00:00:00,svc,1,m,1e308\n"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the numpy overflow warning was the old symptom
        with pytest.raises(
            MetadataError, match=r":2: 'processes' 1e308 is more than 4194304 on one host"
        ):
            read_exposure(io.StringIO(text))


def test_a_plausible_process_count_is_read() -> None:
    text = HEADER + "h1,2024-01-01T00:00:00,2024-01-02T00:00:00,svc,1,m,4000\n"
    table = read_exposure(io.StringIO(text))
    assert table.hours.tolist() == [24.0 * 4000]


def test_fifo_csvs_are_refused(tmp_path: Path) -> None:
    for name, reader in (("exposure.csv", read_exposure), ("deploys.csv", read_deploys)):
        fifo = tmp_path / name
        os.mkfifo(fifo)
        with pytest.raises(MetadataError, match="a FIFO, not a regular file"):
            reader(fifo)
