"""Fleet simulator benchmark: does ``analyze`` find faulty hosts without blaming healthy ones?

Run: ``PYTHONPATH=src python -m bench.fleet_sim`` (or ``python bench/fleet_sim/run.py``).
Options: ``--seeds 20 --scenarios easy,hard --budget 0.5 --out docs/fleet_sim.md``.

For each scenario: null fleets (same configuration, no faulty hosts; seeds 1000+i) calibrate the
thresholds — corecensus's end-of-window and streaming p-value thresholds and the raw-count
threshold — to ``--budget`` false alarms per 10,000 hosts; then faulty fleets (seeds i) are
analyzed with the default parameters and with the calibrated thresholds, through the same
``corecensus.epidemiology.analyze`` call the CLI makes. Every figure is a mean ± standard
deviation over seeds (or a pooled proportion, with its count).
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    root = Path(__file__).resolve().parents[2]
    sys.path[:0] = [str(root), str(root / "src")]

import numpy as np
from bench.fleet_sim import production
from bench.fleet_sim.baselines import poisson_bh_flags, raw_counts
from bench.fleet_sim.fleet import (
    DAY_US,
    HOUR_US,
    INTERPRETATION,
    PRODUCTION,
    SCENARIOS,
    Fleet,
    FleetConfig,
    Scenario,
    simulate,
)

from corecensus.epidemiology import (
    AnalysisParams,
    FleetAnalysis,
    HostKind,
    PopulationVerdict,
    analyze,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
# The prototype's per-host Poisson CUSUM ran at about 2 false hosts per 10,000 per month.
CUSUM_RATE = 2.0
STREAM_AT_CUSUM = "corecensus at the CUSUM's 2 false /10k"
BINS = ((1, 2), (3, 4), (5, 9), (10, 19), (20, 10**9))
BIN_NAMES = ("1-2", "3-4", "5-9", "10-19", "20+")


@dataclass
class MethodStats:
    """Per-seed detection results of one method."""

    tp: list[int] = field(default_factory=list)
    fp: list[int] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)
    precision: list[float] = field(default_factory=list)
    recall5: list[float] = field(default_factory=list)
    bins_hit: np.ndarray = field(default_factory=lambda: np.zeros(len(BINS), dtype=int))
    bins_all: np.ndarray = field(default_factory=lambda: np.zeros(len(BINS), dtype=int))
    # streaming
    stream_fp: list[int] = field(default_factory=list)
    days_to_alarm: list[float] = field(default_factory=list)
    crashes_to_alarm: list[int] = field(default_factory=list)
    stream_recall: list[float] = field(default_factory=list)
    by_fifth: list[bool] = field(default_factory=list)  # hosts with >= 5 faulty crashes


@dataclass
class SoftwareStats:
    onset_error_h: list[float] = field(default_factory=list)
    changepoint_error_h: list[float] = field(default_factory=list)
    version_ok: list[bool] = field(default_factory=list)
    attribute_blame: list[int] = field(default_factory=list)
    software: list[int] = field(default_factory=list)
    inconclusive: list[int] = field(default_factory=list)
    hardware: list[int] = field(default_factory=list)
    populations: list[int] = field(default_factory=list)
    blamed_on_host: list[int] = field(default_factory=list)
    confounder_software: list[bool] = field(default_factory=list)
    confounder_hosts_flagged: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    crashes: list[int] = field(default_factory=list)


def faulty_counts(fleet: Fleet) -> np.ndarray:
    return np.array([t.size for t in fleet.faulty.crash_times], dtype=int)


def score(flagged: set[int], fleet: Fleet, stats: MethodStats, hosts: int) -> None:
    faulty = set(fleet.faulty.host.tolist())
    counts = faulty_counts(fleet)
    tp = len(flagged & faulty)
    fp = len(flagged - faulty)
    stats.tp.append(tp)
    stats.fp.append(fp)
    stats.recall.append(tp / max(len(faulty), 1))
    stats.precision.append(tp / len(flagged) if flagged else 1.0)
    big = [h for h, k in zip(fleet.faulty.host.tolist(), counts.tolist(), strict=True) if k >= 5]
    if big:
        stats.recall5.append(sum(h in flagged for h in big) / len(big))
    for h, k in zip(fleet.faulty.host.tolist(), counts.tolist(), strict=True):
        for b, (lo, hi) in enumerate(BINS):
            if lo <= k <= hi:
                stats.bins_all[b] += 1
                stats.bins_hit[b] += h in flagged


def host_id(name: str) -> int:
    """The simulator's host number of a host name (``host-00042`` -> 42): the crash facts
    name hosts, and a table's codes cover only the hosts it has rows for."""
    return int(name.rsplit("-", 1)[1])


