"""Hypothesis mutates the head of a real core (ELF header, program headers, notes) and the
parser must always come back with a record: no exception, no hang, bounded reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from coretools import notes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corecensus.coredump import inspect_core
from corecensus.model import CrashRecord, ParseStatus
from crashers import CrashResult

pytestmark = pytest.mark.kernel_cores


class Seed:
    """The seed core, with a short repr so Hypothesis's failure report stays readable."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.head_len = max(n.desc_offset + n.descsz for n in notes(data))

    def __repr__(self) -> str:
        return f"<seed core, {len(self.data)} bytes>"


@pytest.fixture(scope="module")
def seed_core(kernel_cores: dict[str, CrashResult]) -> Seed:
    core = kernel_cores["ret_sp_off_by_8"].core
    assert core is not None
    return Seed(core.read_bytes())


_MUTATIONS = st.lists(
    st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=24
)
_CUTS = st.one_of(st.none(), st.floats(0.0, 1.0))


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutations=_MUTATIONS, cut=_CUTS)
def test_mutated_heads_always_give_a_record(
    seed_core: Seed, tmp_path: Path, mutations: list[tuple[int, int]], cut: float | None
) -> None:
    mutated = bytearray(seed_core.data)
    for pos, value in mutations:
        mutated[pos % seed_core.head_len] = value
    blob = bytes(mutated if cut is None else mutated[: int(cut * len(mutated))])
    p = tmp_path / "fuzzed.core"
    p.write_bytes(blob)
    rec = inspect_core(p, symbolize=False)
    assert isinstance(rec, CrashRecord)
    assert rec.status in ParseStatus
    if rec.status is not ParseStatus.OK:
        assert rec.errors
    rec.to_json()  # always serializable


def test_mutated_cores_through_drgn_in_a_subprocess(seed_core: Seed, tmp_path: Path) -> None:
    """drgn is C: a mutated core must not crash it. Run the full pass in a child so a crash
    would show as a signal exit instead of killing the test run."""
    import random

    rng = random.Random(1234)
    paths = []
    for i in range(12):
        mutated = bytearray(seed_core.data)
        for _ in range(rng.randint(1, 16)):
            mutated[rng.randrange(seed_core.head_len)] = rng.randrange(256)
        p = tmp_path / f"m{i}.core"
        p.write_bytes(bytes(mutated))
        paths.append(str(p))
    script = (
        "import sys\n"
        "from corecensus.coredump import inspect_core\n"
        "for p in sys.argv[1:]:\n"
        "    r = inspect_core(p)\n"
        "    print(r.status)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, *paths], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(out.stdout.split()) == len(paths)
