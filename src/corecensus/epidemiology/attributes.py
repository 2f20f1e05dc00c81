"""Disproportionality signals of each population's attributes, from the crash table.

For CPU model, microcode, kernel and version, every (population, value) cell with crashes is
tested as :mod:`~corecensus.epidemiology.disproportionality` describes (PRR, ROR, Yates chi-square
or Fisher exact at the crash level; binomial enrichment at the level of (population, host)
pairs, BH-adjusted over all cells). A cell is a *signal* when it has at least
``signal_min_crashes`` crashes on ``signal_min_hosts`` hosts, PRR at least ``prr_min`` with its
lower 95% bound above 1, crash-level p and host-level q at most ``fdr_q`` (Evans et al. 2001's
criteria, plus the host level against pseudo-replication).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from corecensus.epidemiology.disproportionality import AttributeCells, attribute_cells
from corecensus.epidemiology.findings import AttributeSignal
from corecensus.epidemiology.multiplicity import benjamini_hochberg
from corecensus.epidemiology.params import AnalysisParams
from corecensus.epidemiology.segments import Groups
from corecensus.epidemiology.table import Categorical, CrashTable

__all__ = ["ATTRIBUTES", "attribute_signals", "signal_sentence"]

I64 = NDArray[np.int64]

ATTRIBUTES = ("cpu_model", "microcode", "kernel", "version")


def attribute_signals(
    crashes: CrashTable, *, pairs: Groups, pair_pop: I64, n_pops: int, params: AnalysisParams
) -> dict[int, list[AttributeSignal]]:
    """Disproportionality signals per population code (only cells that are signals)."""
    rep = pairs.order[pairs.starts]  # one crash per (population, host) pair
    cells: list[AttributeCells] = []
    vocabs = []
    for name in ATTRIBUTES:
        column: Categorical = getattr(crashes, name)
        values, vocab = column.codes, column.vocab
        if not vocab:
            continue
        cells.append(
            attribute_cells(
                name,
                value=values,
                population=crashes.population.codes,
                n_pops=n_pops,
                n_values=len(vocab),
                pair_pop=pair_pop,
                pair_value=values[rep].astype(np.int64),
            )
        )
        vocabs.append(vocab)
    if not cells:
        return {}
    host_p = np.concatenate([c.host_p_value for c in cells])
    q_all = benjamini_hochberg(host_p)
    out: dict[int, list[AttributeSignal]] = {}
    offset = 0
    for c, vocab in zip(cells, vocabs, strict=True):
        k = c.population.size
        q = q_all[offset : offset + k]
        offset += k
        t = c.table
        signal = (
            (c.crashes >= params.signal_min_crashes)
            & (c.hosts >= params.signal_min_hosts)
            & (t.prr >= params.prr_min)
            & (t.prr_low > 1.0)
            & (t.p_value <= params.fdr_q)
            & (q <= params.fdr_q)
        )
        for i in np.flatnonzero(signal).tolist():
            out.setdefault(int(c.population[i]), []).append(
                AttributeSignal(
                    attribute=c.attribute,
                    value=vocab[int(c.value[i])],
                    crashes=int(c.crashes[i]),
                    hosts=int(c.hosts[i]),
                    prr=float(t.prr[i]),
                    prr_ci=(float(t.prr_low[i]), float(t.prr_high[i])),
                    ror=float(t.ror[i]),
                    ror_ci=(float(t.ror_low[i]), float(t.ror_high[i])),
                    p_value=float(t.p_value[i]),
                    host_p_value=float(c.host_p_value[i]),
                    q_value=float(q[i]),
                    signal=True,
                )
            )
    for signals in out.values():
        signals.sort(key=lambda s: -s.prr)
    return out


def signal_sentence(s: AttributeSignal) -> str:
    """The evidence sentence of a signal."""
    return (
        f"Disproportionality: {s.attribute} {s.value} in {s.crashes} crashes on {s.hosts} "
        f"hosts, PRR {s.prr:.1f} (95% CI {s.prr_ci[0]:.1f}-{s.prr_ci[1]:.1f}), ROR {s.ror:.1f} "
        f"(95% CI {s.ror_ci[0]:.1f}-{s.ror_ci[1]:.1f}), crash-level p={s.p_value:.2g}; "
        f"host-level binomial p={s.host_p_value:.2g}, BH q={s.q_value:.2g}."
    )
