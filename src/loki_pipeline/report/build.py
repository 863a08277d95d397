"""Assemble one model's tables and trade-off figure from the evaluation files the rules leave.

Run names: ``base``, ``{task}-{method}`` (training runs) and ``suppress-{strategy}_q{q}``
(suppression ablations). Suppression runs are task-independent (nothing is trained), so they get
their own forgetting table (``results/tables/{model}/suppress/forgetting.*``) and appear in
each task's trade-off figure as vertical lines at their ``Avg``, not in the task tables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loki_pipeline.errors import LokiInputError
from loki_pipeline.report.forgetting import forgetting_avg, forgetting_rows, load_scores
from loki_pipeline.report.tables import (
    forgetting_columns,
    read_json,
    task_rows,
    write_table,
)

PathLike = str | os.PathLike


def _general_scores(general: Mapping[str, PathLike]) -> tuple[dict[str, float], dict[str, dict]]:
    if "base" not in general:
        raise LokiInputError("the general evaluations must include the 'base' run")
    base = load_scores(general["base"])
    runs = {
        name: load_scores(path, tasks=list(base))
        for name, path in general.items()
        if name != "base"
    }
    return base, runs


def trainable_params(path: PathLike | None) -> int | None:
    """``trainable_params`` of a run's ``trainable_params.json`` (as ``loki train`` writes it;
    None when the run has none)."""
    if path is None:
        return None
    value = read_json(path).get("trainable_params")
    return int(value) if value is not None else None


def task_summary(path: PathLike, task: str) -> dict[str, Any]:
    """The ``task`` summary in a ``task.json`` (``{"tasks": {task: ...}}``, or one summary)."""
    obj = read_json(path)
    if "tasks" in obj:
        if task not in obj["tasks"]:
            raise LokiInputError(
                f"{path}: no results for task {task!r} (has {sorted(obj['tasks'])})"
            )
        return obj["tasks"][task]
    return obj


def _full_reference(task: str, runs: Mapping[str, Any]) -> str | None:
    name = f"{task}-full"
    return name if name in runs else None


def build_task_tables(
    task: str,
    general: Mapping[str, PathLike],
    task_results: Mapping[str, PathLike],
    params: Mapping[str, PathLike | None],
    out_dir: PathLike,
    *,
    caption_model: str = "",
) -> list[Path]:
    """``out_dir/forgetting.{csv,md,tex}`` and ``out_dir/task.{csv,md,tex}`` for one task."""
    base, runs = _general_scores(general)
    counts = {name: trainable_params(p) for name, p in params.items()}
    rows = forgetting_rows(base, runs, params=counts)
    out_dir = Path(out_dir)
    written = write_table(
        rows,
        forgetting_columns(list(base)),
        out_dir / "forgetting",
        caption=f"Forgetting on {caption_model} ({task}): general scores (%) and Avg, "
        "100/N Σ (S_o − S_t)/S_o against base.",
    )
    results = {name: task_summary(path, task) for name, path in task_results.items()}
    reference = _full_reference(task, results) if task == "reranker" else None
    t_rows, t_cols = task_rows(task, results, reference=reference)
    written += write_table(
        t_rows,
        t_cols,
        out_dir / "task",
        caption=f"Task performance on {caption_model} ({task}) (%).",
    )
    return written


def build_suppress_table(general: Mapping[str, PathLike], out_dir: PathLike) -> list[Path]:
    """``out_dir/forgetting.*`` for the suppression ablations (the LoKI paper's Table 5)."""
    base, runs = _general_scores(general)
    rows = forgetting_rows(base, runs)
    return write_table(
        rows,
        forgetting_columns(list(base)),
        Path(out_dir) / "forgetting",
        caption="Suppression ablations: general scores (%) and Avg forgetting against base.",
    )


def build_tradeoff(
    task: str,
    general: Mapping[str, PathLike],
    task_results: Mapping[str, PathLike],
    out_path: PathLike,
    *,
    suppress_general: Mapping[str, PathLike] | None = None,
    title: str = "",
) -> Path:
    """The trade-off figure of one task: every run with a task score, suppressions as lines."""
    from loki_pipeline.report.tradeoff import plot_tradeoff

    base, runs = _general_scores(general)
    results = {name: task_summary(path, task) for name, path in task_results.items()}
    primary = next(iter(results.values()))["primary_metric"]
    points = {}
    for name, result in results.items():
        avg = 0.0 if name == "base" else forgetting_avg(base, runs[name])
        points[name] = (avg, 100 * result["metrics"][primary])
    vlines = {
        name: forgetting_avg(base, load_scores(path, tasks=list(base)))
        for name, path in (suppress_general or {}).items()
    }
    return plot_tradeoff(
        points, out_path, score_label=f"{task}: {primary} (%)", title=title, vlines=vlines
    )
