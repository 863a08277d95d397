"""The lm-eval items the project ships (``data/lm_eval``, in each official dataset's schema)
and the task definitions that read them, filled with this machine's paths.

The general evaluation (``evaluate.general``) and a KVA prompt set of an lm-eval task
(``data.lm_eval_mc``, ``local:<task>``) both read them from here. The task templates are package
data of ``loki_pipeline.evaluate`` (``lm_eval_tasks/``, ``opencompass_tasks/``), read as files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from loki_pipeline.errors import LokiInputError
from loki_pipeline.settings import schema_default

#: task -> data files (under the data directory) its local task definition reads.
LOCAL_DATA_FILES: dict[str, tuple[str, ...]] = {
    "triviaqa": ("triviaqa/train.jsonl", "triviaqa/validation.jsonl"),
    "gsm8k": ("gsm8k/train.jsonl", "gsm8k/test.jsonl"),
    "hellaswag": ("hellaswag/validation.jsonl",),
    "winogrande": ("winogrande/validation.jsonl",),
    "humaneval": ("humaneval/test.jsonl",),
    "ifeval": ("ifeval/train.jsonl",),
}

#: GSM8K's official task takes its 5 few-shot examples from the train split.
MIN_ROWS = {"gsm8k/train.jsonl": 5}


def default_data_dir() -> Path:
    """The schema's ``data_dir`` in the source checkout this package is installed from, or in
    the cwd (``loki eval-general`` without ``--data-dir``)."""
    relative = schema_default("evaluate.general.data_dir")
    here = Path(__file__).resolve().parents[3] / relative
    return here if here.is_dir() else Path(relative).resolve()


def check_local_data(data_dir: str | os.PathLike, tasks: Iterable[str]) -> Path:
    """Every data file the local tasks read exists and parses as non-empty JSON lines."""
    root = Path(data_dir)
    for task in tasks:
        for rel in LOCAL_DATA_FILES[task]:
            path = root / rel
            if not path.is_file():
                raise LokiInputError(
                    f"local lm-eval data for {task!r} is missing: {path} (expected JSON lines in "
                    f"the official dataset's schema; set evaluate.general.data_dir or use "
                    f"source: hub)"
                )
            rows = 0
            with path.open(encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        json.loads(line)
                    except json.JSONDecodeError as err:
                        raise LokiInputError(f"{path}:{lineno} is not valid JSON: {err}") from err
                    rows += 1
            if rows < MIN_ROWS.get(rel, 1):
                raise LokiInputError(
                    f"{path} has {rows} items; {task} needs at least {MIN_ROWS.get(rel, 1)}"
                )
    return root.resolve()


def official_tasks_dir() -> Path:
    """Directory of the task YAMLs shipped with the installed lm-eval."""
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent


def opencompass_tasks_dir() -> Path:
    """Directory of the OpenCompass-protocol task YAMLs (and their ``utils.py``)."""
    return Path(__file__).resolve().parents[1] / "evaluate" / "opencompass_tasks"


def write_local_tasks(
    include_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    tasks: Iterable[str],
    protocol: str = "lm-eval",
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Fill ``lm_eval_tasks/<task>.yaml`` with this machine's paths into ``include_dir``.

    The templates hold ``$LM_EVAL_TASKS`` (the installed official YAMLs) and ``$DATA_DIR``;
    values are substituted after YAML parsing, so any path is quoted correctly. Under protocol
    ``opencompass`` the same data settings extend ``opencompass_tasks/<task>.yaml`` instead of
    the official task (both read items in the official schema). ``overrides`` (task -> keys)
    replace top-level keys of a task (the model config's output cap).
    """
    import yaml

    values = {"LM_EVAL_TASKS": str(official_tasks_dir()), "DATA_DIR": str(Path(data_dir).resolve())}

    def fill(node: Any) -> Any:
        if isinstance(node, str):
            for key, value in values.items():
                node = node.replace(f"${key}", value)
            return node
        if isinstance(node, dict):
            return {k: fill(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v) for v in node]
        return node

    templates = resources.files("loki_pipeline.evaluate") / "lm_eval_tasks"
    configs = {}
    for task in tasks:
        cfg = fill(yaml.safe_load((templates / f"{task}.yaml").read_text(encoding="utf-8")))
        if protocol == "opencompass":
            cfg["include"] = str(opencompass_tasks_dir() / f"{task}.yaml")
        configs[task] = cfg
    return _write_task_files(include_dir, configs, overrides)


def write_opencompass_hub_tasks(
    include_dir: str | os.PathLike,
    tasks: Iterable[str],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """``opencompass_tasks/<task>.yaml`` on the official datasets, each with its
    ``overrides`` (see :func:`write_local_tasks`), into ``include_dir``."""
    configs = {t: {"include": str(opencompass_tasks_dir() / f"{t}.yaml")} for t in tasks}
    return _write_task_files(include_dir, configs, overrides)


def _write_task_files(
    include_dir: str | os.PathLike,
    configs: Mapping[str, dict[str, Any]],
    overrides: Mapping[str, Mapping[str, Any]] | None,
) -> Path:
    """Each task's config, its ``overrides`` applied, as ``<task>.yaml`` in ``include_dir``."""
    import yaml

    out = Path(include_dir)
    out.mkdir(parents=True, exist_ok=True)
    for task, cfg in configs.items():
        cfg = {**cfg, **(overrides or {}).get(task, {})}
        (out / f"{task}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return out
