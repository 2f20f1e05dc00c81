"""Each import contract in pyproject.toml ([tool.importlinter]) fails on a deliberate breach.

`lint-imports` passing in CI proves only that nothing breaks a contract today, not that a
contract could ever fail (a misspelt module, a layer that names nothing, a protected package
missing from the graph would pass just as well).  So each test copies the package into a
temporary directory, appends one breaching import to one module, runs `lint-imports` there with
the project's own configuration, and asserts that exactly the contracts the breach is meant for
are broken, naming the breaching module, and that every other contract is kept.  A breach may
break more than one: `import duckdb` in the agent is against the agent's own rule and against
duckdb-only-in-store; a leaf importing signature reaches the store too (store -> model ->
signature).  The clean copy must keep them all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "corecensus"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

# (module file under src/corecensus, the import appended to it, the contracts it must break).
# Every contract has at least one; test_every_contract_has_a_breach keeps it so.
BREACHES: list[tuple[str, str, frozenset[str]]] = [
    (module, statement, frozenset(broken))
    for module, statement, broken in [
        ("model.py", "import corecensus.signature", {"layers", "store-persists"}),
        ("signature/__init__.py", "import corecensus.store", {"layers", "pure-domain"}),
        ("pipeline.py", "import corecensus.app", {"layers"}),
        ("demo/__init__.py", "import corecensus.collector", {"layers"}),
        ("store/__init__.py", "import drgn", {"core-readers", "collector-no-cores"}),
        ("cli/__init__.py", "from capstone import Cs", {"core-readers"}),
        ("pipeline.py", "import duckdb", {"database"}),
        ("signature/__init__.py", "import subprocess", {"pure-domain"}),
        ("epidemiology/__init__.py", "import csv", {"pure-domain"}),
        ("store/__init__.py", "import corecensus.signature", {"store-persists"}),
        ("agent/__init__.py", "import corecensus.store", {"agent-light"}),
        ("agent/__init__.py", "import duckdb", {"agent-no-drgn-duckdb", "database"}),
        ("collector/__init__.py", "import corecensus.coredump", {"collector-no-cores"}),
    ]
]


def _contracts() -> dict[str, str]:
    """Contract id -> name, as pyproject.toml declares them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c["name"] for c in config["contracts"]}


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A copy of the package and the project's pyproject.toml."""
    shutil.copytree(
        PACKAGE, tmp_path / "src" / "corecensus", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH puts the copy ahead of the installed package, which grimp would find otherwise.
    # COLUMNS: one line per contract (rich wraps long names at the terminal's width).
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "COLUMNS": "1000"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_every_contract_has_a_breach() -> None:
    assert set().union(*(broken for _, _, broken in BREACHES)) == set(_contracts())


def test_the_clean_copy_keeps_every_contract(tree: Path) -> None:
    done = _lint(tree)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in _contracts().values():
        assert f"{name} KEPT" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize(("module", "statement", "broken"), BREACHES)
def test_a_breach_breaks_its_contract(
    tree: Path, module: str, statement: str, broken: frozenset[str]
) -> None:
    path = tree / "src" / "corecensus" / module
    path.write_text(path.read_text() + f"\n{statement}  # deliberate breach\n")
    done = _lint(tree)
    assert done.returncode != 0, done.stdout + done.stderr
    for cid, name in _contracts().items():
        verdict = "BROKEN" if cid in broken else "KEPT"
        assert f"{name} {verdict}" in done.stdout, f"{module}: {statement}: {cid} not {verdict}"
    importer = "corecensus." + module.removesuffix(".py").removesuffix("/__init__").replace(
        "/", "."
    )
    assert importer in done.stdout.split("Broken contracts", 1)[1]
