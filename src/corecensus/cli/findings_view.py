"""Rich rendering of an analysis: populations ranked by impact, verdicts, suspects, onsets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from corecensus.epidemiology import Analysis, PopulationFinding

_VERDICT_STYLE = {"hardware-suspect": "bold red", "software": "bold cyan", "inconclusive": "yellow"}


def _time(us: int | None) -> str:
    if us is None:
        return "-"
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%d %H:%M")


def render_analysis(
    out: Console,
    analysis: Analysis,
    *,
    evidence: bool = True,
    screens: Sequence[Mapping[str, Any]] = (),
) -> None:
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
            Text(p.signature[:70]),
            Text(_who(p)),
        )
    out.print(t)
    if not analysis.rates_available:
        out.print(
            Text(
                "rates unavailable: no exposure (give --exposure exposure.csv, or run agents that send heartbeats)",
                style="yellow",
            )
        )
    if evidence:
        for i, p in enumerate(analysis.populations, 1):
            body = Text()
            if p.anomalies:
                body.append("anomalies: " + ", ".join(p.anomalies) + "\n", style="magenta")
            if p.top_frames:
                body.append("frames: " + " | ".join(p.top_frames[:6]) + "\n")
            for e in p.evidence:
                body.append("• " + e + "\n")
            for r in p.recommendations:
                body.append("→ " + r + "\n", style="bold")
            out.print(
                Panel(
                    body,
                    title=f"#{i} {p.verdict}: {p.signature[:80]}",
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
                f.host,
                str(f.kind),
                "-" if f.cpu is None else str(f.cpu),
                str(f.crashes),
                f"{f.p_value:.2g}",
                _time(f.first_alarm_us),
            )
        out.print(h)
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
                str(scr["host"]),
                _time(int(scr["time_us"])),
                str(scr["mode"]),
                str(scr["decision"]),
                cpus,
            )
        out.print(sc)


def _who(p: PopulationFinding) -> str:
    if p.suspects:
        return ", ".join(
            f"{s.host}" + (f" cpu {s.cpu}" if s.cpu is not None else "") + f" ({s.crashes})"
            for s in p.suspects[:3]
        )
    if p.onset is not None:
        return f"onset {_time(p.onset.time_us)} with {p.onset.version}"
    return ""
