"""The paper's comparison with its uncertainty: each LoKI run against each baseline of a task.

The LoKI paper's claim is comparative (LoKI forgets less than the baselines for a similar task
gain), so the table ``results/tables/{model}/{task}/comparison.*`` gives, for every LoKI run
``a`` (a method that trains selected nodes) and every baseline ``b`` (full fine-tuning, PEFT) of
one task and model, the paired difference ``a − b`` of

- ``Avg`` (the paper's relative forgetting over the benchmarks it keeps, ``report.forgetting``;
  absent when every benchmark is left out) and ``Avg_drop`` (the average drop in points over all
  benchmarks): lower is better;
- the task's primary metric (in points where it is a share): higher is better, lower for a metric
  the task summary lists in ``lower_is_better`` (a loss).

Each difference has the 95% percentile interval of a paired bootstrap (``RESAMPLES`` resamples,
seed ``SEED``): every resample draws one set of item indices per benchmark (per BFCL category,
per query, per held-out row) and applies it to base, ``a`` and ``b`` alike, so the interval is
that of the difference on the same items. ``verdict``: ``a is better`` or ``b is better`` when
the interval lies wholly on one side of 0, else ``within noise`` (also when there is no interval:
fewer than 2 items, items that differ between the runs, no per-item records).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from loki_pipeline.evaluate.sft import KIND as SFT_KIND
from loki_pipeline.report.build import general_items, general_scores, task_summary
from loki_pipeline.report.forgetting import (
    ItemScores,
    avg_replicates,
    forgetting_avg,
    forgetting_drop,
    stable_benchmarks,
)
from loki_pipeline.report.intervals import RESAMPLES, SEED, defined_interval
from loki_pipeline.report.learning import (
    ItemUnits,
    bfcl_replicates,
    bfcl_units,
    rank_units,
    reranker_qrels,
)
from loki_pipeline.report.sft import sft_columns
from loki_pipeline.report.tables import metric_scales, write_table
from loki_pipeline.runs import BASE, parse_run

PathLike = str | os.PathLike
log = logging.getLogger(__name__)

#: The verdicts, in the words of the table.
A_BETTER, B_BETTER, NOISE = "a is better", "b is better", "within noise"

#: The CSV's columns, in order (a contract: issue 25).
COLUMNS = ("run_a", "run_b", "metric", "delta", "lo", "hi", "verdict")


def verdict(lo: float | None, hi: float | None, *, lower_is_better: bool) -> str:
    """Which run the 95% interval of ``a − b`` favours, or ``within noise`` (it contains 0,
    or is unknown)."""
    if lo is None or hi is None:
        return NOISE
    if lo > 0:
        return B_BETTER if lower_is_better else A_BETTER
    if hi < 0:
        return A_BETTER if lower_is_better else B_BETTER
    return NOISE


def comparison_pairs(runs: Sequence[str], task: str) -> list[tuple[str, str]]:
    """(LoKI run, baseline) pairs of one task: a run whose method trains selected nodes against
    each one that does not (full fine-tuning, PEFT), in the table's run order."""
    loki, baselines = [], []
    for name in runs:
        parsed = parse_run(name, [task])
        if parsed.kind != "trained" or parsed.method is None:
            continue
        (loki if parsed.method.needs_selection else baselines).append(name)
    return [(a, b) for a in loki for b in baselines]


def _aligned_units(units: Sequence[ItemUnits]) -> list[ItemUnits] | None:
    """Every run's units in the first run's item order, None when the items differ."""
    out = [units[0]]
    for other in units[1:]:
        aligned = units[0].aligned(other)
        if aligned is None:
            return None
        out.append(aligned)
    return out


