"""Any SFT data set in LLaMA-Factory's ``alpaca`` or ``sharegpt`` format, as chat conversations.

LoKI's upstream trains with LLaMA-Factory, so its users' data is already in one of its two
formats; the column mapping is that of its ``dataset_info.json`` (``data/README.md`` of
hiyouga/LLaMA-Factory), with the same defaults:

- ``alpaca``: one row per example. ``columns``: ``prompt`` (default column ``instruction``,
  required), ``query`` (``input``, optional: the user turn is ``prompt\\nquery``), ``response``
  (``output``, required), ``system`` (``system``, optional), ``history`` (``history``, optional:
  earlier ``[prompt, response]`` pairs, whose responses are trained on too, as upstream does).
- ``sharegpt``: ``columns``: ``messages`` (``conversations``), ``system``, ``tools`` (optional);
  ``tags`` name the keys and roles of a message: ``role_tag`` ``from``, ``content_tag``
  ``value``, ``user_tag`` ``human``, ``assistant_tag`` ``gpt``, ``observation_tag``
  ``observation``, ``function_tag`` ``function_call``, ``system_tag`` ``system`` (a first
  message of that role is the system prompt). User and observation turns sit at odd positions,
  assistant and function-call turns at even ones, and the conversation ends with one of the
  latter (upstream's rule).

Where upstream skips a malformed row with a warning, this loader stops with ``LokiInputError``
naming the file, the row and the column or turn, so a data set never shrinks unnoticed.
Function calls train as assistant turns and observations become ``tool`` turns (as ToolACE's
loader does); a row's ``tools`` (text, or JSON objects) are appended to its system prompt,
where ToolACE keeps its tool list, since chat templates disagree on a tools argument.

``heldout_split`` draws the generic task's held-out rows: training reads ``part="train"``, the
evaluation ``part="heldout"``, from the same file and settings, so no row is in both.
"""

from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Mapping, Sequence
from typing import Any

from loki_pipeline.data.records import read_records
from loki_pipeline.errors import LokiInputError

FORMATS = ("alpaca", "sharegpt")

#: LLaMA-Factory's default column of each role, per format
ALPACA_COLUMNS = {
    "prompt": "instruction",
    "query": "input",
    "response": "output",
    "system": "system",
    "history": "history",
}
SHAREGPT_COLUMNS = {"messages": "conversations", "system": "system", "tools": "tools"}
SHAREGPT_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}
DEFAULT_COLUMNS = {"alpaca": ALPACA_COLUMNS, "sharegpt": SHAREGPT_COLUMNS}

PARTS = ("train", "heldout", "all")

Conversation = list[dict[str, str]]


def _mapping(given: Mapping[str, str] | None, defaults: dict[str, str], what: str) -> dict:
    unknown = sorted(set(given or {}) - set(defaults))
    if unknown:
        raise LokiInputError(f"{what}: unknown keys {unknown}; known: {sorted(defaults)}")
    return {**defaults, **(given or {})}


def _text(value: Any, where: str, column: str, *, required: bool) -> str:
    """A string cell; ``""`` for an optional cell that is absent or null."""
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise LokiInputError(
            f"{where}: column {column!r} must be a string, got {type(value).__name__}"
        )
    return value


def _missing(where: str, column: str, role: str, fmt: str) -> LokiInputError:
    return LokiInputError(
        f"{where}: missing column {column!r} (the {role} of format {fmt}; name the file's "
        f"column in train.columns.{role})"
    )


