"""Forgetting: the relative drop of general-ability scores after fine-tuning (the LoKI paper's Avg).

    Avg = 100/N · Σ_i (S_i^o − S_i^t) / S_i^o

with ``S^o`` the untuned (``base``) model's score and ``S^t`` the fine-tuned one's on each of the
``N`` benchmarks; higher means more forgetting, negative means the run improved on average.

Scores are read from lm-eval's results JSON as lm-eval writes it (``{"results": {task:
{"metric,filter": value}}}``), each task by its metric (``DEFAULT_METRICS``, the ones
``evaluate.general`` reports), or from the pipeline's ``general.json`` (``{"scores": {...}}``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loki_pipeline.errors import LokiInputError
from loki_pipeline.evaluate.general import DEFAULT_METRICS

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


def scores_from_json(
    obj: Mapping[str, Any],
    *,
    metrics: Mapping[str, str] | None = None,
    tasks: Sequence[str] | None = None,
    where: str = "results",
) -> dict[str, float]:
    """``{task: score}`` from an lm-eval results dict or a ``general.json`` dict."""
    metrics = {**DEFAULT_METRICS, **(metrics or {})}
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
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise LokiInputError(f"{path}: not JSON ({err})") from None
    if not isinstance(obj, Mapping):
        raise LokiInputError(f"{path}: expected a JSON object")
    return scores_from_json(obj, metrics=metrics, tasks=tasks, where=str(path))


def forgetting_rows(
    base: Mapping[str, float],
    runs: Mapping[str, Mapping[str, float]],
    *,
    params: Mapping[str, int | None] | None = None,
    tasks: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per run (``base`` first): scores in percent, ``Avg`` and trainable parameters."""
    tasks = list(tasks if tasks is not None else base)
    params = params or {}
    rows = [{"run": "base", "params": None, **{t: 100 * base[t] for t in tasks}, "Avg": None}]
    for name, scores in runs.items():
        avg = forgetting_avg(base, scores, tasks)
        rows.append(
            {
                "run": name,
                "params": params.get(name),
                **{t: 100 * scores[t] for t in tasks},
                "Avg": avg,
            }
        )
    return rows