def primary_replicates(
    task: str,
    summaries: Sequence[Mapping[str, Any]],
    primary: str,
    rng: np.random.Generator,
    resamples: int,
    *,
    qrels: Mapping[str, Mapping[str, int]] | None = None,
    where: str = "task.json",
) -> list[np.ndarray] | None:
    """Bootstrap replicates of ``primary`` for each summary over shared resamples of the same
    items; None when a summary has no per-item records, the runs scored different items or
    there are fewer than 2 items."""
    if any(not s.get("items") for s in summaries):
        return None
    if summaries[0].get("kind") == SFT_KIND:
        found = [sft_columns(s, primary, where) for s in summaries]
        if any(f is None for f in found):
            return None
        keys = found[0][0]
        if len(keys) < 2 or any(sorted(f[0]) != sorted(keys) for f in found):
            return None
        idx = rng.integers(0, len(keys), size=(resamples, len(keys)))
        out = []
        for f_keys, cols, stat in found:
            position = {k: i for i, k in enumerate(f_keys)}
            order = np.array([position[k] for k in keys])
            out.append(np.asarray(stat([c[order][idx].mean(axis=1) for c in cols]), dtype=float))
        return out
    if task == "toolace":
        units = _aligned_units([bfcl_units(s, where) for s in summaries])
        if units is None:
            return None
        n = sum(len(v) for _, v in units[0].groups.values())
        if n < 2:
            return None
        return [reps[primary] for reps in bfcl_replicates(rng, units, resamples)]
    if qrels is None:
        return None
    ranked = [rank_units(s, qrels, where) for s in summaries]
    if any(r is None for r in ranked):
        return None
    units = _aligned_units([r[primary] for r in ranked])
    if units is None:
        return None
    values = [u.groups["queries"][1] for u in units]
    if len(values[0]) < 2:
        return None
    idx = rng.integers(0, len(values[0]), size=(resamples, len(values[0])))
    return [v[idx].mean(axis=1) for v in values]


def _row(a: str, b: str, metric: str, delta: float, diffs: np.ndarray | None, lower: bool):
    interval = None if diffs is None else defined_interval(diffs)
    lo, hi = (None, None) if interval is None else interval
    return {"run_a": a, "run_b": b, "metric": metric, "delta": delta, "lo": lo, "hi": hi,
            "verdict": verdict(lo, hi, lower_is_better=lower)}  # fmt: skip


def comparison_rows(
    task: str,
    base: Mapping[str, float],
    scores: Mapping[str, Mapping[str, float]],
    items: Mapping[str, Mapping[str, ItemScores]],
    summaries: Mapping[str, Mapping[str, Any]],
    *,
    qrels: Mapping[str, Mapping[str, int]] | None = None,
    seed: int = SEED,
    resamples: int = RESAMPLES,
) -> list[dict[str, Any]]:
    """The comparison table's rows (``COLUMNS``; see the module): for each (LoKI, baseline)
    pair, ``Avg`` (when defined), ``Avg_drop`` and the primary metric.

    ``base``/``scores``: general scores (fractions) of base and of each run; ``items``: their
    per-item scores (run -> benchmark -> ``ItemScores``, base included); ``summaries``: each
    run's task summary (``task.json``'s entry of the task), base included.
    """
    tasks = list(base)
    kept = stable_benchmarks(base, items.get(BASE, {}), tasks)
    rows = []
    for a, b in comparison_pairs(list(summaries), task):
        for metric, over, relative in (("Avg", kept, True), ("Avg_drop", tasks, False)):
            if not over:
                continue
            point = forgetting_avg if relative else forgetting_drop
            delta = point(base, scores[a], over) - point(base, scores[b], over)
            reps = avg_replicates(
                items.get(BASE, {}), [items.get(a, {}), items.get(b, {})], over,
                np.random.default_rng(seed), resamples, relative=relative,
            )  # fmt: skip
            rows.append(_row(a, b, metric, delta, None if reps is None else reps[0] - reps[1],
                             lower=True))  # fmt: skip
        first = summaries[a]
        primary = first["primary_metric"]
        scale = metric_scales(first)[primary]
        lower = primary in (first.get("lower_is_better") or [])
        delta = scale * (float(first["metrics"][primary]) - float(summaries[b]["metrics"][primary]))
        found = primary_replicates(
            task, [summaries[a], summaries[b]], primary, np.random.default_rng(seed), resamples,
            qrels=qrels,
        )  # fmt: skip
        diffs = None if found is None else scale * (found[0] - found[1])
        rows.append(_row(a, b, primary, delta, diffs, lower))
    return rows