def score_stream(analysis: FleetAnalysis, fleet: Fleet, stats: MethodStats) -> None:
    scan = analysis.scan
    assert scan is not None
    alarm_at = {
        host_id(analysis.host_names[i]): int(scan.first_alarm_us[i])
        for i in np.flatnonzero(scan.first_alarm_us >= 0).tolist()
    }
    alarmed = set(alarm_at)
    faulty = fleet.faulty.host.tolist()
    stats.stream_fp.append(len(alarmed - set(faulty)))
    hits = 0
    for i, h in enumerate(faulty):
        times = fleet.faulty.crash_times[i]
        if times.size >= 5:
            fifth = int(times[4])
            stats.by_fifth.append(h in alarmed and alarm_at[h] <= fifth)
        if h not in alarmed:
            continue
        hits += 1
        t = alarm_at[h]
        stats.days_to_alarm.append((t - int(fleet.faulty.onset_us[i])) / DAY_US)
        stats.crashes_to_alarm.append(int(np.searchsorted(fleet.faulty.crash_times[i], t, "right")))
    stats.stream_recall.append(hits / max(len(faulty), 1))


def score_software(analysis: FleetAnalysis, fleet: Fleet, stats: SoftwareStats) -> None:
    reg = analysis.population(fleet.regression_population)
    if reg.onset is not None:
        stats.onset_error_h.append(abs(reg.onset.time_us - fleet.rollout_us) / HOUR_US)
        if reg.onset.changepoint_us is not None:
            stats.changepoint_error_h.append(
                abs(reg.onset.changepoint_us - fleet.rollout_us) / HOUR_US
            )
    stats.version_ok.append(reg.onset is not None and reg.onset.version == "2")
    blame = 0
    verdicts = {
        PopulationVerdict.SOFTWARE: 0,
        PopulationVerdict.INCONCLUSIVE: 0,
        PopulationVerdict.HARDWARE: 0,
    }
    on_host = 0
    for p in analysis.populations:
        blame += sum(a.attribute in ("cpu_model", "kernel", "microcode") for a in p.attributes)
        if p.id in fleet.software_populations:
            verdicts[p.verdict] += 1
            on_host += bool(p.suspects)
    stats.attribute_blame.append(blame)
    stats.software.append(verdicts[PopulationVerdict.SOFTWARE])
    stats.inconclusive.append(verdicts[PopulationVerdict.INCONCLUSIVE])
    stats.hardware.append(verdicts[PopulationVerdict.HARDWARE])
    stats.populations.append(len(fleet.software_populations))
    stats.blamed_on_host.append(on_host)
    if fleet.confounder_hosts.size:
        conf = analysis.population(fleet.confounder_population)
        stats.confounder_software.append(conf.verdict is PopulationVerdict.SOFTWARE)
        flagged = {host_id(h) for h in analysis.flagged_hosts(HostKind.HARDWARE)}
        stats.confounder_hosts_flagged.append(len(flagged & set(fleet.confounder_hosts.tolist())))


def hardware_flags(analysis: FleetAnalysis) -> set[int]:
    return {host_id(h) for h in analysis.flagged_hosts(HostKind.HARDWARE)}


def calibrate(values: np.ndarray, allowed: int, *, lower_is_alarm: bool) -> float:
    """Threshold leaving exactly ``allowed`` alarms among the pooled null values."""
    v = np.sort(values) if lower_is_alarm else np.sort(values)[::-1]
    if allowed >= v.size:
        return float(v[-1])
    if lower_is_alarm:
        # alarm when p <= t: take t just below the (allowed+1)-th smallest
        return float(np.nextafter(v[allowed], 0.0)) if allowed < v.size else 1.0
    return float(v[allowed] + 1)  # alarm when count >= t


