"""ToolACE's task performance: BFCL AST accuracy (the LoKI paper's ToolACE metric).

The item's functions go into the system prompt (BFCL's own default prompt for prompting models,
bracket-call format), the model answers greedily, and ``bfcl.ast_check`` judges the raw answer.
The multi-turn categories run as conversations against BFCL's simulated APIs and are judged by
bfcl-eval's own checker (``bfcl_multi_turn``). Reported (``bfcl_compose``): accuracy per
category and BFCL V3's summary scores ``overall``, ``non_live``, ``live``, ``multi_turn``,
``relevance_detection`` and ``irrelevance_detection``. The items come from the ``bfcl-eval`` wheel (``bfcl_data``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from loki_pipeline.evaluate import task_eval_default
from loki_pipeline.evaluate.bfcl_data import bfcl_messages
from loki_pipeline.evaluate.generation import generate_greedy

log = logging.getLogger(__name__)


@dataclasses.dataclass
class BfclSettings:
    """``tasks.toolace.eval.bfcl``, defaults from the schema (which documents each key)."""

    version: str = task_eval_default("bfcl.version")
    categories: list[str] | None = task_eval_default("bfcl.categories")  # None: every one
    max_per_category: int | None = task_eval_default("bfcl.max_per_category")
    max_new_tokens: int = task_eval_default("bfcl.max_new_tokens")
    max_steps_per_turn: int = task_eval_default("bfcl.max_steps_per_turn")
    multi_turn_ids: list[str] | None = task_eval_default("bfcl.multi_turn_ids")


#: Non-live simple categories, one per language (V3 names and their older/newer spellings).
SIMPLE_LANGUAGES = ("simple_python", "simple", "simple_java", "java", "simple_javascript",
                    "javascript")  # fmt: skip


def _mean(values: Sequence[Any]) -> Any:
    return sum(values) / len(values)


def bfcl_compose(sums: Mapping[str, Any], counts: Mapping[str, int]) -> dict[str, Any]:
    """Accuracy per category and BFCL V3's summary scores, from correct items per category.

    The formula of BFCL V3's leaderboard, ``bfcl_eval/eval_checker/eval_runner_helper.py::
    generate_leaderboard_csv`` in ``bfcl-eval==2025.6.8`` (the last V3 release; its
    ``calculate_unweighted_accuracy`` / ``calculate_weighted_accuracy``):

    - ``non_live`` = unweighted mean of simple, multiple, parallel, parallel_multiple and
      irrelevance, where simple = unweighted mean of Python, Java and JavaScript simple;
    - ``live`` = item-weighted mean of live_simple, live_multiple, live_parallel,
      live_parallel_multiple, live_irrelevance and live_relevance;
    - ``multi_turn`` = unweighted mean of multi_turn_base, _miss_func, _miss_param, _long_context;
    - ``overall`` = unweighted mean of ``non_live``, ``live`` and ``multi_turn``;
    - ``irrelevance_detection`` = unweighted mean of irrelevance and live_irrelevance;
      ``relevance_detection`` = live_relevance (the leaderboard's "Irrelevance Detection" and
      "Relevance Detection" columns; the names keep clear of the category ``irrelevance``).

    One difference, by choice: BFCL's script counts a category that was not run as 0 (its file's
    item count as weight); here a category not run is left out of its means, and a group with no
    category run is left out of ``overall`` (this pipeline runs chosen categories, on a subset,
    and never Java or JavaScript, whose answers need another parser). With every Python category
    run the two agree. Works on numbers and on arrays of bootstrap replicates alike.
    """
    from loki_pipeline.evaluate.bfcl_data import LIVE, MULTI_TURN

    acc: dict[str, Any] = {c: sums[c] / counts[c] for c in sums}
    out: dict[str, Any] = {}
    simple = [acc[c] for c in acc if c in SIMPLE_LANGUAGES]
    non_live = ([_mean(simple)] if simple else []) + [
        acc[c] for c in acc if c not in (*SIMPLE_LANGUAGES, *LIVE, *MULTI_TURN)
    ]
    live = [c for c in LIVE if c in acc]
    multi_turn = [acc[c] for c in MULTI_TURN if c in acc]
    groups = {}
    if non_live:
        groups["non_live"] = _mean(non_live)
    if live:
        groups["live"] = sum(sums[c] for c in live) / sum(counts[c] for c in live)
    if multi_turn:
        groups["multi_turn"] = _mean(multi_turn)
    out["overall"] = _mean(list(groups.values()))
    out.update(groups)
    if "live_relevance" in acc:
        out["relevance_detection"] = acc["live_relevance"]
    irrelevance = [acc[c] for c in ("irrelevance", "live_irrelevance") if c in acc]
    if irrelevance:
        out["irrelevance_detection"] = _mean(irrelevance)
    out.update(acc)
    return out


def bfcl_summary(records: Sequence[Mapping[str, Any]]) -> tuple[dict[str, float], dict[str, int]]:
    """``(metrics, counts)``: ``bfcl_compose`` of the records' per-category correct counts."""
    sums: dict[str, int] = {}
    counts: dict[str, int] = {}
    for r in records:
        sums[r["category"]] = sums.get(r["category"], 0) + bool(r["correct"])
        counts[r["category"]] = counts.get(r["category"], 0) + 1
    return bfcl_compose(sums, counts), counts


