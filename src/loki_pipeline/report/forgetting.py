"""Forgetting: the relative drop of general-ability scores after fine-tuning (the LoKI paper's Avg).

    Avg = 100/N · Σ_i (S_i^o − S_i^t) / S_i^o

with ``S^o`` the untuned (``base``) model's score and ``S^t`` the fine-tuned one's on each of the
``N`` benchmarks; higher means more forgetting, negative means the run improved on average.

Scores are read from lm-eval's results JSON as lm-eval writes it (``{"results": {task:
{"metric,filter": value}}}``), each task by its metric (``DEFAULT_METRICS``, the ones
``evaluate.general`` reports), or from the pipeline's ``general.json`` (``{"scores": {...}}``).

Uncertainty (``load_item_scores``, ``forgetting_avg_interval``): the per-item scores come from
lm-eval's ``samples_<task>.jsonl`` beside the results (``lm_eval/`` next to a ``general.json``);
without them, a 0/1 metric is rebuilt from the results' ``n-samples`` and the score. Each
benchmark's score gets the Wilson interval; ``Avg`` gets a bootstrap interval that resamples the
items of each benchmark, with the same item indices for base and run where both were scored on
the same items (lm-eval doc ids), so the interval is that of the drop itself.

Near a base score of 0 the relative drop is undefined (at 0) or decided by one item (base 1 of
20: a run that gets 3 of 20 has a drop of -200%). A benchmark whose base score's bootstrap
interval reaches 0 (``unstable_benchmarks``) is therefore reported on its own row cells but left
out of the relative ``Avg``; ``Avg_drop``, the average drop in points over all benchmarks, is
given beside it and always has an interval.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loki_pipeline.errors import LokiInputError
from loki_pipeline.evaluate.general import DEFAULT_METRICS, PROTOCOL_METRICS
from loki_pipeline.report.intervals import (
    RESAMPLES,
    SEED,
    Estimate,
    bootstrap_estimate,
    mean_estimate,
    put_estimate,
    resample_means,
)

log = logging.getLogger(__name__)

#: lm-eval metrics that score each item 0 or 1 (pass@1 with one greedy sample), so the item
#: scores can be rebuilt from the item count and the score when the samples are missing.
BINARY_METRICS = frozenset(
    {
        "acc",
        "acc_norm",
        "exact_match",
        "pass@1",
        "accuracy",  # protocol opencompass: gsm8k, hellaswag, winogrande
        "score",  # protocol opencompass: triviaqa
        "prompt_level_strict_acc",
        "prompt_level_loose_acc",
    }
)

#: The paper's six general benchmarks, in its table order, with display names.
BENCHMARKS: dict[str, str] = {
    "triviaqa": "TriviaQA",
    "gsm8k": "GSM8K",
    "hellaswag": "HellaSwag",
    "winogrande": "WinoGrande",
    "humaneval": "HumanEval",
    "ifeval": "IFEval",
}


def forgetting_avg(
    base: Mapping[str, float], tuned: Mapping[str, float], tasks: Sequence[str] | None = None
) -> float:
    """``100/N · Σ_i (base_i − tuned_i) / base_i`` over ``tasks`` (default: the base's tasks)."""
    tasks = list(tasks if tasks is not None else base)
    if not tasks:
        raise LokiInputError("forgetting needs at least one benchmark")
    total = 0.0
    for task in tasks:
        if task not in base:
            raise LokiInputError(f"the base run has no score for {task!r} (has {sorted(base)})")
        if task not in tuned:
            raise LokiInputError(f"a tuned run has no score for {task!r} (has {sorted(tuned)})")
        if base[task] == 0:
            raise LokiInputError(
                f"the base score of {task!r} is 0: the relative drop (S_o - S_t) / S_o is "
                "undefined; evaluate on more items or leave the benchmark out"
            )
        total += (base[task] - tuned[task]) / base[task]
    return 100.0 * total / len(tasks)


def _protocol_metrics(results: Mapping[str, Any]) -> dict[str, str]:
    """Each task's metric key in an lm-eval results dict: lm-eval's (``DEFAULT_METRICS``), or
    the OpenCompass protocol's where only that one is in the task's table."""
    table = results.get("results")
    chosen = dict(DEFAULT_METRICS)
    if isinstance(table, Mapping):
        for task, key in PROTOCOL_METRICS["opencompass"].items():
            row = table.get(task)
            if isinstance(row, Mapping) and key in row and chosen.get(task) not in row:
                chosen[task] = key
    return chosen


def scores_from_json(
    obj: Mapping[str, Any],
    *,
    metrics: Mapping[str, str] | None = None,
    tasks: Sequence[str] | None = None,
    where: str = "results",
) -> dict[str, float]:
    """``{task: score}`` from an lm-eval results dict or a ``general.json`` dict."""
    metrics = {**_protocol_metrics(obj), **(metrics or {})}
    if isinstance(obj.get("scores"), Mapping):  # the pipeline's general.json
        table = obj["scores"]
        tasks = list(tasks if tasks is not None else table)
        missing = [t for t in tasks if t not in table]
        if missing:
            raise LokiInputError(f"{where}: no score for {missing} (has {sorted(table)})")
        return {t: float(table[t]) for t in tasks}
    table = obj.get("results")
    if not isinstance(table, Mapping):
        raise LokiInputError(f"{where}: neither lm-eval results ('results') nor 'scores'")
    tasks = list(tasks if tasks is not None else [t for t in BENCHMARKS if t in table])
    if not tasks:
        raise LokiInputError(
            f"{where}: none of the benchmarks {list(BENCHMARKS)} is in its results "
            f"(has {sorted(table)}); name the tasks explicitly"
        )
    scores = {}
    for task in tasks:
        if task not in table:
            raise LokiInputError(f"{where}: lm-eval results have no task {task!r}")
        key = metrics.get(task)
        if key is None:
            raise LokiInputError(f"{where}: no metric known for task {task!r}; pass one")
        if key not in table[task]:
            have = sorted(k for k in table[task] if "," in k and "_stderr" not in k)
            raise LokiInputError(f"{where}: task {task!r} has no metric {key!r} (has {have})")
        try:
            scores[task] = float(table[task][key])
        except (TypeError, ValueError):
            raise LokiInputError(f"{where}: {task!r} {key!r} is not a number") from None
    return scores


def load_scores(
    path: str | os.PathLike,
    *,
    metrics: Mapping[str, str] | None = None,
    tasks: Sequence[str] | None = None,
) -> dict[str, float]:
    """Scores from an lm-eval results file or a ``general.json`` (see ``scores_from_json``)."""
    path = Path(path)
    if not path.is_file():
        raise LokiInputError(f"{path}: no such results file")
    obj = _read_object(path, "lm-eval results or general.json")
    return scores_from_json(obj, metrics=metrics, tasks=tasks, where=str(path))


@dataclass(frozen=True)
class ItemScores:
    """One benchmark's per-item scores: ``values`` with their lm-eval doc ids (``keys``).

    ``keys`` is None when the values were rebuilt from ``n`` and the score (no samples file); then
    base and run cannot be paired by item. ``values`` is None when only ``n`` is known.
    """

    n: int
    values: np.ndarray | None = None
    keys: tuple[str, ...] | None = None


def _read_object(path: Path, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise LokiInputError(f"{path}: not JSON ({err})") from None
    if not isinstance(obj, dict):
        raise LokiInputError(f"{path}: expected a JSON object ({what})")
    return obj


def _lm_eval_results(path: Path, obj: Mapping[str, Any]) -> tuple[Path | None, dict[str, Any]]:
    """(lm-eval results file, its dict) of a results file or a ``general.json`` (its
    ``lm_eval/results.json``, or where its ``lm_eval_results`` points)."""
    if not isinstance(obj.get("scores"), Mapping):
        return path, dict(obj)
    candidates = [path.parent / "lm_eval" / "results.json"]
    if obj.get("lm_eval_results"):
        candidates.append(Path(obj["lm_eval_results"]))
    for results in candidates:
        if results.is_file():
            return results, _read_object(results, "lm-eval results")
    return None, {}


def _samples_file(results: Path, task: str) -> Path | None:
    """``samples_<task>.jsonl`` beside lm-eval's results (or lm-eval's own dated name)."""
    names = [f"samples_{task}.jsonl"]
    if results.stem.startswith("results_"):
        names.append(f"samples_{task}_{results.stem[len('results_') :]}.jsonl")
    return next((results.parent / n for n in names if (results.parent / n).is_file()), None)


def read_samples(path: str | os.PathLike, key: str) -> ItemScores:
    """Per-item scores of the lm-eval result ``key`` ("metric,filter") from a samples file."""
    from loki_pipeline.data.records import read_records

    path = Path(path)
    metric, _, flt = key.partition(",")
    keys, values = [], []
    for where, record in read_records(path):
        if record.get("filter", flt) != flt:
            continue
        if metric not in record or "doc_id" not in record:
            raise LokiInputError(f"{where}: no 'doc_id' or {metric!r} in the record")
        try:
            values.append(float(record[metric]))
        except (TypeError, ValueError):
            raise LokiInputError(f"{where}: {metric!r} is not a number") from None
        keys.append(str(record["doc_id"]))
    if not values:
        raise LokiInputError(f"{path}: no item scored by {key!r}")
    paired = len(set(keys)) == len(keys)
    return ItemScores(len(values), np.array(values), tuple(keys) if paired else None)


def load_item_scores(
    path: str | os.PathLike,
    *,
    metrics: Mapping[str, str] | None = None,
    tasks: Sequence[str] | None = None,
) -> dict[str, ItemScores]:
    """Per-item scores of each benchmark of a results file or ``general.json`` where known.

    From ``samples_<task>.jsonl`` beside the lm-eval results (checked against the score); else,
    for a 0/1 metric (``BINARY_METRICS``), rebuilt from ``n-samples`` and the score; else only
    ``n``. A benchmark with nothing of the sort is left out (its score gets no interval).
    """
    path = Path(path)
    scores = load_scores(path, metrics=metrics, tasks=tasks)
    obj = _read_object(path, "results")
    results_path, results = _lm_eval_results(path, obj)
    chosen = {**_protocol_metrics(results), **(obj.get("metrics") or {}), **(metrics or {})}
    counts = results.get("n-samples") or {}
    out: dict[str, ItemScores] = {}
    for task, score in scores.items():
        key = chosen.get(task, "")
        samples = _samples_file(results_path, task) if results_path is not None else None
        if samples is not None:
            items = read_samples(samples, key)
            if math.isclose(float(items.values.mean()), score, abs_tol=1e-6):
                out[task] = items
                continue
            log.warning(
                "%s: the mean item score (%.6f) is not the reported %s %.6f; the samples "
                "are not used", samples, items.values.mean(), key, score
            )  # fmt: skip
        count = (counts.get(task) or {}).get("effective") if isinstance(counts, Mapping) else None
        if count is None and samples is not None:
            count = items.n
        if not count:
            continue
        hits = score * count
        if key.partition(",")[0] in BINARY_METRICS and abs(hits - round(hits)) < 1e-6:
            k = round(hits)
            out[task] = ItemScores(int(count), np.array([1.0] * k + [0.0] * (int(count) - k)))
        else:
            out[task] = ItemScores(int(count))
    missing = [t for t in scores if t not in out or out[t].values is None]
    if missing:
        log.warning("%s: no per-item scores for %s; their scores get no interval", path, missing)
    return out


def score_estimate(score: float, items: ItemScores | None) -> Estimate:
    """A benchmark score (fraction) with ``n`` and its 95% interval (Wilson for 0/1 items)."""
    if items is None:
        return Estimate(score)
    if items.values is None:
        return Estimate(score, items.n)
    interval = mean_estimate(items.values)
    return Estimate(score, items.n, interval.lo, interval.hi)


def _paired(base: ItemScores, run: ItemScores) -> np.ndarray | None:
    """The run's values in the base's item order when both scored the same items, else None."""
    if base.keys is None or run.keys is None or sorted(base.keys) != sorted(run.keys):
        return None
    by_key = dict(zip(run.keys, run.values, strict=True))
    return np.array([by_key[k] for k in base.keys])


#: A benchmark is left out of the relative Avg when at least this share of bootstrap resamples
#: of base's items scores 0 (its 95% percentile interval reaches 0): there (S_o − S_t) / S_o
#: is undefined, and near it a single item decides the benchmark's whole term.
UNSTABLE_SHARE = 0.025
#: Row key (not a table column) of the benchmarks left out of a run's relative Avg, with why.
LEFT_OUT = "Avg_left_out"


def unstable_benchmarks(
    base: Mapping[str, float], items: Mapping[str, ItemScores], tasks: Sequence[str]
) -> dict[str, str]:
    """Benchmarks whose relative drop is undefined or unstable, with the reason: base scored 0,
    or base's 95% bootstrap interval reaches 0, i.e. a resample of its ``n`` items is all 0
    with probability ``(z/n)^n >= UNSTABLE_SHARE`` (``z`` items score 0; scores are >= 0)."""
    out = {}
    for task in tasks:
        mine = items.get(task)
        if base[task] == 0:
            out[task] = "base scored 0, so (S_o - S_t)/S_o is undefined"
        elif mine is not None and mine.values is not None and np.all(mine.values >= 0):
            zero, n = int(np.sum(mine.values == 0)), len(mine.values)
            if (zero / n) ** n >= UNSTABLE_SHARE:
                out[task] = (
                    f"base scored {n - zero} of {n} items above 0, so its 95% bootstrap interval "
                    f"reaches 0 ({100 * (zero / n) ** n:.1f}% of resamples score 0)"
                )
    return out


def stable_benchmarks(
    base: Mapping[str, float], items: Mapping[str, ItemScores], tasks: Sequence[str]
) -> list[str]:
    """``tasks`` less :func:`unstable_benchmarks`: those the relative Avg is taken over."""
    left_out = unstable_benchmarks(base, items, tasks)
    return [t for t in tasks if t not in left_out]


def avg_replicates(
    base: Mapping[str, ItemScores],
    runs: Sequence[Mapping[str, ItemScores]],
    tasks: Sequence[str],
    rng: np.random.Generator,
    resamples: int,
    *,
    relative: bool = True,
) -> list[np.ndarray] | None:
    """Bootstrap replicates of each run's Avg against base over ``tasks`` (None without per-item
    scores for every task, or with fewer than 2 items on one: no spread to resample).

    ``relative``: the paper's ``100/N Σ (S_o − S_t)/S_o`` (NaN where a resampled base is 0);
    else the drop in points, ``100/N Σ (S_o − S_t)``. Each resample draws every benchmark's
    items with replacement, one set of indices for base and every run that scored the same
    items (paired: the interval is that of the drop, and of a difference between runs),
    independent draws for a run that did not.
    """
    per_task = []
    for task in tasks:
        b = base.get(task)
        mine = [r.get(task) for r in runs]
        if b is None or b.values is None or len(b.values) < 2:
            return None
        if any(t is None or t.values is None or len(t.values) < 2 for t in mine):
            return None
        per_task.append((b, mine))
    totals = [np.zeros(resamples) for _ in runs]
    for b, mine in per_task:
        aligned = [_paired(b, t) for t in mine]
        shared = [b.values] + [a for a in aligned if a is not None]
        means = iter(resample_means(rng, shared, resamples))
        b_means = next(means)
        run_means = [next(means) if a is not None else None for a in aligned]
        for i, t in enumerate(mine):
            if run_means[i] is None:
                (run_means[i],) = resample_means(rng, [t.values], resamples)
        for total, t_means in zip(totals, run_means, strict=True):
            if relative:
                with np.errstate(divide="ignore", invalid="ignore"):
                    total += np.where(b_means == 0, np.nan, (b_means - t_means) / b_means)
            else:
                total += b_means - t_means
    return [100.0 * total / len(per_task) for total in totals]


def forgetting_avg_interval(
    base: Mapping[str, ItemScores],
    run: Mapping[str, ItemScores],
    tasks: Sequence[str],
    *,
    seed: int = SEED,
    resamples: int = RESAMPLES,
    relative: bool = True,
) -> tuple[float, float] | None:
    """95% bootstrap interval of ``forgetting_avg`` (``relative=False``: of the drop in points,
    ``forgetting_drop``); None without per-item scores for every task (``avg_replicates``).
    Resamples where a base score is 0 (the relative drop is undefined) are left out.
    """

    def statistic(rng: np.random.Generator, n: int) -> np.ndarray:
        found = avg_replicates(base, [run], tasks, rng, n, relative=relative)
        return np.full(n, np.nan) if found is None else found[0]

    if not tasks:
        return None
    estimate = bootstrap_estimate(0.0, 0, statistic, seed=seed, resamples=resamples)
    return None if estimate.lo is None else (estimate.lo, estimate.hi)


def forgetting_drop(
    base: Mapping[str, float], tuned: Mapping[str, float], tasks: Sequence[str]
) -> float:
    """The average drop in points, ``100/N · Σ_i (base_i − tuned_i)``: defined at any base score
    (the companion of the relative Avg where a base score is near 0)."""
    if not tasks:
        raise LokiInputError("forgetting needs at least one benchmark")
    return 100.0 * sum(base[t] - tuned[t] for t in tasks) / len(tasks)


def forgetting_rows(
    base: Mapping[str, float],
    runs: Mapping[str, Mapping[str, float]],
    *,
    params: Mapping[str, int | None] | None = None,
    tasks: Sequence[str] | None = None,
    items: Mapping[str, Mapping[str, ItemScores]] | None = None,
) -> list[dict[str, Any]]:
    """One row per run (``base`` first): scores in percent, ``Avg``, ``Avg_drop`` and trainable
    parameters.

    Each score ``k`` also has ``k_n``, ``k_lo`` and ``k_hi`` (item count, 95% interval in
    percent; None when unknown), from ``items`` (run name -> benchmark -> ``ItemScores``,
    including ``base``); ``Avg_n`` is the number of items behind the run's Avg. ``Avg`` is the
    paper's relative Avg over the benchmarks whose base score is stable
    (``unstable_benchmarks``: they are left out, and None when every one is); ``Avg_drop`` the
    average drop in points over all of them, which always has an interval when items are known.
    """
    tasks = list(tasks if tasks is not None else base)
    params = params or {}
    items = items or {}
    left_out = unstable_benchmarks(base, items.get("base", {}), tasks)
    kept = [t for t in tasks if t not in left_out]
    rows = []
    for name, scores in {"base": base, **runs}.items():
        row: dict[str, Any] = {"run": name, "params": params.get(name)}
        mine = items.get(name, {})
        for t in tasks:
            put_estimate(row, t, score_estimate(scores[t], mine.get(t)).scaled(100))
        if name == "base":
            put_estimate(row, "Avg", None)
            put_estimate(row, "Avg_drop", None)
            rows.append(row)
            continue
        for key, over, relative in (("Avg", kept, True), ("Avg_drop", tasks, False)):
            if not over:
                put_estimate(row, key, None)
                continue
            value = (
                forgetting_avg(base, scores, over)
                if relative
                else forgetting_drop(base, scores, over)
            )
            interval = forgetting_avg_interval(items.get("base", {}), mine, over, relative=relative)
            counts = [mine[t].n for t in over if t in mine]
            n = sum(counts) if len(counts) == len(over) else None
            put_estimate(row, key, Estimate(value, n, *(interval or (None, None))))
        row[LEFT_OUT] = dict(left_out)  # not a column: the table's note says it
        rows.append(row)
    return rows