def alpaca_row_to_messages(
    row: Mapping[str, Any], *, where: str = "row", columns: Mapping[str, str] | None = None
) -> Conversation:
    """One alpaca row -> system, the history's turns, then ``prompt\\nquery`` and the response."""
    cols = _mapping(columns, ALPACA_COLUMNS, "alpaca columns")
    for role in ("prompt", "response"):
        if cols[role] not in row:
            raise _missing(where, cols[role], role, "alpaca")
    messages: Conversation = []
    system = _text(row.get(cols["system"]), where, cols["system"], required=False)
    if system:
        messages.append({"role": "system", "content": system})
    history = row.get(cols["history"])
    if history is not None:
        if not isinstance(history, list):
            raise LokiInputError(
                f"{where}: column {cols['history']!r} must be a list of [prompt, response] pairs"
            )
        for t, pair in enumerate(history):
            if (
                not isinstance(pair, (list, tuple))
                or len(pair) != 2
                or not all(isinstance(p, str) for p in pair)
            ):
                raise LokiInputError(
                    f"{where}: {cols['history']}[{t}] must be a [prompt, response] pair of strings"
                )
            messages += [{"role": "user", "content": pair[0]},
                         {"role": "assistant", "content": pair[1]}]  # fmt: skip
    parts = [
        _text(row.get(cols["prompt"]), where, cols["prompt"], required=True),
        _text(row.get(cols["query"]), where, cols["query"], required=False),
    ]
    user = "\n".join(p for p in parts if p)
    if not user.strip():
        raise LokiInputError(
            f"{where}: columns {cols['prompt']!r} and {cols['query']!r} are both empty: no prompt"
        )
    response = _text(row[cols["response"]], where, cols["response"], required=True)
    if not response.strip():
        raise LokiInputError(f"{where}: column {cols['response']!r} is empty: nothing to learn")
    return [
        *messages,
        {"role": "user", "content": user},
        {"role": "assistant", "content": response},
    ]


def sharegpt_row_to_messages(
    row: Mapping[str, Any],
    *,
    where: str = "row",
    columns: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
) -> Conversation:
    """One sharegpt row -> system (with the row's tools), then the turns in order."""
    cols = _mapping(columns, SHAREGPT_COLUMNS, "sharegpt columns")
    tag = _mapping(tags, SHAREGPT_TAGS, "sharegpt tags")
    if cols["messages"] not in row:
        raise _missing(where, cols["messages"], "messages", "sharegpt")
    turns = row[cols["messages"]]
    if not isinstance(turns, list) or not turns:
        raise LokiInputError(f"{where}: column {cols['messages']!r} must be a non-empty list")
    role_tag, content_tag = tag["role_tag"], tag["content_tag"]
    for t, turn in enumerate(turns):
        if not isinstance(turn, Mapping) or role_tag not in turn or content_tag not in turn:
            raise LokiInputError(
                f"{where}, {cols['messages']}[{t}]: expected an object with {role_tag!r} and "
                f"{content_tag!r} (train.tags.role_tag / content_tag name other keys)"
            )
        _text(turn[content_tag], f"{where}, {cols['messages']}[{t}]", content_tag, required=True)
    system = _text(row.get(cols["system"]), where, cols["system"], required=False)
    if turns[0][role_tag] == tag["system_tag"]:
        system, turns, offset = turns[0][content_tag], turns[1:], 1
    else:
        offset = 0
    tools = row.get(cols["tools"])
    if tools not in (None, "", [], {}):
        text = tools if isinstance(tools, str) else json.dumps(tools, ensure_ascii=False)
        system = f"{system}\n\n{text}" if system else text
    roles = {
        tag["user_tag"]: "user",
        tag["observation_tag"]: "tool",
        tag["assistant_tag"]: "assistant",
        tag["function_tag"]: "assistant",
    }
    allowed = (
        (tag["user_tag"], tag["observation_tag"]),
        (tag["assistant_tag"], tag["function_tag"]),
    )
    messages: Conversation = [{"role": "system", "content": system}] if system else []
    for t, turn in enumerate(turns):
        expected = allowed[t % 2]
        if turn[role_tag] not in expected:
            raise LokiInputError(
                f"{where}, {cols['messages']}[{t + offset}]: {role_tag} {turn[role_tag]!r} where "
                f"{' or '.join(map(repr, expected))} is expected (turns alternate user/observation "
                "and assistant/function call; train.tags names other roles)"
            )
        messages.append({"role": roles[turn[role_tag]], "content": turn[content_tag]})
    if len(turns) % 2:
        raise LokiInputError(
            f"{where}: the conversation ends with a {turns[-1][role_tag]!r} turn; it must end with "
            f"an assistant ({tag['assistant_tag']!r}) or function-call turn to train on"
        )
    return messages