def prepare(settings: BfclSettings, cache_dir: str | os.PathLike) -> tuple[list[dict], str]:
    """``(items, benchmark)``: the wheel fetched and its items read, before any model loads."""
    from loki_pipeline.evaluate.bfcl_data import CATEGORIES, bfcl_wheel
    from loki_pipeline.evaluate.bfcl_multi_turn import load_bfcl

    categories = list(settings.categories or CATEGORIES)
    wheel = bfcl_wheel(settings.version, cache_dir)
    items = load_bfcl(
        wheel,
        categories,
        max_per_category=settings.max_per_category,
        multi_turn_ids=settings.multi_turn_ids,
    )
    return items, f"bfcl-eval=={settings.version}"


def evaluate(
    model: Any,
    tokenizer: Any,
    items: Sequence[Mapping[str, Any]],
    settings: BfclSettings,
    *,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Answer every BFCL item greedily and judge it; per-item records kept for inspection.

    Single-turn items: one batched answer each, ``bfcl.ast_check``. Multi-turn items: one
    conversation each (``bfcl_multi_turn``), ``output`` = the raw answers per turn and step.
    """
    from loki_pipeline.evaluate.bfcl import ast_check

    single = [it for it in items if "turns" not in it]
    multi = [it for it in items if "turns" in it]
    log.info("BFCL: %d single-turn, %d multi-turn items", len(single), len(multi))
    answers = generate_greedy(
        model,
        tokenizer,
        [bfcl_messages(it) for it in single],
        max_new_tokens=settings.max_new_tokens,
        batch_size=batch_size,
    )
    by_id = {
        it["id"]: {
            "id": it["id"],
            "category": it["category"],
            "output": answer,
            "correct": ast_check(answer, it["function"], it["ground_truth"], it["category"]),
        }
        for it, answer in zip(single, answers, strict=True)
    }
    if multi:
        by_id.update({r["id"]: r for r in evaluate_multi_turn(model, tokenizer, multi, settings)})
    records = [by_id[it["id"]] for it in items]
    metrics, counts = bfcl_summary(records)
    return {"metrics": metrics, "counts": counts, "items": records}


class ContextOverflow(RuntimeError):
    """A multi-turn conversation outgrew the model's context window."""


def evaluate_multi_turn(
    model: Any, tokenizer: Any, items: Sequence[Mapping[str, Any]], settings: BfclSettings
) -> list[dict[str, Any]]:
    """Run and judge each multi-turn item (``wheel``: where its ``bfcl_eval`` modules are)."""
    from loki_pipeline.evaluate.bfcl_multi_turn import (
        Turns,
        bfcl_modules,
        check_conversation,
        run_conversation,
    )
    from loki_pipeline.evaluate.generation import PrefixCachedChat, chat_prompt

    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    records = []
    for it in items:
        chat = PrefixCachedChat(model, tokenizer, max_new_tokens=settings.max_new_tokens)

        def respond(messages: list[dict[str, str]], chat=chat) -> str:
            if limit is not None:
                length = len(tokenizer(chat_prompt(tokenizer, messages))["input_ids"])
                if length + settings.max_new_tokens > limit:
                    raise ContextOverflow(f"{length} prompt tokens + answer over {limit}")
            return chat(messages)

        checker, _ = bfcl_modules(it["wheel"])
        try:
            turns = run_conversation(it, respond, max_steps=settings.max_steps_per_turn)
            verdict = check_conversation(checker, it, turns)
        except ContextOverflow as err:  # BFCL's inference would error too: the item fails
            log.warning("BFCL %s: %s; counted wrong", it["id"], err)
            turns = Turns([], False)
            verdict = {"valid": False, "error_type": "multi_turn:context_overflow"}
        records.append(
            {
                "id": it["id"],
                "category": it["category"],
                "output": turns.answers,
                "correct": bool(verdict["valid"]),
                "error_type": verdict.get("error_type"),
            }
        )
        log.info(
            "BFCL %s: %s (prompt tokens computed %d, reused from the cache %d)",
            it["id"],
            "right" if verdict["valid"] else verdict["error_type"],
            chat.computed_tokens,
            chat.reused_tokens,
        )
    return records
