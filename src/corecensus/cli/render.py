"""The render layer: results -> Rich renderables. Pure functions; the commands print.

Every string that comes from outside (host names, paths, signatures, evidence, detail text) goes
through :func:`plain`: a :class:`~rich.text.Text` is never read as markup (Rich would eat
``[rsp-8]`` or ``host [rack-7]``), and control characters are shown escaped so a host name
cannot move the cursor, retitle the terminal or forge a line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from corecensus.cli.escape import escape_control
from corecensus.model import CrashRecord, ParseStatus

if TYPE_CHECKING:  # imported by the commands that need them (inspect stays light)
    from corecensus.epidemiology import FleetAnalysis, PopulationFinding
    from corecensus.epidemiology.racewindow import RaceRateCheck
    from corecensus.screening import ScreenResult

__all__ = [
    "agent_status_view",
    "analysis_view",
    "demo_view",
    "escape_control",
    "ingest_view",
    "kv_grid",
    "plain",
    "record_view",
    "screen_view",
]


def plain(value: object, style: str = "") -> Text:
    """Outside data as text: never markup, controls escaped."""
    return Text(escape_control(str(value)), style=style)


def kv_grid(rows: Iterable[tuple[str, object]]) -> Table:
    """A two-column key/value grid whose values are plain text."""
    t = Table(show_header=False, box=None, padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    for key, value in rows:
        t.add_row(plain(key), plain(value))
    return t


_VERDICT_STYLE = {"hardware-suspect": "bold red", "software": "bold cyan", "inconclusive": "yellow"}


def _time(us: int | None) -> str:
    if us is None:
        return "-"
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%d %H:%M")


def analysis_view(
    analysis: FleetAnalysis,
    *,
    evidence: bool = True,
    screens: Sequence[Mapping[str, Any]] = (),
    notes: Sequence[str] = (),
    race_checks: Mapping[str, RaceRateCheck] | None = None,
) -> RenderableType:
    """Populations ranked by impact, verdicts, suspects, onsets; the race-window checks when
    asked for; evidence panels; flagged hosts; the latest SDC screens; first, what in the
    inputs makes rates or onsets doubtful."""
    parts: list[RenderableType] = [plain("warning: " + n, "bold yellow") for n in notes]
    t = Table(
        title=f"{len(analysis.populations)} crash populations, {analysis.crashes} crashes",
        title_justify="left",
    )
    t.add_column("#", justify="right")
    t.add_column("verdict")
    t.add_column("crashes", justify="right")
    t.add_column("hosts", justify="right")
    t.add_column("signature")
    t.add_column("suspects / onset")
    for i, p in enumerate(analysis.populations, 1):
        t.add_row(
            str(i),
            Text(str(p.verdict), style=_VERDICT_STYLE.get(str(p.verdict), "")),
            str(p.crashes),
            str(p.hosts),
            plain(p.signature[:70]),
            plain(_who(p)),
        )
    parts.append(t)
    if race_checks:
        parts.append(_race_table(analysis, race_checks))
    if not analysis.rates_available:
        parts.append(
            Text(
                "rates unavailable: no exposure (give --exposure exposure.csv, or run agents that send heartbeats)",
                style="yellow",
            )
        )
    if evidence:
        for i, p in enumerate(analysis.populations, 1):
            body = Text()
            if p.anomalies:
                body.append(
                    "anomalies: " + escape_control(", ".join(p.anomalies)) + "\n", "magenta"
                )
            if p.top_frames:
                body.append("frames: " + escape_control(" | ".join(p.top_frames[:6])) + "\n")
            for e in p.evidence:
                body.append("• " + escape_control(e) + "\n")
            if race_checks and p.id in race_checks:
                body.append("• " + escape_control(race_checks[p.id].sentence()) + "\n")
            for r in p.recommendations:
                body.append("→ " + escape_control(r) + "\n", style="bold")
            parts.append(
                Panel(
                    body,
                    title=plain(f"#{i} {p.verdict}: {p.signature[:80]}"),
                    title_align="left",
                    border_style=_VERDICT_STYLE.get(str(p.verdict), ""),
                )
            )
    if analysis.hosts:
        h = Table(title="flagged hosts", title_justify="left")
        h.add_column("host")
        h.add_column("kind")
        h.add_column("cpu", justify="right")
        h.add_column("crashes", justify="right")
        h.add_column("p-value", justify="right")
        h.add_column("first alarm")
        for f in analysis.hosts:
            h.add_row(
                plain(f.host),
                plain(f.kind),
                "-" if f.cpu is None else str(f.cpu),
                str(f.crashes),
                f"{f.p_value:.2g}",
                _time(f.first_alarm_us),
            )
        parts.append(h)
    if screens:
        sc = Table(title="latest SDC screens", title_justify="left")
        sc.add_column("host")
        sc.add_column("time")
        sc.add_column("mode")
        sc.add_column("decision")
        sc.add_column("quarantined CPUs")
        for scr in screens:
            cpus = ",".join(str(c) for c in scr.get("quarantine_cpus", ())) or "-"
            sc.add_row(
                plain(scr["host"]),
                _time(int(scr["time_us"])),
                plain(scr["mode"]),
                plain(scr["decision"]),
                plain(cpus),
            )
        parts.append(sc)
    return Group(*parts)


def _race_table(analysis: FleetAnalysis, checks: Mapping[str, RaceRateCheck]) -> Table:
    """One row per signal-race population: the rate its window implies beside the observed."""
    t = Table(
        title="signal races: the crash rate the window implies (events × signal Hz × window)",
        title_justify="left",
    )
    t.add_column("#", justify="right")
    t.add_column("interrupted function")
    t.add_column("window")
    t.add_column("implied /process-h", justify="right")
    t.add_column("observed /process-h (95%)", justify="right")
    t.add_column("observed/implied", justify="right")
    for i, p in enumerate(analysis.populations, 1):
        c = checks.get(p.id)
        if c is None:
            continue
        w = c.window
        window = f"{w.instructions} insn × {c.ns_per_instruction:g} ns" + (
            " (binary)" if w.measured else " (offsets seen)"
        )
        observed = "- (no exposure)"
        if c.observed_per_hour is not None:
            observed = f"{c.observed_per_hour:.3g} ({c.observed_low:.3g}–{c.observed_high:.3g})"
        ratio = c.ratio
        t.add_row(
            str(i),
            plain(c.key),
            plain(window),
            f"{c.implied_per_hour:.3g}",
            observed,
            "-" if ratio is None else f"{ratio:.3g} ({c.agreement})",
        )
    return t


def _who(p: PopulationFinding) -> str:
    if p.suspects:
        return ", ".join(
            f"{s.host}" + (f" cpu {s.cpu}" if s.cpu is not None else "") + f" ({s.crashes})"
            for s in p.suspects[:3]
        )
    if p.onset is not None:
        return f"onset {_time(p.onset.time_us)} with {p.onset.version}"
    return ""


def ingest_view(summary: Mapping[str, Any]) -> RenderableType:
    """The ``ingest`` summary: counts, then the reasons cores were not fully parsed."""
    t = Table(
        title=plain(f"ingest into {summary['db']}"),
        title_justify="left",
        show_header=False,
        box=None,
    )
    t.add_column(style="bold")
    t.add_column(justify="right")
    for key in ("cores", "ingested", "duplicates", "ok", "partial", "unparsed", "screens"):
        t.add_row(key, str(summary[key]))
    parts: list[RenderableType] = [t]
    reasons: Mapping[str, int] = summary["reasons"]
    if reasons:
        r = Table(title="not fully parsed, by reason", title_justify="left")
        r.add_column("cores", justify="right")
        r.add_column("reason")
        for reason, n in list(reasons.items())[:15]:
            r.add_row(str(n), plain(reason))
        parts.append(r)
    return Group(*parts)


def _hex(v: int | None) -> str:
    return "-" if v is None else f"{v:#x}"


_STATUS_STYLE = {"ok": "green", "partial": "yellow", "unparsed": "red"}


def record_view(r: CrashRecord) -> RenderableType:
    """One crash record as ``inspect`` shows it: process, signal, registers, anomalies,
    backtrace, signal frames, the stack window, and every problem."""
    parts: list[RenderableType] = [
        Text.assemble(
            ("core ", "bold"),
            plain(r.source or "?"),
            "  ",
            (str(r.status), _STATUS_STYLE[str(r.status)]),
        )
    ]
    if r.status is ParseStatus.UNPARSED:
        parts.extend(plain("  " + e, "red") for e in r.errors)
        return Group(*parts)
    head: list[tuple[str, object]] = [
        (
            "process",
            f"{r.comm or '?'} (pid {r.pid}, {r.threads} threads, crashed tid {r.crashed_tid})",
        ),
        ("exe", r.exe or "?"),
        ("arch", f"{r.arch}  (written by {r.writer})"),
        (
            "signal",
            f"{r.signal_name} ({r.signal}) {r.si_code_name or ''}  "
            f"fault address {_hex(r.fault_address)}",
        ),
    ]
    if r.instruction:
        head.append(("instruction", f"{r.instruction}  (computes {_hex(r.effective_address)})"))
    pcname = "rip" if "rip" in r.registers else next(iter(r.registers), "")
    if r.registers:
        sp = next((k for k in ("rsp", "esp", "sp", "r1", "r15") if k in r.registers), None)
        head.append(
            (
                "registers",
                f"{pcname}={_hex(r.registers.get(pcname))} {sp}={_hex(r.registers.get(sp or ''))}",
            )
        )
    if r.cpu is not None:
        head.append(("cpu", r.cpu))
    parts.append(kv_grid(head))
    if r.anomalies:
        t = Table(title="anomalies", title_justify="left", show_edge=False)
        t.add_column("name", style="bold magenta")
        t.add_column("confidence", justify="right")
        t.add_column("detail")
        for a in r.anomalies:
            t.add_row(plain(a.name), f"{a.confidence:.2f}", plain(a.detail))
        parts.append(t)
    else:
        parts.append(Text("anomalies: none", style="dim"))
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
            plain((f.function or "??") + (" (recovered)" if f.recovered else "")),
            plain(where),
        )
    parts.append(t)
    if r.signal_frames:
        t = Table(title="signal frames in the stack", title_justify="left", show_edge=False)
        t.add_column("offset from sp", justify="right")
        t.add_column("signal")
        t.add_column("interrupted pc")
        t.add_column("function")
        for s in r.signal_frames:
            t.add_row(
                str(s.offset),
                str(s.signal or "?"),
                _hex(s.interrupted_pc),
                plain(s.function or "??"),
            )
        parts.append(t)
    named = [w for w in r.stack_window if w.after_call]
    parts.append(
        Text(
            f"stack window: {len(r.stack_window)} code addresses "
            f"({len(named)} return addresses) within ±8 KiB of sp",
            style="dim",
        )
    )
    parts.extend(plain("note: " + e, "yellow") for e in r.errors)
    return Group(*parts)


def demo_view(summary: Mapping[str, Any]) -> RenderableType:
    """The demo fleet's crashes by anomaly class."""
    t = Table(
        title=f"demo fleet: {summary['crashes']} real kernel cores from {summary['hosts']} "
        "simulated hosts",
        title_justify="left",
    )
    t.add_column("anomaly class")
    t.add_column("crashes", justify="right")
    classes: Mapping[str, int] = summary["anomaly_classes"]
    for cls, n in sorted(classes.items(), key=lambda kv: -kv[1]):
        t.add_row(plain(cls), str(n))
    return t


