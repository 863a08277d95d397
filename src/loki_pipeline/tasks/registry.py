"""The task registry: everything the pipeline knows about a fine-tuning task, in one place.

A task is its data (a loader turning rows into chats, the shipped default file, the options its
loader takes from ``tasks.<task>.train``) and its evaluation (its object under
``tasks.<task>.eval``, a settings class, ``prepare`` and ``evaluate``, the primary metric).
The LoKI paper's two tasks are the entries of :data:`TASKS`; every other name is a task of the
user's own, :data:`GENERIC`: LLaMA-Factory alpaca/sharegpt data (``tasks.<name>.train.format``),
scored on a held-out split of it. So a new task is config, not code.

Built from here: the workflow's ``{task}`` wildcard and run names (:func:`task_names`), the
CLI's ``--task`` (any name; the kind follows from it), the schema (``tasks`` maps the names of
:data:`TASKS` to the paper's task schema, any other to the generic one; a test holds the two
to each other) and, through each ``task.json``'s summary, the tables.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from loki_pipeline.data import llamafactory, reranker, toolace
from loki_pipeline.errors import LokiInputError
from loki_pipeline.evaluate import reranker as eval_reranker
from loki_pipeline.evaluate import sft as eval_sft
from loki_pipeline.evaluate import task_eval_default
from loki_pipeline.evaluate import toolace as eval_toolace
from loki_pipeline.io import check_name


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One kind of task. ``evaluate`` returns ``metrics``, ``counts``, ``items`` and any further
    keys of the task's summary (the reranker's ``protocol`` and ``qrels``; a generic task's
    ``primary_metric``, ``kind``, ``percent``, ``lower_is_better``)."""

    eval_key: str | None  # its object under tasks.<task>.eval; None: the eval object itself
    settings: type  # dataclass of that object, defaults from the schema
    prepare: Callable[[Any, str | os.PathLike], tuple[Any, str]]  # -> (data, benchmark)
    evaluate: Callable[..., dict[str, Any]]  # (model, tokenizer, data, settings, *, batch_size)
    primary_metric: str
    load: Callable[..., list[list[dict[str, str]]]] | None = None  # (source, **options) -> chats
    default_source: str | None = None  # the shipped training file; None: the config names one
    options: tuple[str, ...] = ()  # keys of tasks.<task>.train its loader takes, besides split


#: The LoKI paper's tasks. Adding a task of its kind is one entry (and its modules).
TASKS: dict[str, TaskSpec] = {
    "toolace": TaskSpec(
        eval_key="bfcl",
        settings=eval_toolace.BfclSettings,
        prepare=eval_toolace.prepare,
        evaluate=eval_toolace.evaluate,
        primary_metric="overall",
        load=toolace.load_toolace,
        default_source=toolace.DEFAULT_SOURCE,
        options=("tool_role",),
    ),
    "reranker": TaskSpec(
        eval_key="beir",
        settings=eval_reranker.BeirSettings,
        prepare=eval_reranker.prepare,
        evaluate=eval_reranker.evaluate,
        primary_metric="map@1",
        load=reranker.load_reranker,
        default_source=reranker.DEFAULT_SOURCE,
        options=("columns",),
    ),
}

#: Any other task: LLaMA-Factory data, a held-out split, optionally lm-eval tasks.
GENERIC = TaskSpec(
    eval_key=None,
    settings=eval_sft.SftEvalSettings,
    prepare=eval_sft.prepare,
    evaluate=eval_sft.evaluate,
    primary_metric="exact_match",
    load=llamafactory.load_llamafactory,
    default_source=None,
    options=("format", "columns", "tags", "heldout"),
)

#: Names no task may take: the suppression ablations' table folder is results/tables/{model}/suppress.
RESERVED = ("suppress",)


def task_spec(task: str) -> TaskSpec:
    """The spec of ``task``: a paper task's entry, else (any valid name) the generic task."""
    if task in TASKS:
        return TASKS[task]
    check_name(task, "task name")
    if task in RESERVED:
        raise LokiInputError(f"task name {task!r} is reserved ({RESERVED}); choose another")
    return GENERIC


def is_generic(task: str) -> bool:
    """Whether ``task`` is a task of the user's own (not one of the paper's)."""
    return task_spec(task) is GENERIC


def task_names(config: Mapping[str, Any]) -> list[str]:
    """Every task a run name may start with: the paper's, then those the config declares."""
    return list(dict.fromkeys([*TASKS, *(config.get("tasks") or {})]))


def default_source(task: str) -> Path:
    """The shipped default file of ``task``: relative to the working directory (the workflow's
    root), else to this source checkout (so an editable install works from anywhere)."""
    spec = task_spec(task)
    if spec.default_source is None:
        raise LokiInputError(
            f"task {task!r} has no shipped data: set tasks.{task}.train.source (or --data)"
        )
    rel = Path(spec.default_source)
    checkout = Path(__file__).resolve().parents[2] / rel
    return rel if rel.exists() or not checkout.exists() else checkout


