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


def forgetting_avg_interval(
    base: Mapping[str, ItemScores],
    run: Mapping[str, ItemScores],
    tasks: Sequence[str],
    *,
    seed: int = SEED,
    resamples: int = RESAMPLES,
) -> tuple[float, float] | None:
    """95% bootstrap interval of ``forgetting_avg`` (None without per-item scores for every task).

    Each resample draws the items of every benchmark with replacement: one set of item indices
    for base and run where they scored the same items (paired), independent draws otherwise.
    Resamples where a base score is 0 (the relative drop is undefined) are left out.
    """
    pairs = []
    for task in tasks:
        b, t = base.get(task), run.get(task)
        if b is None or t is None or b.values is None or t.values is None:
            return None
        pairs.append((b, t))

    def statistic(rng: np.random.Generator, n: int) -> np.ndarray:
        total = np.zeros(n)
        for b, t in pairs:
            aligned = _paired(b, t)
            if aligned is not None:
                b_means, t_means = resample_means(rng, [b.values, aligned], n)
            else:
                (b_means,) = resample_means(rng, [b.values], n)
                (t_means,) = resample_means(rng, [t.values], n)
            with np.errstate(divide="ignore", invalid="ignore"):
                total += np.where(b_means == 0, np.nan, (b_means - t_means) / b_means)
        return 100.0 * total / len(pairs)

    estimate = bootstrap_estimate(0.0, 0, statistic, seed=seed, resamples=resamples)
    return None if estimate.lo is None else (estimate.lo, estimate.hi)


def forgetting_rows(
    base: Mapping[str, float],
    runs: Mapping[str, Mapping[str, float]],
    *,
    params: Mapping[str, int | None] | None = None,
    tasks: Sequence[str] | None = None,
    items: Mapping[str, Mapping[str, ItemScores]] | None = None,
) -> list[dict[str, Any]]:
    """One row per run (``base`` first): scores in percent, ``Avg`` and trainable parameters.

    Each score ``k`` also has ``k_n``, ``k_lo`` and ``k_hi`` (item count, 95% interval in
    percent; None when unknown), from ``items`` (run name -> benchmark -> ``ItemScores``,
    including ``base``); ``Avg_n`` is the number of items behind the run's Avg.
    """
    tasks = list(tasks if tasks is not None else base)
    params = params or {}
    items = items or {}
    rows = []
    for name, scores in {"base": base, **runs}.items():
        row: dict[str, Any] = {"run": name, "params": params.get(name)}
        mine = items.get(name, {})
        for t in tasks:
            put_estimate(row, t, score_estimate(scores[t], mine.get(t)).scaled(100))
        if name == "base":
            put_estimate(row, "Avg", None)
        else:
            avg = forgetting_avg(base, scores, tasks)
            interval = forgetting_avg_interval(items.get("base", {}), mine, tasks)
            counts = [mine[t].n for t in tasks if t in mine]
            n = sum(counts) if len(counts) == len(tasks) else None
            put_estimate(row, "Avg", Estimate(avg, n, *(interval or (None, None))))
        rows.append(row)
    return rows