def comparison_notes(rows: Sequence[Mapping[str, Any]], n: Mapping[str, int | None]) -> list[str]:
    """Notes under the comparison table: what each metric is, its n, how the interval is made
    and what the verdict means."""
    if not rows:
        return [
            "No comparison: the task has no pair of a LoKI run (a method that trains selected "
            "nodes) and a baseline (full fine-tuning or PEFT)."
        ]
    counts = ", ".join(f"{m} n={v}" for m, v in n.items() if v is not None)
    notes = [
        "delta = run_a − run_b, in percentage points (Avg: of the relative forgetting in %; Avg "
        "drop: of the average drop in points; the task metric: in points where it is a share). "
        "Avg and Avg drop: lower is better; the task metric: higher is better unless the task "
        "says lower (a loss).",
        f"lo, hi: 95% percentile interval of a paired bootstrap ({RESAMPLES} resamples, seed "
        f"{SEED}): each resample draws one set of item indices per benchmark (the task's items, "
        "BFCL categories or queries) and applies it to base, run_a and run_b alike. "
        "verdict: the side of 0 the whole interval lies on; within noise when it contains 0 or "
        "there is none (fewer than 2 items, different items, no per-item records)."
        + (f" Items: {counts}." if counts else ""),
    ]
    if not any(r["metric"] == "Avg" for r in rows):
        notes.append(
            "No Avg rows: every benchmark's base score is too close to 0 for the relative "
            "drop (see the forgetting table's note); Avg drop compares the runs instead."
        )
    return notes


def comparison_counts(
    items: Mapping[str, Mapping[str, ItemScores]],
    summaries: Mapping[str, Mapping[str, Any]],
    tasks: Sequence[str],
    kept: Sequence[str],
) -> dict[str, int | None]:
    """The item count behind each metric of the table (None when unknown)."""
    base = items.get(BASE, {})
    general = [base[t].n for t in tasks if t in base]
    kept_n = [base[t].n for t in kept if t in base]
    first = next(iter(summaries.values()), {})
    task_items = len(first.get("items") or []) or None
    if first.get("kind") != SFT_KIND and "queries" in (first.get("counts") or {}):
        task_items = int(first["counts"]["queries"])
    out: dict[str, int | None] = {}
    if kept:
        out["Avg"] = sum(kept_n) if len(kept_n) == len(kept) else None
    out["Avg_drop"] = sum(general) if len(general) == len(tasks) else None
    if first.get("primary_metric"):
        out[first["primary_metric"]] = task_items
    return out


def comparison_columns(decimals: str = "+.2f") -> list[tuple[str, str, str]]:
    """``report.tables`` columns of the comparison table: exactly ``COLUMNS``."""
    formats = {"delta": decimals, "lo": decimals, "hi": decimals}
    return [(c, c, formats.get(c, "")) for c in COLUMNS]


def build_comparison(
    task: str,
    general: Mapping[str, PathLike],
    task_results: Mapping[str, PathLike],
    out_dir: PathLike,
    *,
    caption_model: str = "",
) -> list[Path]:
    """``out_dir/comparison.{csv,md,tex,html}`` of one task (see the module); a warning in the
    rule's log names each verdict."""
    base, runs = general_scores(general)
    tasks = list(base)
    items = general_items(general, tasks)
    summaries = {name: task_summary(path, task) for name, path in task_results.items()}
    qrels = None
    if task == "reranker" and summaries:
        qrels = reranker_qrels(summaries.get(BASE) or next(iter(summaries.values())))
    rows = comparison_rows(task, base, runs, items, summaries, qrels=qrels)
    kept = stable_benchmarks(base, items.get(BASE, {}), tasks)
    for row in rows:
        log.info("%s vs %s, %s: %s", row["run_a"], row["run_b"], row["metric"], row["verdict"])
    return write_table(
        rows,
        comparison_columns(),
        Path(out_dir) / "comparison",
        caption=f"LoKI against the baselines on {caption_model} ({task}): paired differences "
        "run_a − run_b in Avg forgetting and in the task's primary metric, with 95% intervals "
        "and a verdict.",
        notes=comparison_notes(rows, comparison_counts(items, summaries, tasks, kept)),
    )
