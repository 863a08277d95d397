"""Settings of the task evaluation: each task's settings from its ``tasks.<task>.eval`` object
(the registry's settings class), and how one model is evaluated on its tasks."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loki_pipeline.errors import LokiInputError
from loki_pipeline.settings import StageSettings, from_schema, lookup
from loki_pipeline.tasks.registry import is_generic, task_spec


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
    from loki_pipeline.safe_yaml import load_yaml

    path = Path(path)
    if not path.is_file():
        raise LokiInputError(f"--eval-config {path}: no such file")
    loaded = load_yaml(path, "--eval-config") or {}
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
