"""Task performance: what a fine-tuned model learned (the LoKI paper's task metrics).

A task is an entry of the registry (``loki_pipeline.tasks.registry``): the settings of its
``tasks.<task>.eval`` object, how its data is prepared (read and checked before any model is
loaded) and evaluated, and its primary metric. ``toolace`` (BFCL AST accuracy), ``reranker``
(BEIR-style ranking) and a task of the user's own (held-out rows, lm-eval tasks) implement
them; this module evaluates one model on its tasks and writes ``task.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any

from loki_pipeline.errors import LokiInputError
from loki_pipeline.evaluate.reranker import rank_metrics
from loki_pipeline.evaluate.toolace import bfcl_summary
from loki_pipeline.tasks.registry import TASKS, TaskSpec, task_spec
from loki_pipeline.tasks.settings import TaskEvalSettings

log = logging.getLogger(__name__)

#: ``rank_metrics`` and ``bfcl_summary`` (the report's tests import them from here) live with
#: their tasks; ``TASKS``, ``TaskSpec`` and ``task_spec`` with the registry.
__all__ = [
    "TASKS",
    "TaskSpec",
    "bfcl_summary",
    "evaluate_task",
    "prepare_task",
    "rank_metrics",
    "run_task_eval",
    "task_spec",
]


def prepare_task(task: str, settings: Any, cache_dir: str | os.PathLike) -> dict[str, Any]:
    """Data of one task, all checked (and the BFCL wheel fetched) before any model."""
    data, benchmark = task_spec(task).prepare(settings, cache_dir)
    return {"task": task, "settings": settings, "data": data, "benchmark": benchmark}


def evaluate_task(model: Any, tokenizer: Any, prepared: Mapping[str, Any], *, batch_size: int = 8):
    """One task's summary: ``{"task", "benchmark", "primary_metric", "metrics" (in [0, 1]),
    "counts", "settings", "items"}``, and for the reranker ``"protocol"`` (how its candidates
    were chosen, ``load_beir``) and ``"qrels"`` (the judgements of its queries)."""
    task = prepared["task"]
    spec = task_spec(task)
    result = dict(
        spec.evaluate(
            model, tokenizer, prepared["data"], prepared["settings"], batch_size=batch_size
        )
    )
    log.info("%s: %s", task, {k: round(v, 4) for k, v in result["metrics"].items()})
    return {
        "task": task,
        "benchmark": prepared["benchmark"],
        "primary_metric": result.pop("primary_metric", spec.primary_metric),
        "metrics": result.pop("metrics"),
        "counts": result.pop("counts"),
        "settings": dataclasses.asdict(prepared["settings"]),
        "items": result.pop("items"),
        **result,
    }


def run_task_eval(
    model_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    settings: TaskEvalSettings,
    *,
    names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Evaluate one model directory on each of ``settings.tasks`` and write ``task.json``.

    ``task.json``: ``{... names, "model_dir", "tasks": {task: evaluate_task summary},
    "config_hash"}`` (``names``: e.g. model and run, recorded as given). A training run has one
    task; the untuned ``base`` is evaluated on every task the config trains. Settings, data and
    the model directory are all checked before the model is loaded.
    """
    import torch

    from loki_pipeline.io import config_hash, write_json
    from loki_pipeline.models.loading import load_model, read_checkpoint_config

    if not settings.tasks:
        raise LokiInputError("no task to evaluate")
    read_checkpoint_config(model_dir)
    prepared = [prepare_task(t, s, settings.cache_dir) for t, s in settings.tasks.items()]
    torch.set_num_threads(int(settings.threads))
    model, tokenizer = load_model(model_dir, dtype=settings.dtype, device=settings.device)
    summaries = {
        p["task"]: evaluate_task(model, tokenizer, p, batch_size=int(settings.batch_size))
        for p in prepared
    }
    run = {"batch_size": settings.batch_size, "threads": settings.threads, "dtype": settings.dtype}
    out = {
        **dict(names or {}),
        "model_dir": str(model_dir),
        "tasks": summaries,
        "config_hash": config_hash(
            {"settings": [s["settings"] for s in summaries.values()], "run": run}
        ),
    }
    write_json(out_path, out)
    return out