def loader_options(task: str, train_config: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a ``tasks.<task>.train`` block that ``task``'s loader takes: ``split`` and
    its own options (``tool_role`` for ToolACE, ``columns`` for the reranker; ``format``,
    ``columns``, ``tags`` and ``heldout`` for a generic task, ``heldout`` being the schema's
    default where :func:`train_data` did not add the config's)."""
    spec = task_spec(task)
    keys = ("split", *spec.options)
    options = {k: train_config[k] for k in keys if k in train_config}
    if spec is GENERIC:
        if not options.get("format"):
            raise LokiInputError(
                f"task {task!r} is not one of the paper's ({', '.join(TASKS)}): declare its data "
                f"format, tasks.{task}.train.format: alpaca | sharegpt (CLI: --format)"
            )
        options.setdefault("heldout", task_eval_default("heldout", "sft_task"))
    return options


def train_data(task: str, task_config: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a training run reads of ``tasks.<task>``: its ``train`` block, and for a generic
    task its ``eval.heldout`` too (training leaves the held-out rows out). A paper task's is its
    ``train`` block exactly as before ({} when undeclared: the shipped set), so the params of
    its training jobs, and with them the jobs, do not change."""
    block = task_config or {}
    data = dict(block.get("train") or {})
    if is_generic(task):
        data["heldout"] = dict(
            (block.get("eval") or {}).get("heldout") or task_eval_default("heldout", "sft_task")
        )
    return data


def eval_config(task: str, task_config: Mapping[str, Any]) -> dict[str, Any]:
    """What an evaluation reads of ``tasks.<task>``: a paper task's ``eval`` object (as
    before, so its evaluations are not redone), a generic task's whole block (its held-out
    rows come from its training data). :func:`task_block` reads it back."""
    return dict(task_config) if is_generic(task) else dict(task_config.get("eval") or {})


def task_block(task: str, eval_param: Mapping[str, Any]) -> dict[str, Any]:
    """``tasks.<task>`` from what :func:`eval_config` gave the evaluation."""
    return dict(eval_param) if is_generic(task) else {"eval": dict(eval_param)}


def check_task_configs(config: Mapping[str, Any]) -> list[str]:
    """Problems of the config's tasks the schema cannot see: a per-task setting or table
    reference of a task not defined, a reserved name, column or tag names of the other format,
    a primary metric the evaluation will not report."""
    problems = []
    known = task_names(config)
    for section in ("training.tasks", "tables.reference"):
        first, second = section.split(".")
        for task in (config.get(first) or {}).get(second) or {}:
            if task not in known:
                problems.append(
                    f"{section}.{task}: task {task!r} is not defined under tasks (known: "
                    f"{', '.join(known)})"
                )
    for task, block in (config.get("tasks") or {}).items():
        if task in RESERVED:
            problems.append(f"tasks.{task}: the name {task!r} is reserved; choose another")
            continue
        if not is_generic(task):
            continue
        train = (block or {}).get("train") or {}
        fmt = train.get("format")
        allowed = set(llamafactory.DEFAULT_COLUMNS.get(fmt, {}))
        for key in sorted(set(train.get("columns") or {}) - allowed):
            problems.append(
                f"tasks.{task}.train.columns.{key}: not a column of format {fmt} "
                f"(its columns: {', '.join(sorted(allowed))})"
            )
        if fmt == "alpaca" and train.get("tags"):
            problems.append(f"tasks.{task}.train.tags: tags apply to format sharegpt only")
        settings = eval_sft.SftEvalSettings(data=train, **((block or {}).get("eval") or {}))
        try:
            names = [eval_sft.lm_eval_task_name(e)[0] for e in settings.lm_eval]
            eval_sft.check_primary(settings, names)
        except LokiInputError as err:
            problems.append(f"tasks.{task}.{err}")
    return problems


def load_task(task: str, source: str | os.PathLike | None = None, **kwargs) -> list[list[dict]]:
    """Conversations of ``task`` (its loader) from ``source`` (the shipped default file when
    ``None``)."""
    return task_spec(task).load(default_source(task) if source is None else source, **kwargs)


def task_examples(
    task: str,
    source: str | os.PathLike | None,
    tokenizer: Any,
    *,
    cutoff_len: int,
    packing: bool = False,
    max_samples: int | None = None,
    max_drop_fraction: float = 0.05,
    max_context: int | None = None,
    **loader_kwargs,
) -> list[dict[str, list[int]]]:
    """A task's training examples: its conversations, loaded once here, tokenized by
    :func:`loki_pipeline.data.sft.build_sft_dataset`.

    ``loader_kwargs`` go to the task's loader (:func:`loader_options`: ``split``,
    ``tool_role``, ``columns``; a generic task's ``format``, ``columns``, ``tags``, ``heldout``).
    """
    from loki_pipeline.data.sft import build_sft_dataset

    conversations = load_task(task, source, max_samples=max_samples, **loader_kwargs)
    return build_sft_dataset(
        conversations,
        tokenizer,
        task=task,
        source=source or default_source(task),
        cutoff_len=cutoff_len,
        packing=packing,
        max_drop_fraction=max_drop_fraction,
        max_context=max_context,
    )
