"""Hypothesis over the outside inputs that are not core heads (issue 10): sidecar JSON, journal
export lines, exposure and deploy CSVs, and compressed streams of a real core. Whatever the
bytes, the reader returns or raises the one error its contract names (no other exception, no
hang), and every string it keeps is valid text. Fixed examples, no deadline, no example
database (the conftest's deterministic profile)."""

from __future__ import annotations

import io
import json
import lzma
from pathlib import Path

import lz4.frame
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corecensus.coredump import inspect_core
from corecensus.errors import MetadataError
from corecensus.ingest.journal import load_journal
from corecensus.ingest.metadata import read_sidecar
from corecensus.ingest.tables import read_deploys, read_exposure
from corecensus.model import ParseStatus
from corecensus.outside import is_valid_text
from crashers import CrashResult

_FIXTURE_OK = settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

# JSON-ish text: real field names, odd values, lone surrogates spelled as JSON escapes, nesting.
_NAMES = st.sampled_from(
    [
        "COREDUMP_HOSTNAME",
        "COREDUMP_PID",
        "COREDUMP_TIMESTAMP",
        "CORECENSUS_CPU",
        "COREDUMP_BOOT_ID",
        "X_1",
        "bad name",
        "",
    ]
)
_VALUES = st.one_of(
    st.text(max_size=40),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.sampled_from(["x\\ud800y", "\\udfff", "1e308", "2147483647", "-1", "\\u0000"]),
)


@st.composite
def _json_objects(draw: st.DrawFn) -> str:
    pairs = draw(st.lists(st.tuples(_NAMES, _VALUES), max_size=8))
    parts = []
    for name, value in pairs:
        if (isinstance(value, str) and value.startswith("\\u")) or (
            isinstance(value, str) and "\\ud" in value
        ):
            parts.append(f'{json.dumps(name)}: "{value}"')  # the escape goes in as JSON text
        else:
            parts.append(f"{json.dumps(name)}: {json.dumps(value)}")
    text = "{" + ", ".join(parts) + "}"
    return draw(st.one_of(st.just(text), st.text(max_size=60), st.just("[" * 3000 + "]" * 3000)))


def _all_valid(fields: dict[str, str]) -> bool:
    return all(is_valid_text(k) and is_valid_text(v) for k, v in fields.items())


@_FIXTURE_OK
@given(text=_json_objects())
def test_sidecars_give_fields_or_one_metadata_error(tmp_path: Path, text: str) -> None:
    core = tmp_path / "core.x"
    Path(f"{core}.json").write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        found = read_sidecar(core)
    except MetadataError as exc:
        assert str(exc).startswith(f"{core}.json")
        return
    assert found is not None
    assert _all_valid(dict(found.fields))


@_FIXTURE_OK
@given(lines=st.lists(_json_objects(), max_size=6))
def test_journal_exports_read_every_line_or_say_why(tmp_path: Path, lines: list[str]) -> None:
    export = tmp_path / "journal.json"
    data = "\n".join(lines).encode("utf-8", "surrogatepass")
    export.write_bytes(data)
    index = load_journal(export)
    # Every line is read (none stops the reader), and each gives at most one entry.
    assert index.lines == data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    assert len(index.entries) + index.skipped_non_coredump <= index.lines
    for entry in index.entries:
        assert _all_valid(dict(entry.fields))


_CELLS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["2024-01-01T00:00:00", "2024-01-02T00:00:00Z", "1e308", "nan", "-1", "", '"', "\r\n"]
    ),
)


@given(rows=st.lists(st.lists(_CELLS, min_size=0, max_size=8), max_size=8), header=st.booleans())
def test_csvs_give_a_table_or_one_metadata_error(rows: list[list[str]], header: bool) -> None:
    for reader, columns in (
        (read_exposure, "host,start,end,service,version,cpu_model,processes"),
        (read_deploys, "time,service,version"),
    ):
        body = "\n".join(",".join(r) for r in rows)
        text = (columns + "\n" + body) if header else body
        try:
            table = reader(io.StringIO(text))
        except MetadataError as exc:
            assert str(exc).startswith("<stream>"), exc  # always names the file (and line)
            continue
        # Every row read is a row given: nothing invented, blank lines skipped.
        assert len(table) <= len(rows)


@pytest.fixture(scope="module")
def seed_core(kernel_cores: dict[str, CrashResult]) -> bytes:
    core = kernel_cores["null_deref"].core
    assert core is not None
    return core.read_bytes()


_COMPRESSORS = {
    "zstd": lambda b: zstandard.ZstdCompressor(level=1).compress(b),
    "lz4": lambda b: lz4.frame.compress(
        b, block_size=lz4.frame.BLOCKSIZE_MAX64KB, content_checksum=True
    ),
    "xz": lambda b: lzma.compress(b, preset=0),
}


@pytest.mark.kernel_cores
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    kind=st.sampled_from(sorted(_COMPRESSORS)),
    edits=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=8),
    cut=st.one_of(st.none(), st.floats(0.0, 1.0)),
)
def test_compressed_streams_always_give_a_record(
    seed_core: bytes, tmp_path: Path, kind: str, edits: list[tuple[float, int]], cut: float | None
) -> None:
    """Bytes of a compressed real core overwritten and/or cut: always a record, never an
    exception; a damaged stream is never `ok` without saying so."""
    blob = bytearray(_COMPRESSORS[kind](seed_core))
    for where, value in edits:
        blob[min(len(blob) - 1, int(where * len(blob)))] = value
    if cut is not None:
        blob = blob[: int(cut * len(blob))]
    p = tmp_path / f"fuzzed.{kind}"
    p.write_bytes(bytes(blob))
    rec = inspect_core(p, symbolize=False)
    assert rec.status in (ParseStatus.OK, ParseStatus.PARTIAL, ParseStatus.UNPARSED)
    if rec.status is not ParseStatus.OK:
        assert rec.errors
