"""ToolACE's task performance: BFCL AST accuracy (the LoKI paper's ToolACE metric).

The item's functions go into the system prompt (BFCL's own default prompt for prompting models,
bracket-call format), the model answers greedily, and ``bfcl.ast_check`` judges the raw answer.
Reported: accuracy per category; ``non_live`` = the unweighted mean over the non-live
categories and ``live`` = the item-weighted mean over the live ones (BFCL's conventions);
``overall`` = the mean of the two groups present. The items come from the ``bfcl-eval`` wheel
(``bfcl_data``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from loki_pipeline.evaluate import task_eval_default
from loki_pipeline.evaluate.generation import generate_greedy

log = logging.getLogger(__name__)

#: BFCL's default system prompt for prompting models (``bfcl_eval/constants/default_prompts.py``:
#: ret_fmt=python, no tool-call tag, functions as JSON, plaintext, classic style).
BFCL_SYSTEM_PROMPT = (
    "You are an expert in composing functions.You are given a question and a set of possible "
    "functions. Based on the question, you will need to make one or more function/tool calls to "
    "achieve the purpose. If none of the functions can be used, point it out. If the given "
    "question lacks the parameters required by the function, also point it out.\n\n"
    "You should only return the function calls in your response.\n\nIf you decide to invoke any "
    "of the function(s), you MUST put it in the format of [func_name1(params_name1=params_value1, "
    "params_name2=params_value2...), func_name2(params)].  You SHOULD NOT include any other text "
    "in the response.\n\nAt each turn, you should try your best to complete the tasks requested "
    "by the user within the current turn. Continue to output functions to call until you have "
    "fulfilled the user's request to the best of your ability. Once you have no more functions "
    "to call, the system will consider the current turn complete and proceed to the next turn or "
    "task.\n\nHere is a list of functions in json format that you can invoke.\n{functions}\n"
)


@dataclasses.dataclass
class BfclSettings:
    """``tasks.toolace.eval.bfcl``, defaults from the schema (which documents each key)."""

    version: str = task_eval_default("bfcl.version")
    categories: list[str] | None = task_eval_default("bfcl.categories")  # None: every one
    max_per_category: int | None = task_eval_default("bfcl.max_per_category")
    max_new_tokens: int = task_eval_default("bfcl.max_new_tokens")


def bfcl_messages(item: Mapping[str, Any]) -> list[dict[str, str]]:
    """The item's turn with BFCL's system prompt (merged into an existing system message)."""
    system = BFCL_SYSTEM_PROMPT.format(functions=json.dumps(item["function"], indent=4))
    messages = [dict(m) for m in item["messages"]]
    if messages and messages[0].get("role") == "system":
        messages[0]["content"] = system + "\n\n" + messages[0]["content"]
        return messages
    return [{"role": "system", "content": system}, *messages]


def bfcl_summary(records: Sequence[Mapping[str, Any]]) -> tuple[dict[str, float], dict[str, int]]:
    """``(metrics, counts)``: accuracy per category, ``non_live``, ``live`` and ``overall``."""
    from loki_pipeline.evaluate.bfcl_data import LIVE

    per: dict[str, list[bool]] = {}
    for r in records:
        per.setdefault(r["category"], []).append(bool(r["correct"]))
    metrics = {cat: sum(v) / len(v) for cat, v in per.items()}
    counts = {cat: len(v) for cat, v in per.items()}
    non_live = [metrics[c] for c in per if c not in LIVE]
    live = [x for c in per if c in LIVE for x in per[c]]
    groups = []
    if non_live:
        metrics["non_live"] = sum(non_live) / len(non_live)
        groups.append(metrics["non_live"])
    if live:
        metrics["live"] = sum(live) / len(live)
        groups.append(metrics["live"])
    metrics["overall"] = sum(groups) / len(groups)
    return metrics, counts


def prepare(settings: BfclSettings, cache_dir: str | os.PathLike) -> tuple[list[dict], str]:
    """``(items, benchmark)``: the wheel fetched and its items read, before any model loads."""
    from loki_pipeline.evaluate.bfcl_data import CATEGORIES, bfcl_wheel, load_bfcl

    categories = list(settings.categories or CATEGORIES)
    wheel = bfcl_wheel(settings.version, cache_dir)
    items = load_bfcl(wheel, categories, max_per_category=settings.max_per_category)
    return items, f"bfcl-eval=={settings.version}"


def evaluate(
    model: Any,
    tokenizer: Any,
    items: Sequence[Mapping[str, Any]],
    settings: BfclSettings,
    *,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Answer every BFCL item greedily and judge it; per-item records kept for inspection."""
    from loki_pipeline.evaluate.bfcl import ast_check

    log.info("BFCL: %d items", len(items))
    answers = generate_greedy(
        model,
        tokenizer,
        [bfcl_messages(it) for it in items],
        max_new_tokens=settings.max_new_tokens,
        batch_size=batch_size,
    )
    records = [
        {
            "id": it["id"],
            "category": it["category"],
            "output": answer,
            "correct": ast_check(answer, it["function"], it["ground_truth"], it["category"]),
        }
        for it, answer in zip(items, answers, strict=True)
    ]
    metrics, counts = bfcl_summary(records)
    return {"metrics": metrics, "counts": counts, "items": records}
