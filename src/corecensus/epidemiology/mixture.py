"""Mixtures: a population that is really two causes under one signature.

The motivating case (docs/statistics.md): a "crash on return" population mixed ``%rsp``-off-by-8
crashes from one host whose CPU computed wrongly with return-to-NULL crashes from a libunwind
race spread over the fleet. Three clean splits are looked for, each with a test:

* **by anomaly class** — one anomaly (or the hardware-flavoured class) sits mostly on the
  population's top host: one-sided Fisher exact test (hypergeometric upper tail) of anomaly x
  {top host, other hosts};
* **by host** — the population holds crashes from hosts the CPU scan flagged, on the flagged
  CPU, beside a remainder spread elsewhere;
* **by version** — one version's rate (crashes per exposure-hour) is far above the others':
  conditional binomial comparison of two Poisson rates
  (:func:`~corecensus.epidemiology.poisson.poisson_rate_ratio_test`).
"""

from __future__ import annotations

from collections.abc import Sequence

from corecensus.epidemiology.findings import PopulationVerdict, Split
from corecensus.epidemiology.poisson import poisson_rate_ratio_test
from corecensus.epidemiology.tails import hypergeom_upper

__all__ = ["anomaly_split", "host_split", "version_split"]


def anomaly_split(
    *,
    classes: Sequence[tuple[str, bool]],
    in_population: Sequence[int],
    on_top_host: Sequence[int],
    crashes: int,
    top_host: str,
    top_host_crashes: int,
    alpha: float,
    min_part: int = 3,
    clean_share: float = 0.8,
) -> Split | None:
    """The most significant anomaly class concentrated on the top host, if any.

    ``classes`` are (name, hardware-flavoured) pairs; ``in_population[j]`` and
    ``on_top_host[j]`` count class *j* in the population and on its top host. A split needs at
    least ``min_part`` crashes of the class on the top host, ``clean_share`` of the class there,
    a remainder of ``min_part`` and a Fisher p-value at most ``alpha``.
    """
    best: tuple[float, int] | None = None
    for j, (_, _hw) in enumerate(classes):
        a, k = on_top_host[j], in_population[j]
        if a < min_part or a < clean_share * k or crashes - a < min_part:
            continue
        p = float(hypergeom_upper(a, crashes, k, top_host_crashes)[0])
        if p <= alpha and (best is None or p < best[0]):
            best = (p, j)
    if best is None:
        return None
    p, j = best
    name, hardware = classes[j]
    a, k = on_top_host[j], in_population[j]
    return Split(
        by="anomaly",
        part=f"{a} crashes with {name} on {top_host}",
        crashes=a,
        rest=crashes - a,
        verdict=PopulationVerdict.HARDWARE if hardware else PopulationVerdict.INCONCLUSIVE,
        p_value=p,
        evidence=(
            f"{a} of the {k} crashes with {name} are on {top_host}, which has "
            f"{top_host_crashes} of the population's {crashes} (one-sided Fisher exact test, "
            f"p={p:.2g}): two causes share this signature."
        ),
    )


def host_split(
    *,
    flagged: Sequence[tuple[str, int | None, int]],
    crashes: int,
    verdict: PopulationVerdict,
    min_part: int = 2,
) -> Split | None:
    """Crashes on the CPUs the scan flagged (host name, CPU, crashes there) beside the rest."""
    k = sum(n for _, _, n in flagged)
    rest = crashes - k
    if k < min_part or rest < min_part:
        return None
    names = ", ".join(f"{h} CPU {c}" if c is not None else h for h, c, _ in flagged)
    if verdict is PopulationVerdict.HARDWARE:
        return Split(
            by="host",
            part=f"{rest} crashes off the flagged CPUs",
            crashes=rest,
            rest=k,
            verdict=PopulationVerdict.INCONCLUSIVE,
            p_value=None,
            evidence=(
                f"Besides the crashes on the flagged CPUs ({names}), {rest} come from elsewhere."
            ),
        )
    return Split(
        by="host",
        part=f"{k} crashes on {names}",
        crashes=k,
        rest=rest,
        verdict=PopulationVerdict.HARDWARE,
        p_value=None,
        evidence=(
            f"{k} of {crashes} crashes are on CPUs flagged by the host scan ({names}); "
            f"the other {rest} are the software population."
        ),
    )


def version_split(
    *,
    versions: Sequence[str],
    counts: Sequence[int],
    hours: Sequence[float],
    alpha: float,
    min_ratio: float,
    min_part: int = 3,
) -> Split | None:
    """One version's rate far above the other versions' (only versions with exposure)."""
    rows = [(v, n, h) for v, n, h in zip(versions, counts, hours, strict=True) if h > 0]
    if len(rows) < 2:
        return None
    total_n = sum(n for _, n, _ in rows)
    total_h = sum(h for _, _, h in rows)
    v, n, h = max(rows, key=lambda r: r[1] / r[2])
    rest_n, rest_h = total_n - n, total_h - h
    if n < min_part or rest_n < 1 or rest_h <= 0:
        return None
    ratio = (n / h) / (rest_n / rest_h)
    p = float(poisson_rate_ratio_test(rest_n, rest_h, n, h))
    if p > alpha or ratio < min_ratio:
        return None
    return Split(
        by="version",
        part=f"{n} crashes in version {v}",
        crashes=n,
        rest=rest_n,
        verdict=PopulationVerdict.SOFTWARE,
        p_value=p,
        evidence=(
            f"Version {v} crashes {ratio:.1f}x as often per exposure-hour as the other versions "
            f"({n} in {h:.0f} h against {rest_n} in {rest_h:.0f} h; conditional binomial test of "
            f"two Poisson rates, p={p:.2g})."
        ),
    )
