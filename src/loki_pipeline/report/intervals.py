"""95% intervals for the report's scores: Wilson for accuracies, a fixed-seed bootstrap otherwise.

The embedded default evaluates a handful of items per benchmark, so a table without intervals
invites reading noise as forgetting or learning. Conventions used by every table and figure:

- an accuracy (the share of ``n`` items scored 1) gets the Wilson score interval;
- a ratio of sums over items (a token-weighted mean loss) gets the percentile interval of a
  bootstrap over items (``ratio_estimate``), and a monotone function of it (perplexity =
  exp(loss)) the function of its ends;
- a score that is not a plain share (the forgetting ``Avg``, BFCL's ``non_live``/``overall``
  means over categories, a per-query ranking metric) gets the percentile interval of
  ``RESAMPLES`` bootstrap resamples over items (queries for ranking metrics), drawn from
  ``numpy.random.default_rng(SEED)``, so a table is reproducible byte for byte;
- a difference between a run and base on the same items resamples item indices once and applies
  them to both (a paired bootstrap): the interval is that of the difference, not of two scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

#: Two-sided 95% normal quantile.
Z95 = 1.959963984540054
#: Bootstrap resamples and seed of every interval in the report.
RESAMPLES = 2000
SEED = 0
#: Upper bound on resamples x items held in memory at once (the draws are made in chunks).
_CHUNK_CELLS = 2_000_000


@dataclass(frozen=True)
class Estimate:
    """A score with its item count and 95% interval (``lo``/``hi`` None when unknown)."""

    value: float
    n: int | None = None
    lo: float | None = None
    hi: float | None = None

    def scaled(self, factor: float) -> Estimate:
        """The same estimate in other units (e.g. a fraction to percent)."""
        lo = None if self.lo is None else factor * self.lo
        hi = None if self.hi is None else factor * self.hi
        return Estimate(factor * self.value, self.n, lo, hi)


def put_estimate(row: dict, key: str, estimate: Estimate | None) -> None:
    """``row[key]`` and its ``<key>_n``/``<key>_lo``/``<key>_hi`` companions (the table columns
    of ``report.tables``); all None for no estimate."""
    row[key] = None if estimate is None else estimate.value
    row[f"{key}_n"] = None if estimate is None else estimate.n
    row[f"{key}_lo"] = None if estimate is None else estimate.lo
    row[f"{key}_hi"] = None if estimate is None else estimate.hi


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``successes / n`` (fractions in [0, 1]).

    Unlike the normal approximation it stays inside [0, 1] and has width at 0/n and n/n, which
    is what small ``n`` needs: 0/20 gives [0, 0.161], 10/20 gives [0.299, 0.701].
    """
    if n <= 0:
        raise ValueError(f"the Wilson interval needs n >= 1, got {n}")
    p = successes / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p) / n + z2 / (4 * n * n), 0.0)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def is_binary(values: np.ndarray) -> bool:
    """Every value is 0 or 1 (so the mean is a proportion and Wilson applies)."""
    return bool(np.all((values == 0) | (values == 1)))


def percentile(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``samples``."""
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return float(lo), float(hi)


def defined_interval(samples: np.ndarray) -> tuple[float, float] | None:
    """:func:`percentile` of the bootstrap replicates ``samples`` that are defined (NaN: e.g. a
    zero denominator); None when fewer than half are (mostly undefined: no honest interval)."""
    samples = np.asarray(samples, dtype=float)
    defined = samples[~np.isnan(samples)]
    if not len(defined) or len(defined) < len(samples) / 2:
        return None
    return percentile(defined)


def resample_means(
    rng: np.random.Generator, columns: Sequence[np.ndarray], resamples: int = RESAMPLES
) -> list[np.ndarray]:
    """Means of each of ``columns`` (same length, one value per item) over ``resamples``
    bootstrap resamples of the items; the same item indices serve every column (paired)."""
    n = len(columns[0])
    if n == 0:
        raise ValueError("cannot resample zero items")
    out: list[list[np.ndarray]] = [[] for _ in columns]
    step = max(1, _CHUNK_CELLS // n)
    for start in range(0, resamples, step):
        idx = rng.integers(0, n, size=(min(step, resamples - start), n))
        for acc, col in zip(out, columns, strict=True):
            acc.append(np.asarray(col, dtype=float)[idx].mean(axis=1))
    return [np.concatenate(acc) for acc in out]


def mean_estimate(values: np.ndarray, *, seed: int = SEED, resamples: int = RESAMPLES) -> Estimate:
    """The mean of per-item ``values`` with its 95% interval: Wilson when the values are 0/1,
    the bootstrap percentile interval otherwise."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n == 0:
        raise ValueError("no items")
    if is_binary(values):
        lo, hi = wilson(float(values.sum()), n)
    else:
        (means,) = resample_means(np.random.default_rng(seed), [values], resamples)
        lo, hi = percentile(means)
    return Estimate(float(values.mean()), n, lo, hi)


def ratio_estimate(
    numerator: np.ndarray,
    denominator: np.ndarray,
    *,
    seed: int = SEED,
    resamples: int = RESAMPLES,
) -> Estimate:
    """``Σ numerator / Σ denominator`` over items (a token-weighted mean loss: summed loss over
    summed tokens) with the percentile interval of a bootstrap over items. Items differ in
    length, so the item is the unit resampled, not the token (tokens of one answer are not
    independent), and no t interval of item means applies to a ratio of sums."""
    num, den = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    if len(num) == 0 or den.sum() <= 0:
        raise ValueError("no items, or no denominator")
    nums, dens = resample_means(np.random.default_rng(seed), [num, den], resamples)
    lo, hi = percentile(nums / dens)
    return Estimate(float(num.sum() / den.sum()), len(num), lo, hi)


def bootstrap_estimate(
    value: float,
    n: int,
    statistic: Callable[[np.random.Generator, int], np.ndarray],
    *,
    seed: int = SEED,
    resamples: int = RESAMPLES,
) -> Estimate:
    """``value`` with the percentile interval of ``statistic(rng, resamples)`` (an array of
    bootstrap replicates; NaN replicates, e.g. a zero denominator, are left out)."""
    interval = defined_interval(statistic(np.random.default_rng(seed), resamples))
    return Estimate(value, n) if interval is None else Estimate(value, n, *interval)