def screen_view(result: ScreenResult) -> RenderableType:
    """The CPU x check table, per-CPU facts, and the decision with its reasons."""
    from corecensus.screening import Outcome, ScreenVerdict

    _CELL = {
        Outcome.PASSED: ("pass", "green"),
        Outcome.FAILED_REPRODUCIBLE: ("FAIL", "bold red"),
        Outcome.FAILED_TRANSIENT: ("flaky", "yellow"),
        Outcome.TIMED_OUT: ("timeout", "magenta"),
        Outcome.CRASHED: ("crash", "bold magenta"),
        Outcome.SKIPPED: ("skip", "dim"),
        Outcome.SOFTWARE_SUSPECT: ("sw?", "cyan"),
        Outcome.INCONCLUSIVE: ("?", "yellow"),
        Outcome.IMPLICATED: ("implicated", "yellow"),
    }
    _SCREEN_VERDICT_STYLE = {
        ScreenVerdict.CLEAN: "bold green",
        ScreenVerdict.QUARANTINE_CPUS: "bold red",
        ScreenVerdict.QUARANTINE_HOST: "bold red",
        ScreenVerdict.SOFTWARE_SUSPECT: "bold cyan",
        ScreenVerdict.RESCREEN: "bold yellow",
    }
    parts: list[RenderableType] = []
    cpus = [c.cpu for c in result.cpus]
    table = Table(
        title=plain(f"SDC screen of {result.host} ({result.mode}, {result.seconds:.1f} s)"),
        show_lines=False,
    )
    table.add_column("check")
    table.add_column("family", style="dim")
    for cpu in cpus:
        table.add_column(f"CPU {cpu}", justify="center")
    checks = list(dict.fromkeys(r.check for r in result.results))
    for check in checks:
        family = next((r.family for r in result.results if r.check == check and r.family), "")
        cells: list[Text] = []
        for cpu in cpus:
            r = result.result(cpu, check)
            label, style = _CELL[r.outcome]
            if (r.outcome.is_failure or r.outcome is Outcome.IMPLICATED) and r.suspect_cpu not in (
                None,
                cpu,
            ):
                label = f"{label}->{r.suspect_cpu}"
            if r.runs > 1 and r.outcome is Outcome.PASSED:
                label = f"{label} x{r.runs}"
            cells.append(Text(label, style=style))
        table.add_row(plain(check), plain(family), *cells)
    table.add_section()
    table.add_row("worker", "", *[Text(str(c.status)) for c in result.cpus])
    table.add_row("rounds", "", *[Text(str(c.rounds)) for c in result.cpus])
    table.add_row("cpu s", "", *[Text(f"{c.cpu_seconds:.2f}") for c in result.cpus])
    if any(c.duty for c in result.cpus):
        table.add_row(
            "duty cycle",
            "",
            *[Text(f"{c.duty.duty_cycle:.2%}" if c.duty else "-") for c in result.cpus],
        )
    parts.append(table)
    d = result.decision
    parts.append(Text(f"decision: {d.verdict}", style=_SCREEN_VERDICT_STYLE[d.verdict]))
    for reason in d.reasons:
        parts.append(plain(f"  - {reason}"))
    if d.verdict is not ScreenVerdict.CLEAN:
        parts.append(Text("\nfailures:", style="bold"))
        for r in result.results:
            if r.outcome not in (Outcome.PASSED, Outcome.SKIPPED):
                blamed = (
                    f" [blamed on CPU {r.suspect_cpu}]"
                    if r.suspect_cpu is not None and r.suspect_cpu != r.cpu
                    else ""
                )
                parts.append(
                    plain(
                        f"  CPU {r.cpu} {r.check}: {r.outcome}{blamed}; expected {r.expected}; "
                        f"observed {r.observed}"
                    )
                )
    return Group(*parts)