@dataclass
class ScenarioResult:
    scenario: Scenario
    seeds: int
    thresholds: dict[str, float]
    methods: dict[str, MethodStats]
    stream_only: dict[str, MethodStats]
    software: SoftwareStats
    null_fa: dict[str, float]


def run_scenario(scenario: Scenario, seeds: int, budget: float, cfg: FleetConfig) -> ScenarioResult:
    defaults = AnalysisParams()
    null_p, null_stream, null_raw = [], [], []
    null_flags, null_alarms = [], []
    for i in range(seeds):
        fleet = simulate(1000 + i, scenario, faulty=False, config=cfg)
        a = analyze(fleet.crashes, fleet.exposure, fleet.deploys, params=defaults)
        assert a.scan is not None
        null_p.append(a.scan.p_value)
        null_stream.append(a.scan.min_stream_p)
        null_raw.append(raw_counts(fleet.crashes))
        # the default's own decisions: the whole-window test or a focused one (windows, the
        # two busiest CPUs), and the first alarm of the stream or of a windowed stream
        null_flags.append(int(np.count_nonzero(a.scan.flagged)))
        null_alarms.append(int(np.count_nonzero(a.scan.first_alarm_us >= 0)))
        print(f"  {scenario.name} null fleet {i + 1}/{seeds}", end="\r", file=sys.stderr)
    allowed = int(np.floor(budget * seeds * cfg.hosts / 10_000))
    t_end = calibrate(np.concatenate(null_p), allowed, lower_is_alarm=True)
    t_stream = calibrate(np.concatenate(null_stream), allowed, lower_is_alarm=True)
    t_raw = calibrate(np.concatenate(null_raw).astype(float), allowed, lower_is_alarm=False)
    null_fa = {
        "default": float(np.mean(null_flags)),
        "default-stream": float(np.mean(null_alarms)),
    }
    # calibrated: the whole-window test alone at thresholds from the null fleets (the focused
    # tests have their own budget, which calibration of this one threshold does not cover)
    calibrated = AnalysisParams(host_alpha=t_end, stream_alpha=t_stream, window_alpha=0.0)
    # the stream again at the prototype CUSUM's false-alarm rate, for a like-for-like comparison
    allowed_cusum = int(np.floor(CUSUM_RATE * seeds * cfg.hosts / 10_000))
    t_cusum = calibrate(np.concatenate(null_stream), allowed_cusum, lower_is_alarm=True)
    at_cusum = AnalysisParams(host_alpha=t_end, stream_alpha=t_cusum, window_alpha=0.0)
    methods = {
        k: MethodStats()
        for k in (
            "raw count",
            "Poisson+BH (all crashes)",
            "corecensus default",
            "corecensus calibrated",
        )
    }
    sw = SoftwareStats()
    stream_only = {STREAM_AT_CUSUM: MethodStats()}
    for i in range(seeds):
        fleet = simulate(i, scenario, faulty=True, config=cfg)
        t0 = time.perf_counter()
        a = analyze(fleet.crashes, fleet.exposure, fleet.deploys, params=defaults)
        sw.seconds.append(time.perf_counter() - t0)
        sw.crashes.append(len(fleet.crashes))
        score(hardware_flags(a), fleet, methods["corecensus default"], cfg.hosts)
        score_stream(a, fleet, methods["corecensus default"])
        score_software(a, fleet, sw)
        c = analyze(fleet.crashes, fleet.exposure, fleet.deploys, params=calibrated)
        score(hardware_flags(c), fleet, methods["corecensus calibrated"], cfg.hosts)
        score_stream(c, fleet, methods["corecensus calibrated"])
        k = analyze(fleet.crashes, fleet.exposure, fleet.deploys, params=at_cusum)
        score_stream(k, fleet, stream_only[STREAM_AT_CUSUM])
        counts = raw_counts(fleet.crashes)
        vocab = fleet.crashes.host.vocab
        raw_flags = {host_id(vocab[i]) for i in np.flatnonzero(counts >= t_raw).tolist()}
        score(raw_flags, fleet, methods["raw count"], cfg.hosts)
        score(
            {host_id(vocab[i]) for i in poisson_bh_flags(fleet.crashes, fleet.exposure)},
            fleet,
            methods["Poisson+BH (all crashes)"],
            cfg.hosts,
        )
        print(f"  {scenario.name} faulty fleet {i + 1}/{seeds}", end="\r", file=sys.stderr)
    print(file=sys.stderr)
    return ScenarioResult(
        scenario=scenario,
        seeds=seeds,
        thresholds={
            "end": t_end,
            "stream": t_stream,
            "raw": t_raw,
            "allowed": allowed,
            "cusum": t_cusum,
        },
        methods=methods,
        stream_only=stream_only,
        software=sw,
        null_fa=null_fa,
    )


