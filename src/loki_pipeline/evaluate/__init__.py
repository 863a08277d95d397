"""Evaluating: what a model kept (general abilities, lm-eval) and what it learned (the task).

What a model learned is measured per task: ``task`` dispatches to ``toolace`` (BFCL) and
``reranker`` (BEIR-style ranking), which share ``generation``'s batched model calls.
"""

from __future__ import annotations

from typing import Any


def task_eval_default(key: str) -> Any:
    """The schema's default of ``tasks.<task>.eval.<key>`` (e.g. ``"bfcl.version"``).

    Every task's entry has the same schema (the ``additionalProperties`` of the ``tasks`` map),
    which ``settings.schema_default`` cannot reach: it follows ``properties`` only.
    """
    from loki_pipeline.schemas import _resolve
    from loki_pipeline.settings import schema_node

    node = _resolve(schema_node("tasks")["additionalProperties"])
    for part in ("eval", *key.split(".")):
        node = _resolve(node["properties"][part])
    return node["default"]
