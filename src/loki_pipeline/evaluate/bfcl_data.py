"""The Berkeley Function Calling Leaderboard's own items, read out of the ``bfcl-eval`` wheel.

The wheel (Apache-2.0, on PyPI) carries the question files ``bfcl_eval/data/BFCL_v<N>_<cat>.json``
and the answers ``bfcl_eval/data/possible_answer/BFCL_v<N>_<cat>.json``, both JSON lines (checked
on ``bfcl-eval==2026.3.23``, whose files are ``BFCL_v4_*``, and on ``2025.6.8``, V3's
``BFCL_v3_*``). The wheel is only downloaded (``pip download --no-deps``), never installed: its
package's dependencies are many and heavy. Single-turn items are read from it as a zip; for
multi-turn items ``bfcl_multi_turn`` imports just the checker and simulated APIs from it.

The single-turn Python categories are judged by the AST checker (relevance and irrelevance
have no answer file); the multi-turn ones are read and run by ``bfcl_multi_turn``, which imports
bfcl-eval's simulated APIs and multi-turn checker from the same wheel. Older BFCL versions called ``simple_python``
just ``simple``; either name is accepted.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loki_pipeline.errors import LokiInputError

DEFAULT_VERSION = "2026.3.23"

#: Single-turn Python categories the AST checker judges (BFCL's names).
NON_LIVE = ("simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance")
LIVE = (
    "live_simple",
    "live_multiple",
    "live_parallel",
    "live_parallel_multiple",
    "live_irrelevance",
    "live_relevance",
)
MULTI_TURN = (
    "multi_turn_base",
    "multi_turn_miss_func",
    "multi_turn_miss_param",
    "multi_turn_long_context",
)
CATEGORIES = NON_LIVE + LIVE + MULTI_TURN
#: other names for a category across BFCL versions
ALIASES = {"simple": "simple_python", "simple_python": "simple"}
DATA_DIR = "bfcl_eval/data/"


def bfcl_wheel(
    version: str = DEFAULT_VERSION, cache_dir: str | os.PathLike = "resources/cache"
) -> Path:
    """The ``bfcl-eval==version`` wheel in ``cache_dir/wheels`` (downloaded once, then reused)."""
    from loki_pipeline.models.sources import download_wheel

    if not re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version):
        raise LokiInputError(f"bfcl-eval version {version!r}: expected a version like '2026.3.23'")
    return download_wheel(f"bfcl-eval=={version}", Path(cache_dir) / "wheels")


def check_categories(categories: list[str]) -> list[str]:
    """The categories, validated before any download or model load."""
    if not categories:
        raise LokiInputError("tasks.toolace.eval.bfcl.categories is empty; name at least one")
    bad = [c for c in categories if c not in CATEGORIES and ALIASES.get(c) not in CATEGORIES]
    if bad:
        raise LokiInputError(
            f"BFCL categories {bad} are not run here (agentic ones need the web or memory "
            f"backends, Java/JavaScript another parser); supported: {list(CATEGORIES)}"
        )
    if len(set(categories)) != len(categories):
        raise LokiInputError(f"BFCL categories repeat a name: {categories}")
    return categories


def member(names: set[str], folder: str, category: str) -> str | None:
    for cat in (category, ALIASES.get(category)):
        if cat is None:
            continue
        pattern = re.compile(re.escape(folder) + r"BFCL_v\d+_" + re.escape(cat) + r"\.json")
        found = sorted(n for n in names if pattern.fullmatch(n))
        if found:
            return found[-1]
    return None


def json_lines(zf: zipfile.ZipFile, member: str) -> list[dict[str, Any]]:
    rows = []
    for lineno, line in enumerate(zf.read(member).decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise LokiInputError(f"{member} line {lineno}: invalid JSON ({err})") from None
    return rows


def load_single_turn(
    wheel: str | os.PathLike, categories: list[str], *, max_per_category: int | None = None
) -> list[dict[str, Any]]:
    """Single-turn items ``{"id", "category", "messages", "function", "ground_truth"}`` from
    the wheel (``bfcl_multi_turn.load_bfcl`` reads any category, multi-turn ones included).

    ``messages`` is the first (only) turn of ``question``; ``ground_truth`` is ``None`` for
    relevance and irrelevance. The first ``max_per_category`` items of each file, in file order.
    """
    try:
        zf = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as err:
        raise LokiInputError(f"{wheel}: not a readable bfcl-eval wheel ({err})") from None
    items: list[dict[str, Any]] = []
    with zf:
        names = set(zf.namelist())
        for category in categories:
            question_file = member(names, DATA_DIR, category)
            if question_file is None:
                raise LokiInputError(
                    f"{wheel}: no question file for BFCL category {category!r} under {DATA_DIR}"
                )
            questions = json_lines(zf, question_file)
            if max_per_category is not None:
                questions = questions[:max_per_category]
            answers: dict[str, Any] = {}
            if "relevance" not in category:  # irrelevance/relevance: judged without answers
                answer_file = member(names, DATA_DIR + "possible_answer/", category)
                if answer_file is None:
                    raise LokiInputError(f"{wheel}: no possible_answer file for {category!r}")
                answers = {row["id"]: row["ground_truth"] for row in json_lines(zf, answer_file)}
            for row in questions:
                missing = [k for k in ("id", "question", "function") if k not in row]
                if missing:
                    raise LokiInputError(f"{question_file}: an item lacks {missing}")
                if answers and row["id"] not in answers:
                    raise LokiInputError(f"{question_file}: item {row['id']!r} has no answer")
                items.append(
                    {
                        "id": row["id"],
                        "category": category,
                        "messages": row["question"][0],
                        "function": row["function"],
                        "ground_truth": answers.get(row["id"]),
                    }
                )
    if not items:
        raise LokiInputError(f"{wheel}: no BFCL items for categories {categories}")
    return items


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


def bfcl_messages(item: Mapping[str, Any]) -> list[dict[str, str]]:
    """The item's turn with BFCL's system prompt (merged into an existing system message)."""
    system = BFCL_SYSTEM_PROMPT.format(functions=json.dumps(item["function"], indent=4))
    messages = [dict(m) for m in item["messages"]]
    if messages and messages[0].get("role") == "system":
        messages[0]["content"] = system + "\n\n" + messages[0]["content"]
        return messages
    return [{"role": "system", "content": system}, *messages]