def ms(values: list[float] | list[int], fmt: str = ".2f") -> str:
    if not values:
        return "n/a"
    arr = np.asarray(values, dtype=float)
    return f"{arr.mean():{fmt}} ± {arr.std(ddof=1) if arr.size > 1 else 0.0:{fmt}}"


def per10k(values: list[int], hosts: int) -> list[float]:
    return [v * 10_000 / hosts for v in values]


def render(results: list[ScenarioResult], cfg: FleetConfig, budget: float, cost: str) -> str:
    out: list[str] = []
    add = out.append
    add("# Fleet simulator results\n")
    add(
        "Generated by `PYTHONPATH=src python -m bench.fleet_sim` (bench/fleet_sim). Spec: "
        "FLEET_SIM.md (10,000 hosts, 30 days, easy and hard scenarios). Figures are mean ± "
        "standard deviation over seeds; detection by crash count and streaming figures pool "
        "all faulty hosts of all seeds. Faulty fleets use seeds 0..N-1, null fleets 1000..\n"
    )
    add(
        f"Hosts {cfg.hosts}, days {cfg.days}; calibration budget {budget:g} false alarms per "
        "10,000 hosts per 30 days on the pooled null fleets.\n"
    )
    for r in results:
        s = r.scenario
        add(f"## Scenario *{s.name}* ({r.seeds} seeds)\n")
        add(
            f"Faulty rates per day {list(s.faulty_rates)}, anomalous {s.faulty_anomalous:.0%}, "
            f"confounder {'yes' if s.confounder else 'no'}. Calibrated thresholds: end-of-window "
            f"p <= {r.thresholds['end']:.3g}, streaming p <= {r.thresholds['stream']:.3g}, raw "
            f"count >= {r.thresholds['raw']:.0f} (allowing {int(r.thresholds['allowed'])} alarms "
            f"over {r.seeds} null fleets; the calibrated rows run the whole-window test alone, "
            f"`window_alpha=0`). The defaults (`host_alpha` {AnalysisParams().host_alpha:g}, "
            f"`window_alpha` {AnalysisParams().window_alpha:g}) gave "
            f"{r.null_fa['default']:.2f} end-of-window and {r.null_fa['default-stream']:.2f} "
            "streaming false alarms per null fleet.\n"
        )
        add("### Hosts (end of window)\n")
        add(
            "| method | flagged true | flagged false | precision | recall | "
            "recall (≥5 faulty crashes) | false alarms /10k hosts |"
        )
        add("|---|---|---|---|---|---|---|")
        for name, m in r.methods.items():
            add(
                f"| {name} | {ms(m.tp)} | {ms(m.fp)} | {ms(m.precision)} | {ms(m.recall)} | "
                f"{ms(m.recall5)} | {ms(per10k(m.fp, cfg.hosts))} |"
            )
        add("")
        add("### Detection probability by the number of faulty crashes a host produced\n")
        add("| method | " + " | ".join(BIN_NAMES) + " |")
        add("|---|" + "---|" * len(BINS))
        for name, m in r.methods.items():
            cells = [
                f"{h / a:.2f} ({h}/{a})" if a else "n/a"
                for h, a in zip(m.bins_hit.tolist(), m.bins_all.tolist(), strict=True)
            ]
            add(f"| {name} | " + " | ".join(cells) + " |")
        add("")
        add("### Streaming (the same test after every crash)\n")
        add(
            "| method | alarmed faulty hosts (recall) | alarmed by the 5th faulty crash (hosts "
            "with ≥5) | median days onset→alarm | median faulty crashes before alarm | mean "
            "faulty crashes before alarm | false alarms /10k hosts |"
        )
        add("|---|---|---|---|---|---|---|")
        streams = {k: r.methods[k] for k in ("corecensus default", "corecensus calibrated")}
        for name, m in (streams | r.stream_only).items():
            med_d = f"{np.median(m.days_to_alarm):.1f}" if m.days_to_alarm else "n/a"
            med_c = f"{np.median(m.crashes_to_alarm):.0f}" if m.crashes_to_alarm else "n/a"
            mean_c = f"{np.mean(m.crashes_to_alarm):.1f}" if m.crashes_to_alarm else "n/a"
            fifth = f"{np.mean(m.by_fifth):.2f} ({sum(m.by_fifth)}/{len(m.by_fifth)})"
            add(
                f"| {name} | {ms(m.stream_recall)} | {fifth} | {med_d} | {med_c} | {mean_c} | "
                f"{ms(per10k(m.stream_fp, cfg.hosts))} |"
            )
        add("")
        sw = r.software
        add("### Software side (corecensus default)\n")
        add("| metric | value |")
        add("|---|---|")
        add(f"| regression onset error, hours (deploy-aligned onset) | {ms(sw.onset_error_h)} |")
        add(
            f"| regression onset error, hours (change point alone) | {ms(sw.changepoint_error_h)} |"
        )
        add(f"| regression attributed to version 2 | {sum(sw.version_ok)}/{len(sw.version_ok)} |")
        add(f"| false CPU-model / microcode / kernel signals per run | {ms(sw.attribute_blame)} |")
        tot = sum(sw.populations)
        add(
            f"| software populations called software / inconclusive / hardware-suspect | "
            f"{sum(sw.software)}/{sum(sw.inconclusive)}/{sum(sw.hardware)} of {tot} "
            f"({sum(sw.software) / tot:.3f} accuracy) |"
        )
        add(
            "| software populations blamed on a host (suspects listed) | "
            f"{sum(sw.blamed_on_host)} |"
        )
        if sw.confounder_software:
            add(
                f"| confounder called software | {sum(sw.confounder_software)}/"
                f"{len(sw.confounder_software)} |"
            )
            add(
                "| confounder hosts flagged as hardware (of 30) | "
                f"{ms(sw.confounder_hosts_flagged)} |"
            )
        add(f"| crashes per fleet | {ms(sw.crashes, '.0f')} |")
        add(f"| analyze wall time per fleet, s | {ms(sw.seconds)} |")
        add("")
    add(reference_table(results, cfg.hosts))
    add(cost)
    add("## Interpretation of the spec\n")
    for line in INTERPRETATION:
        add(f"- {line}")
    add("")
    return "\n".join(out)


