"""Disproportionality of an attribute (CPU model, microcode, kernel, version) in a population.

The pharmacovigilance tools, with "drug" = attribute value and "event" = population, on the 2x2
table of crashes

                     value v    other values
    population P        a            b
    other crashes       c            d

* PRR = [a / (a+b)] / [c / (c+d)] with 95% interval exp(ln PRR ± 1.96 sqrt(1/a - 1/(a+b) + 1/c
  - 1/(c+d))) (Evans, Waller & Davis 2001, "Use of proportional reporting ratios (PRRs) for
  signal generation from spontaneous adverse drug reaction reports", Pharmacoepidemiology and
  Drug Safety 10:483-486);
* ROR = ad / bc with 95% interval exp(ln ROR ± 1.96 sqrt(1/a + 1/b + 1/c + 1/d)) (van
  Puijenbroek et al. 2002, "A comparison of measures of disproportionality for signal detection
  in spontaneous reporting systems for adverse drug reactions", PDS 11:3-10);
* Yates-corrected chi-square, and the one-sided Fisher exact p-value (hypergeometric upper tail)
  which is used whenever the expected count of cell ``a`` is below 5 (Cochran's rule).

Zero cells get the Haldane-Anscombe +0.5 correction in the ratios and intervals.

Crashes cluster on hosts, so a crash-level 2x2 table treats 50 crashes of one host as 50
independent reports (pseudo-replication) and would blame the CPU model of any single busy host.
:func:`host_enrichment` therefore tests the same association at the level of hosts: of the ``k``
hosts carrying the population, how many have value ``v``, against the fraction ``pi_v`` of all
crashing hosts with that value (exact binomial upper tail). A signal needs both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from corecensus.epidemiology.tails import binomial_upper, chi2_upper, hypergeom_upper

__all__ = ["AttributeCells", "TwoByTwo", "attribute_cells", "host_enrichment", "two_by_two"]

F64 = NDArray[np.float64]
Z95 = 1.959963984540054


@dataclass(frozen=True, slots=True, eq=False)
class TwoByTwo:
    """Vectorized measures of a batch of 2x2 tables (see module docstring)."""

    prr: F64
    prr_low: F64
    prr_high: F64
    ror: F64
    ror_low: F64
    ror_high: F64
    chi2: F64
    p_value: F64
    exact: NDArray[np.bool_]


def two_by_two(a: Any, b: Any, c: Any, d: Any) -> TwoByTwo:
    """PRR, ROR (with 95% intervals), Yates chi-square and a one-sided p-value per table
    (inputs broadcast; results are at least 1-D).

    The p-value is Fisher's exact upper tail ``P(A >= a)`` when the expected count of cell
    ``a`` is below 5 (``exact`` is then true), else the Yates chi-square's, halved to one side
    when the association is positive.
    """
    a, b, c, d = np.broadcast_arrays(
        *(np.atleast_1d(np.asarray(x, dtype=np.float64)) for x in (a, b, c, d))
    )
    zero = (a == 0) | (b == 0) | (c == 0) | (d == 0)
    ha, hb, hc, hd = (np.where(zero, x + 0.5, x) for x in (a, b, c, d))
    with np.errstate(divide="ignore", invalid="ignore"):
        prr = (ha / (ha + hb)) / (hc / (hc + hd))
        se_prr = np.sqrt(1 / ha - 1 / (ha + hb) + 1 / hc - 1 / (hc + hd))
        ror = (ha * hd) / (hb * hc)
        se_ror = np.sqrt(1 / ha + 1 / hb + 1 / hc + 1 / hd)
        n = a + b + c + d
        row1, row2, col1, col2 = a + b, c + d, a + c, b + d
        num = n * np.maximum(np.abs(a * d - b * c) - n / 2, 0.0) ** 2
        chi2 = np.where(row1 * row2 * col1 * col2 > 0, num / (row1 * row2 * col1 * col2), 0.0)
        expected_a = row1 * col1 / n
    exact = np.nan_to_num(expected_a, nan=0.0) < 5
    p_chi = np.where(a * d > b * c, 0.5 * chi2_upper(chi2, 1), 1.0)
    p_exact = np.ones_like(a)
    sel = exact & (n > 0)
    if sel.any():
        p_exact[sel] = hypergeom_upper(a[sel], n[sel], col1[sel], row1[sel])
    p = np.clip(np.where(exact, p_exact, p_chi), 0.0, 1.0)
    return TwoByTwo(
        prr=prr,
        prr_low=prr * np.exp(-Z95 * se_prr),
        prr_high=prr * np.exp(Z95 * se_prr),
        ror=ror,
        ror_low=ror * np.exp(-Z95 * se_ror),
        ror_high=ror * np.exp(Z95 * se_ror),
        chi2=chi2,
        p_value=p,
        exact=exact,
    )


def host_enrichment(hosts_with: Any, hosts: Any, fraction: Any) -> F64:
    """``P(X >= hosts_with)`` for ``X ~ Binomial(hosts, fraction)``: are the hosts carrying a
    population enriched for a value held by ``fraction`` of crashing hosts?"""
    k = np.asarray(hosts_with, dtype=np.float64)
    n = np.asarray(hosts, dtype=np.float64)
    pi = np.clip(np.asarray(fraction, dtype=np.float64), 0.0, 1.0)
    return binomial_upper(k, n, pi)


@dataclass(frozen=True, slots=True, eq=False)
class AttributeCells:
    """Every (population, value) cell of one attribute with at least one crash.

    ``crashes``/``hosts`` are the population's crashes and (population, host) pairs with the
    value; ``table`` the crash-level measures; ``host_p_value`` the host-level enrichment.
    """

    attribute: str
    population: NDArray[np.int64]
    value: NDArray[np.int64]
    crashes: NDArray[np.int64]
    hosts: NDArray[np.int64]
    table: TwoByTwo
    host_p_value: F64


def attribute_cells(
    attribute: str,
    *,
    value: NDArray[Any],
    population: NDArray[Any],
    n_pops: int,
    n_values: int,
    pair_pop: NDArray[np.int64],
    pair_value: NDArray[np.int64],
) -> AttributeCells:
    """Cross-tabulate one attribute against populations (crashes with an unknown value, ``-1``,
    are left out). ``pair_value`` is each (population, host) pair's value (that of one of its
    crashes): the host-level unit, so a busy host counts once."""
    v = np.asarray(value)
    known = v >= 0
    width = max(n_values, 1)
    # one int64 key per crash with a known value, built in place: int64 copies of both columns
    # and their product held 400 MB at ten million crashes
    key = np.asarray(population)[known].astype(np.int64)
    key *= width
    key += v[known]
    cells = np.bincount(key, minlength=n_pops * width)
    del key
    pop_known = cells.reshape(n_pops, width).sum(axis=1)
    val_total = cells.reshape(n_pops, width).sum(axis=0)
    total = int(pop_known.sum())
    nz = np.flatnonzero(cells)
    cp = nz // width
    cv = nz % width
    a = cells[nz]
    b = pop_known[cp] - a
    c = val_total[cv] - a
    d = total - a - b - c
    pk = pair_value >= 0
    pcells = np.bincount(pair_pop[pk] * width + pair_value[pk], minlength=n_pops * width)
    p_pairs = pcells.reshape(n_pops, width).sum(axis=1)
    v_pairs = pcells.reshape(n_pops, width).sum(axis=0)
    frac = v_pairs / max(int(pk.sum()), 1)
    hosts = pcells[nz]
    return AttributeCells(
        attribute=attribute,
        population=cp.astype(np.int64),
        value=cv.astype(np.int64),
        crashes=a.astype(np.int64),
        hosts=hosts.astype(np.int64),
        table=two_by_two(a, b, c, d),
        host_p_value=host_enrichment(hosts, p_pairs[cp], frac[cv]),
    )