def heldout_split(
    conversations: Sequence[Conversation], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """``(train, heldout)`` row indices: ``ceil(fraction x distinct rows)`` held out by a seeded
    shuffle, at least one and never all of them (none when ``fraction`` is 0).

    Rows are drawn by content, so copies of one conversation fall on the same side: a data set
    with duplicates cannot put a held-out answer in the training data.
    """
    if not 0 <= fraction < 1:
        raise LokiInputError(f"eval.heldout.fraction must be in [0, 1), got {fraction!r}")
    keys = [json.dumps(c, sort_keys=True, ensure_ascii=False) for c in conversations]
    distinct = list(dict.fromkeys(keys))
    if fraction == 0:
        return list(range(len(keys))), []
    if len(distinct) < 2:
        raise LokiInputError(
            f"a held-out split needs at least 2 distinct rows, the data has {len(distinct)}"
        )
    count = min(max(1, math.ceil(fraction * len(distinct))), len(distinct) - 1)
    order = distinct[:]
    random.Random(seed).shuffle(order)
    held = set(order[:count])
    train = [i for i, k in enumerate(keys) if k not in held]
    return train, [i for i, k in enumerate(keys) if k in held]


def read_llamafactory(
    source: str | os.PathLike,
    *,
    format: str | None,
    columns: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    split: str = "train",
    max_rows: int | None = None,
) -> list[tuple[str, Conversation]]:
    """``(where, conversation)`` of every row (the first ``max_rows``) of an alpaca/sharegpt
    data set; ``LokiInputError`` naming file, row and column for a bad row or an empty set."""
    if format not in FORMATS:
        raise LokiInputError(
            f"train.format must be one of {', '.join(FORMATS)} (LLaMA-Factory's formats), "
            f"got {format!r}"
        )
    if format == "alpaca" and tags:
        raise LokiInputError("train.tags apply to format sharegpt only (alpaca has columns)")
    rows = []
    for where, row in read_records(source, split=split, max_rows=max_rows):
        if format == "alpaca":
            rows.append((where, alpaca_row_to_messages(row, where=where, columns=columns)))
        else:
            rows.append(
                (where, sharegpt_row_to_messages(row, where=where, columns=columns, tags=tags))
            )
    if not rows:
        raise LokiInputError(f"{format} data {source} is empty: no rows to train on")
    return rows


def split_part(
    rows: Sequence[tuple[str, Conversation]], heldout: Mapping[str, Any] | None, part: str
) -> list[tuple[int, str, Conversation]]:
    """``(row index, where, conversation)`` of one part of ``rows``: ``train`` (every row not
    held out), ``heldout`` or ``all``; ``heldout`` is ``{"fraction", "seed"}``."""
    if part not in PARTS:
        raise LokiInputError(f"part must be one of {PARTS}, got {part!r}")
    heldout = dict(heldout or {})
    if part == "all":
        chosen = list(range(len(rows)))
    else:
        train, held = heldout_split(
            [c for _, c in rows], float(heldout.get("fraction", 0.0)), int(heldout.get("seed", 0))
        )
        chosen = train if part == "train" else held
    return [(i, *rows[i]) for i in chosen]


def load_llamafactory(
    source: str | os.PathLike,
    *,
    format: str | None = None,
    columns: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    heldout: Mapping[str, Any] | None = None,
    part: str = "train",
    max_samples: int | None = None,
    split: str = "train",
) -> list[Conversation]:
    """Conversations of an alpaca/sharegpt data set: its training rows (``part="train"``: every
    row not held out), its held-out rows, or all of them.

    ``heldout`` is ``{"fraction", "seed"}`` (``tasks.<task>.eval.heldout``); the split is made
    over every row of ``source``, then ``max_samples`` keeps the first rows of the part.
    """
    whole = part == "all" or not float((heldout or {}).get("fraction", 0.0))
    rows = read_llamafactory(
        source, format=format, columns=columns, tags=tags, split=split,
        max_rows=max_samples if whole else None,
    )  # fmt: skip
    chosen = [c for _, _, c in split_part(rows, heldout, part)]
    return chosen[:max_samples] if max_samples else chosen