def reference_table(results: list[ScenarioResult], hosts: int) -> str:
    """The prototype's figures from FLEET_SIM.md beside this run's."""
    by = {r.scenario.name: r for r in results}
    rows = [
        "## Against the reference figures (FLEET_SIM.md, prototype, 20 seeds)\n",
        "| figure | prototype | corecensus (this run) |",
        "|---|---|---|",
    ]

    def cell(name: str, method: str) -> str:
        r = by.get(name)
        if r is None:
            return "not run"
        m = r.methods[method]
        fp = np.mean(per10k(m.fp, hosts))
        return (
            f"precision {np.mean(m.precision):.2f}, recall {np.mean(m.recall):.2f} "
            f"(≥5 faulty crashes: {np.mean(m.recall5):.2f}), {fp:.2f} false /10k"
        )

    rows.append(
        f"| raw-count ranking, both | 0 of 10 found | easy: {cell('easy', 'raw count')}; "
        f"hard: {cell('hard', 'raw count')} |"
    )
    rows.append(
        "| exposure-adjusted Poisson + BH, all crashes | about half found, ~180 false /10k "
        f"| easy: {cell('easy', 'Poisson+BH (all crashes)')} |"
    )
    rows.append(
        "| anomaly-class tests, easy | precision 0.8-1.0, recall ~0.65 | calibrated: "
        f"{cell('easy', 'corecensus calibrated')}; default: "
        f"{cell('easy', 'corecensus default')} |"
    )
    rows.append(
        "| best combination, hard | precision 0.74, recall 0.40 | calibrated: "
        f"{cell('hard', 'corecensus calibrated')}; default: "
        f"{cell('hard', 'corecensus default')} |"
    )
    easy = by.get("easy")
    if easy is not None:
        m = easy.stream_only[STREAM_AT_CUSUM]
        c = easy.methods["corecensus calibrated"]
        rows.append(
            "| per-host Poisson CUSUM, easy | median 3 faulty crashes before alarm at ~2 false "
            f"/10k | median {np.median(m.crashes_to_alarm):.0f} (mean "
            f"{np.mean(m.crashes_to_alarm):.1f}) at {np.mean(per10k(m.stream_fp, hosts)):.2f} "
            f"false /10k; median {np.median(c.crashes_to_alarm):.0f} at "
            f"{np.mean(per10k(c.stream_fp, hosts)):.2f} false /10k |"
        )
    rows.append("")
    return "\n".join(rows)


