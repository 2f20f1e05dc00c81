"""``corecensus screen``: SDC screening of this host's CPUs.

Exit status: 0 clean; 3 quarantine recommended (CPUs or the host); 4 needs attention without a
quarantine (rescreen, or a software suspect); 1 the screen could not run; 2 bad arguments.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import click
from rich.console import Console

from corecensus.cli.output import error, show
from corecensus.cli.render import screen_view
from corecensus.errors import ConfigError, CorecensusError
from corecensus.screening import (
    BUILTIN_CHECKS,
    Mode,
    ScreenConfig,
    ScreenResult,
    ScreenVerdict,
    default_registry,
    parse_cpu_list,
    read_topology,
)

__all__ = ["screen"]

EXIT_QUARANTINE = 3
EXIT_ATTENTION = 4


def _exit_code(result: ScreenResult) -> int:
    verdict = result.decision.verdict
    if verdict in (ScreenVerdict.QUARANTINE_CPUS, ScreenVerdict.QUARANTINE_HOST):
        return EXIT_QUARANTINE
    if verdict is ScreenVerdict.CLEAN:
        return 0
    return EXIT_ATTENTION


@click.command("screen")
@click.option(
    "--cpus", "cpus_text", metavar="LIST", help="CPUs to screen, e.g. 0-3,8 (default: all online)."
)
@click.option(
    "--budget", type=float, metavar="S", help="Hard time budget per CPU in seconds (mode default)."
)
@click.option(
    "--mode",
    type=click.Choice([m.value for m in Mode]),
    default=Mode.ONESHOT.value,
    show_default=True,
    help="oneshot: full battery until the budget; periodic: one round after a jitter; "
    "background: idle-priority slices at <= 1% duty cycle.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the screen record as JSON.")
@click.option("--rounds", type=int, metavar="N", help="Stop after N rounds of the battery.")
@click.option("--checks", "checks_text", metavar="NAMES", help="Comma-separated subset of checks.")
@click.option("--seed", type=int, help="Seed of rounds after the first (default: random).")
@click.option(
    "--jitter",
    type=float,
    metavar="S",
    help="Random start delay up to S seconds (periodic default 30).",
)
@click.option("--total-budget", type=float, metavar="S", help="Hard limit for the whole screen.")
@click.option(
    "--golden",
    "golden_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Golden-values file: compared, and extended with this screen's agreed values.",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the JSON record to this file (for ingest).",
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also store the record in this corecensus store, beside the crash populations.",
)
@click.option("--list-checks", is_flag=True, help="List the checks and exit.")
@click.option(
    "--sys-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/sys"),
    hidden=True,
)
@click.option(
    "--proc-root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/proc"),
    hidden=True,
)
def screen(
    *,
    cpus_text: str | None,
    budget: float | None,
    mode: str,
    as_json: bool,
    rounds: int | None,
    checks_text: str | None,
    seed: int | None,
    jitter: float | None,
    total_budget: float | None,
    golden_path: Path | None,
    out_path: Path | None,
    db: Path | None,
    list_checks: bool,
    sys_root: Path,
    proc_root: Path,
) -> int:
    """Screen this host's CPUs for silent data corruption.

    One worker process per CPU, pinned and verified, runs known-answer checks (libm, FMA/SIMD,
    big integers, hashes, CRC, compression, AES, memory, sorting, threads, cross-core) under a
    hard time budget. Exit status: 0 clean, 3 quarantine, 4 rescreen or software suspect.
    """
    err = Console(stderr=True)
    if list_checks:
        for name, spec in BUILTIN_CHECKS.items():
            click.echo(f"{name}\t{spec}")
        return 0
    try:
        config = ScreenConfig.for_mode(
            mode,
            budget_s=budget,
            cpus=parse_cpu_list(cpus_text) if cpus_text is not None else None,
            checks=tuple(c.strip() for c in checks_text.split(",") if c.strip())
            if checks_text
            else None,
            rounds=rounds,
            seed=seed,
            jitter_s=jitter,
            overall_budget_s=total_budget,
        )
        registry = default_registry()
        if config.checks is not None:
            registry.subset(config.checks)
        for path, what in ((golden_path, "--golden"), (out_path, "--out")):
            # Before the screen runs, not after: a mistyped directory must not cost a screen.
            if path is not None and not path.parent.is_dir():
                raise ConfigError(f"{what} {path}: directory {path.parent} does not exist")
    except CorecensusError as exc:
        return _fail(err, exc, 2)
    try:
        topology = read_topology(sys_root, proc_root)
    except CorecensusError as exc:
        return _fail(err, exc, 1)
    try:
        topology.select(config.cpus)
    except CorecensusError as exc:
        return _fail(err, exc, 2)
    try:
        status = (
            err.status(f"screening ({config.mode}, {config.budget_s:g} s per CPU)...")
            if err.is_terminal and not as_json
            else contextlib.nullcontext()
        )
        from corecensus.app.screen import screen_and_record

        with status:
            result = screen_and_record(
                config,
                topology=topology,
                proc_root=proc_root,
                env=os.environ,
                golden_path=golden_path,
                out_path=out_path,
                db=db,
            )
    except CorecensusError as exc:
        return _fail(err, exc, 1)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=1))
    else:
        show(screen_view(result))
    return _exit_code(result)


def _fail(err: Console, exc: CorecensusError, code: int) -> int:
    error(f"screen: {exc}")
    return code
