"""``corecensus inspect CORE``: one core dump → a crash record (Rich summary or ``--json``)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from corecensus.cli.output import console, print_json, quiet_libraries
from corecensus.model import CrashRecord, ParseStatus


@click.command()
@click.argument("core", type=str)
@click.option("--json", "as_json", is_flag=True, help="Print the crash record as one JSON object.")
@click.option(
    "--binaries",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    multiple=True,
    help="Directory of executables/libraries/debug files, matched to the core by build-id.",
)
@click.option(
    "--head-bytes",
    type=click.IntRange(min=64),
    default=None,
    help="Read only the first N bytes of the (decompressed) core, as a pipeline that fetches "
    "only the head of each core would.",
)
@click.option("--no-symbols", is_flag=True, help="Register and anomaly pass only (no drgn).")
def inspect(
    core: str, as_json: bool, binaries: tuple[Path, ...], head_bytes: int | None, no_symbols: bool
) -> int:
    """Read one core dump (plain, .zst, .lz4, .xz, or - for stdin) into a crash record."""
    from corecensus.coredump import inspect_core
    from corecensus.ingest.metadata import collect_metadata

    quiet_libraries()
    meta = collect_metadata(core).fields if core != "-" else {}
    record = inspect_core(
        core, head_bytes=head_bytes, binaries=binaries, symbolize=not no_symbols, metadata=meta
    )
    if as_json:
        print_json(record.to_json())
    else:
        render(record)
    return 1 if record.status is ParseStatus.UNPARSED else 0


class _Grid(Table):
    """A two-column key/value grid whose values are plain text, never Rich markup."""

    def __init__(self) -> None:
        super().__init__(show_header=False, box=None, padding=(0, 2))
        self.add_column(style="bold")
        self.add_column()

    def add_row(self, *cells: object, **kwargs: object) -> None:
        super().add_row(*(Text(str(c)) for c in cells))


def _hex(v: int | None) -> str:
    return "-" if v is None else f"{v:#x}"


def render(r: CrashRecord) -> None:
    out = console()
    style = {"ok": "green", "partial": "yellow", "unparsed": "red"}[str(r.status)]
    out.print(Text.assemble(("core ", "bold"), (r.source or "?", ""), "  ", (str(r.status), style)))
    if r.status is ParseStatus.UNPARSED:
        for e in r.errors:
            out.print(Text("  " + e, style="red"))
        return
    head = _Grid()
    head.add_row(
        "process",
        f"{r.comm or '?'} (pid {r.pid}, {r.threads} threads, crashed tid {r.crashed_tid})",
    )
    head.add_row("exe", r.exe or "?")
    head.add_row("arch", f"{r.arch}  (written by {r.writer})")
    head.add_row(
        "signal",
        f"{r.signal_name} ({r.signal}) {r.si_code_name or ''}  fault address {_hex(r.fault_address)}",
    )
    if r.instruction:
        head.add_row("instruction", f"{r.instruction}  (computes {_hex(r.effective_address)})")
    pcname = "rip" if "rip" in r.registers else next(iter(r.registers), "")
    if r.registers:
        sp = next((k for k in ("rsp", "esp", "sp", "r1", "r15") if k in r.registers), None)
        head.add_row(
            "registers",
            f"{pcname}={_hex(r.registers.get(pcname))} {sp}={_hex(r.registers.get(sp or ''))}",
        )
    if r.cpu is not None:
        head.add_row("cpu", str(r.cpu))
    out.print(head)
    if r.anomalies:
        t = Table(title="anomalies", title_justify="left", show_edge=False)
        t.add_column("name", style="bold magenta")
        t.add_column("confidence", justify="right")
        t.add_column("detail")
        for a in r.anomalies:
            t.add_row(a.name, f"{a.confidence:.2f}", a.detail)
        out.print(t)
    else:
        out.print(Text("anomalies: none", style="dim"))
    t = Table(title="backtrace", title_justify="left", show_edge=False)
    t.add_column("#", justify="right")
    t.add_column("pc")
    t.add_column("function")
    t.add_column("module+offset")
    for i, f in enumerate(r.frames):
        where = f"{Path(f.module).name}+{f.offset:#x}" if f.module and f.offset is not None else "?"
        t.add_row(
            str(i),
            _hex(f.pc),
            (f.function or "??") + (" (recovered)" if f.recovered else ""),
            where,
        )
    out.print(t)
    if r.signal_frames:
        t = Table(title="signal frames in the stack", title_justify="left", show_edge=False)
        t.add_column("offset from sp", justify="right")
        t.add_column("signal")
        t.add_column("interrupted pc")
        t.add_column("function")
        for s in r.signal_frames:
            t.add_row(
                str(s.offset), str(s.signal or "?"), _hex(s.interrupted_pc), s.function or "??"
            )
        out.print(t)
    named = [w for w in r.stack_window if w.after_call]
    out.print(
        Text(
            f"stack window: {len(r.stack_window)} code addresses "
            f"({len(named)} return addresses) within ±8 KiB of sp",
            style="dim",
        )
    )
    for e in r.errors:
        out.print(Text("note: " + e, style="yellow"))