def cost_table(cfg: FleetConfig) -> str:
    """Wall time and peak traced memory of analyze as hosts, days and records grow."""
    rows = [
        "## Cost as hosts, days and records grow (scenario hard, seed 0; onsets and rollout "
        "scaled with the window)\n",
        "| hosts | days | crashes | exposure rows | analyze s | peak MiB (tracemalloc) |",
        "|---|---|---|---|---|---|",
    ]
    for hosts, days in ((2_500, 30), (10_000, 30), (40_000, 30), (10_000, 15), (10_000, 60)):
        scale = days / 30
        c = FleetConfig(
            hosts=hosts,
            days=days,
            rollout_day=days / 2,
            onset_days=(2.0 * scale, 20.0 * scale),
        )
        fleet = simulate(0, SCENARIOS["hard"], config=c)
        t0 = time.perf_counter()
        analyze(fleet.crashes, fleet.exposure, fleet.deploys)
        secs = time.perf_counter() - t0
        tracemalloc.start()
        analyze(fleet.crashes, fleet.exposure, fleet.deploys)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        rows.append(
            f"| {hosts} | {days} | {len(fleet.crashes)} | {len(fleet.exposure)} | {secs:.2f} | "
            f"{peak:.0f} |"
        )
    rows.append("")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--scenarios", default="easy,hard")
    ap.add_argument(
        "--budget",
        type=float,
        default=0.5,
        help="calibration target: false alarms per 10,000 hosts per 30 days",
    )
    ap.add_argument("--hosts", type=int, default=10_000)
    ap.add_argument("--out", default=str(DOCS / "fleet_sim.md"), help="'' to skip writing")
    ap.add_argument("--no-cost", action="store_true", help="skip the cost sweep")
    ap.add_argument(
        "--production",
        action="store_true",
        help="the production situations of issue 9 (--scenarios: a comma list of them, "
        "default all); writes docs/fleet_sim_production.md",
    )
    args = ap.parse_args(argv)
    cfg = FleetConfig(hosts=args.hosts)
    started = time.perf_counter()
    if args.production:
        names = [n for n in args.scenarios.split(",") if n in PRODUCTION] or list(PRODUCTION)
        text = production.render(production.run(names, args.seeds, cfg), args.seeds, cfg)
        text = "# Fleet simulator: production situations\n\n" + text
        text += f"\nTotal benchmark wall time: {time.perf_counter() - started:.0f} s.\n"
        print(text)
        if args.out:
            out = Path(args.out)
            if out == DOCS / "fleet_sim.md":
                out = DOCS / "fleet_sim_production.md"
            out.write_text(text, encoding="utf-8")
        return 0
    results = [
        run_scenario(SCENARIOS[name], args.seeds, args.budget, cfg)
        for name in args.scenarios.split(",")
    ]
    cost = "" if args.no_cost else cost_table(cfg)
    text = render(results, cfg, args.budget, cost)
    text += f"\nTotal benchmark wall time: {time.perf_counter() - started:.0f} s.\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
