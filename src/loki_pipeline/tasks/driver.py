"""Task performance: what a fine-tuned model learned (the LoKI paper's task metrics).

A task is an entry of the registry (``loki_pipeline.tasks.registry``): the settings of its
``tasks.<task>.eval`` object, how its data is prepared (read and checked before any model is
loaded) and evaluated, and its primary metric. ``toolace`` (BFCL AST accuracy), ``reranker``
(BEIR-style ranking) and a task of the user's own (held-out rows, lm-eval tasks) implement
them; this module evaluates one model on its tasks and writes ``task.json``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loki_pipeline.errors import LokiInputError
from loki_pipeline.evaluate.reranker import rank_metrics
from loki_pipeline.evaluate.toolace import bfcl_summary
from loki_pipeline.settings import StageSettings, from_schema, lookup
from loki_pipeline.tasks.registry import TASKS, TaskSpec, is_generic, task_spec

log = logging.getLogger(__name__)

#: ``rank_metrics`` and ``bfcl_summary`` (the report's tests import them from here) live with
#: their tasks; ``TASKS``, ``TaskSpec`` and ``task_spec`` with the registry.
__all__ = [
    "TASKS",
    "TaskEvalSettings",
    "TaskSpec",
    "benchmark_settings",
    "bfcl_summary",
    "evaluate_task",
    "prepare_task",
    "rank_metrics",
    "read_eval_config",
    "run_task_eval",
    "task_spec",
]


def benchmark_settings(
    task: str,
    eval_config: Mapping[str, Any] | None,
    train_config: Mapping[str, Any] | None = None,
) -> Any:
    """The task's settings from its ``tasks.<task>.eval`` object; absent keys: the schema's.

    A paper task reads its own key of it (``bfcl``, ``beir``); a task of the user's reads the
    whole object, and ``train_config`` (its ``tasks.<task>.train``: the held-out rows' data).
    """
    spec = task_spec(task)
    given = dict((eval_config or {}) if spec.eval_key is None else
                 ((eval_config or {}).get(spec.eval_key) or {}))  # fmt: skip
    where = f"tasks.{task}.eval" + (f".{spec.eval_key}" if spec.eval_key else "")
    known = sorted(f.name for f in dataclasses.fields(spec.settings) if f.name != "data")
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise LokiInputError(f"{where}: unknown keys {unknown}; known {known}")
    given = copy.deepcopy(given)
    if spec.eval_key is None:
        given["data"] = copy.deepcopy(dict(train_config or {}))
    return spec.settings(**given)


def read_eval_config(path: str | os.PathLike) -> dict[str, Any]:
    """Task -> its ``tasks.<task>`` block (``eval``, and ``train`` for a task of the user's),
    from a pipeline config or a mapping task -> eval object (a task of the user's: its whole
    ``{train, eval}`` block)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise LokiInputError(f"--eval-config {path}: no such file")
    loaded = yaml.safe_load(path.read_text()) or {}
    if not isinstance(loaded, dict):
        raise LokiInputError(f"--eval-config {path}: expected a mapping")
    if "tasks" in loaded:  # a whole pipeline config
        return {t: dict(c or {}) for t, c in (loaded["tasks"] or {}).items()}
    return {t: dict(c or {}) if is_generic(t) else {"eval": c or {}} for t, c in loaded.items()}


@dataclasses.dataclass
class TaskEvalSettings(StageSettings):
    """How one model is evaluated on its tasks (rule eval_task, ``loki eval-task``).

    ``tasks``: task -> its settings (``benchmark_settings``), in evaluation order.
    """

    tasks: dict[str, Any] = dataclasses.field(default_factory=dict)
    batch_size: int = from_schema("evaluate.task.batch_size")
    threads: int = from_schema("evaluate.task.threads")
    dtype: str = from_schema("evaluate.task.dtype")
    device: str = from_schema("device")
    cache_dir: str = "resources/cache"  # where the BFCL wheel is cached

    @classmethod
    def from_config(  # type: ignore[override]
        cls, config: Mapping[str, Any], tasks: Sequence[str], **extra: Any
    ) -> TaskEvalSettings:
        """From a pipeline config, for ``tasks`` (their ``tasks.<task>.eval`` objects)."""
        chosen = {
            t: benchmark_settings(
                t, lookup(config, f"tasks.{t}.eval", None), lookup(config, f"tasks.{t}.train", None)
            )
            for t in tasks
        }
        return super().from_config(config, tasks=chosen, **extra)

    @classmethod
    def from_cli(cls, args: argparse.Namespace, **extra: Any) -> TaskEvalSettings:
        """From ``loki eval-task``'s arguments (``--task`` repeated, ``--eval-config``)."""
        blocks = read_eval_config(args.eval_config) if args.eval_config else {}
        chosen = {
            t: benchmark_settings(t, blocks.get(t, {}).get("eval"), blocks.get(t, {}).get("train"))
            for t in dict.fromkeys(args.task)
        }
        return super().from_cli(args, tasks=chosen, **extra)


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
