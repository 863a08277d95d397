"""Evaluating: what a model kept (general abilities, lm-eval) and what it learned (the task).

What a model learned is measured per task (the registry ``loki_pipeline.tasks.registry``): ``toolace``
(BFCL) and ``reranker`` (BEIR-style ranking), which share ``generation``'s batched model calls,
and ``sft``, the held-out split (and lm-eval tasks) of a task of the user's own.
"""

from __future__ import annotations

from typing import Any


def task_eval_default(key: str, definition: str = "paper_task") -> Any:
    """The schema's default of ``tasks.<task>.eval.<key>`` (e.g. ``"bfcl.version"``) for the
    paper's tasks (``definition`` ``"paper_task"``) or a task of the user's (``"sft_task"``).

    Every task of a kind has the same schema (a ``$defs`` entry the ``tasks`` map refers to),
    which ``settings.schema_default`` cannot reach by a dotted key without a task name. Nested
    defaults are filled in (``heldout`` is ``{"fraction", "seed"}``).
    """
    import copy

    from loki_pipeline.schemas import fill_defaults, load_schema, resolve_ref

    node = resolve_ref(load_schema()["$defs"][definition])
    for part in ("eval", *key.split(".")):
        node = resolve_ref(node["properties"][part])
    return fill_defaults(copy.deepcopy(node["default"]), node)
