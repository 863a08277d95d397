"""Intervals and the learned check of a task of the user's own (``evaluate.sft`` summaries).

Per-item values, by metric: ``exact_match`` the rows' 0/1 (Wilson interval); ``loss`` the
rows' summed loss over their tokens, a ratio of sums (bootstrap over rows, ``ratio_estimate``);
``perplexity`` = exp(loss), its interval the exp of the loss interval's ends; an lm-eval metric
its documents' scores (``lm_eval_items``; Wilson when 0/1, else a bootstrap over documents),
used only when their mean reproduces the recorded metric (lm-eval aggregates some metrics
otherwise, e.g. corpus-level F1).

A run learned when the paired 95% bootstrap interval of run − base on the primary metric lies
above 0, or below 0 for a metric that is better lower (``lower_is_better``: loss, perplexity);
when its outputs equal base's on every item (exact match: the greedy answers; loss and
perplexity: every row's loss; lm-eval: every document's score) it did not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from loki_pipeline.errors import LokiInputError
from loki_pipeline.report.intervals import (
    RESAMPLES,
    SEED,
    Estimate,
    mean_estimate,
    percentile,
    ratio_estimate,
    wilson,
)

HELDOUT = ("exact_match", "loss", "perplexity")

#: the metric from the means of its per-item columns over items (loss: mean loss / mean tokens,
#: the ratio of sums), applied to each bootstrap resample's means
_Stat = Callable[[list[np.ndarray]], np.ndarray]


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


def _rows(summary: Mapping[str, Any], where: str) -> dict[str, tuple[float, float, float]]:
    """Row id -> (exact match 0/1, summed loss, tokens)."""
    out = {}
    for i, item in enumerate(summary.get("items") or []):
        try:
            out[str(item["id"])] = (
                float(bool(item["exact_match"])),
                float(item["loss"]),
                float(item["tokens"]),
            )
        except (KeyError, TypeError, ValueError):
            raise LokiInputError(
                f"{where}: held-out item {i} lacks 'id', 'exact_match', 'loss' or 'tokens'"
            ) from None
    return out


def sft_columns(summary: Mapping[str, Any], metric: str, where: str):
    """(item keys, per-item columns, statistic) of ``metric``; None without per-item values."""
    if metric in HELDOUT:
        rows = _rows(summary, where)
        if not rows:
            return None
        keys = list(rows)
        em, loss, tokens = (np.array([rows[k][j] for k in keys]) for j in range(3))
        if metric == "exact_match":
            return keys, [em], lambda c: c[0]
        ratio: _Stat = lambda c: c[0] / c[1]  # noqa: E731
        stat = ratio if metric == "loss" else (lambda c: np.exp(ratio(c)))
        return keys, [loss, tokens], stat
    values = (summary.get("lm_eval_items") or {}).get(metric)
    if not values:
        return None
    return [str(i) for i in range(len(values))], [np.asarray(values, dtype=float)], lambda c: c[0]


def sft_estimates(
    summary: Mapping[str, Any], *, where: str = "task.json", resamples: int = RESAMPLES,
    seed: int = SEED,
) -> dict[str, Estimate]:  # fmt: skip
    """Each metric of a generic task's summary with its n and 95% interval (see the module)."""
    metrics = {m: float(v) for m, v in (summary.get("metrics") or {}).items()}
    counts = summary.get("counts") or {}
    out: dict[str, Estimate] = {}
    rows = _rows(summary, where)
    if rows and all(m in metrics for m in HELDOUT):
        em, loss, tokens = (np.array([r[j] for r in rows.values()]) for j in range(3))
        n = len(rows)
        if _close(em.mean(), metrics["exact_match"]) and _close(
            loss.sum() / tokens.sum(), metrics["loss"]
        ):
            out["exact_match"] = Estimate(metrics["exact_match"], n, *wilson(em.sum(), n))
            est = ratio_estimate(loss, tokens, seed=seed, resamples=resamples)
            out["loss"] = est
            out["perplexity"] = Estimate(math.exp(est.value), n, math.exp(est.lo), math.exp(est.hi))
    for name, values in (summary.get("lm_eval_items") or {}).items():
        if name in metrics and values and _close(float(np.mean(values)), metrics[name]):
            est = mean_estimate(np.asarray(values, dtype=float), seed=seed, resamples=resamples)
            out[name] = Estimate(metrics[name], est.n, est.lo, est.hi)
    for name, value in metrics.items():
        if name not in out:
            task = name.split("/", 1)[0]
            n = counts.get("items") if name in HELDOUT else counts.get(task)
            out[name] = Estimate(value, int(n) if n else None)
    return out


def sft_identical(base: Mapping[str, Any], run: Mapping[str, Any], metric: str, where: str) -> bool:
    """Whether the run's outputs behind ``metric`` equal base's on every item."""
    if metric == "exact_match":
        outputs = [
            {str(i["id"]): i.get("output") for i in s.get("items") or []} for s in (base, run)
        ]
        return outputs[0] == outputs[1]
    b, r = sft_columns(base, metric, where), sft_columns(run, metric, where)
    if b is None or r is None:
        return False
    return b[0] == r[0] and all(np.array_equal(x, y) for x, y in zip(b[1], r[1], strict=True))


def sft_delta(
    base: Mapping[str, Any], run: Mapping[str, Any], metric: str, *, where: str = "task.json",
    resamples: int = RESAMPLES, seed: int = SEED,
) -> tuple[Estimate, bool] | None:  # fmt: skip
    """(run − base on ``metric`` with its 95% bootstrap interval, paired?) or None without
    per-item values; items are paired by id where both runs scored the same ones."""
    b, r = sft_columns(base, metric, where), sft_columns(run, metric, where)
    if b is None or r is None:
        return None
    (b_keys, b_cols, stat), (r_keys, r_cols, _) = b, r
    point = float(run["metrics"][metric]) - float(base["metrics"][metric])
    rng = np.random.default_rng(seed)
    paired = sorted(b_keys) == sorted(r_keys)
    if paired:
        position = {k: i for i, k in enumerate(r_keys)}
        order = np.array([position[k] for k in b_keys])
        r_cols = [c[order] for c in r_cols]
        idx = rng.integers(0, len(b_keys), size=(resamples, len(b_keys)))
        b_idx = r_idx = idx
    else:
        b_idx = rng.integers(0, len(b_keys), size=(resamples, len(b_keys)))
        r_idx = rng.integers(0, len(r_keys), size=(resamples, len(r_keys)))
    diff = stat([c[r_idx].mean(axis=1) for c in r_cols]) - stat(
        [c[b_idx].mean(axis=1) for c in b_cols]
    )
    lo, hi = percentile(diff)
    return Estimate(point, len(r_keys), lo, hi), paired