def _ago(wall: object, now: float) -> str:
    if not isinstance(wall, (int, float)):
        return "never"
    stamp = datetime.fromtimestamp(float(wall), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{stamp} ({max(0.0, now - float(wall)):.0f} s ago)"


def agent_status_view(status: Mapping[str, Any], now: float | None = None) -> RenderableType:
    """``corecensus agent status``: one screen of what the agent does on this host."""
    import time

    now = time.time() if now is None else now
    spool = status.get("spool") or {}
    handler = status.get("handler") or {}
    daemon = status.get("daemon")
    lost = status.get("lost") or {}
    rows: list[tuple[str, object]] = [
        ("kill switch", status.get("disabled") or "off"),
        ("handler", handler.get("state", "unknown")),
        ("core_pattern", handler.get("core_pattern", "?")),
    ]
    if handler.get("chains_to") is not None:
        rows.append(("chains to", handler["chains_to"] or "(nothing)"))
    rows += [
        (
            "spool",
            f"{spool.get('records', 0)} records, {spool.get('bytes', 0)} of "
            f"{spool.get('max_bytes', 0)} bytes",
        ),
        ("lost (unreported)", ", ".join(f"{k} {v}" for k, v in sorted(lost.items())) or "none"),
        (
            "stored cores",
            f"{status.get('stored_cores', {}).get('count', 0)} "
            f"({status.get('stored_cores', {}).get('bytes', 0)} bytes)",
        ),
    ]
    errors: list[str] = []
    if isinstance(daemon, dict):
        up = daemon.get("upload") or {}
        rows += [
            (
                "daemon",
                f"pid {daemon.get('pid')} "
                f"{'running' if daemon.get('running') else 'NOT running'}, "
                f"updated {_ago(daemon.get('updated'), now)}",
            ),
            ("collector", daemon.get("collector") or "(none configured)"),
            ("last upload", _ago(up.get("last_success"), now)),
            ("upload failures in a row", up.get("consecutive_failures", 0)),
            ("last heartbeat", _ago((daemon.get("last") or {}).get("heartbeat"), now)),
            (
                "last screen",
                f"{_ago((daemon.get('last') or {}).get('screen'), now)}"
                f" {daemon.get('last_screen_verdict') or ''}".rstrip(),
            ),
        ]
        errors = [str(e) for e in daemon.get("errors") or []]
    else:
        rows.append(("daemon", "never ran from this state directory"))
    parts: list[RenderableType] = [kv_grid(rows)]
    if errors:
        parts.append(Text("recent errors", style="bold"))
        parts.extend(plain("  " + e, "red") for e in errors[-5:])
    return Panel(Group(*parts), title=plain(f"corecensus agent ({status.get('state_dir')})"))
