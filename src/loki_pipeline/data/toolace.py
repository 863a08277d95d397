"""ToolACE loader: function-calling dialogues as chat messages.

Schema (``Team-ACE/ToolACE``'s ``data.json``; its dataset card)::

    {"system": "...tool list as JSON...", "conversations": [{"from": "user"|"assistant"|"tool",
                                                             "value": "..."}, ...]}

Each row becomes ``[{"role": "system", ...}, {"role": "user", ...}, ...]``. Tool results keep
the role ``"tool"`` by default: SmolLM2's ChatML template prints any role verbatim
(``<|im_start|>tool``), Llama-3.1's renders it as its ``ipython`` turn and Qwen2.5's wraps it in
``<tool_response>`` inside a user turn, so all three accept it. For a template that only knows
user/assistant (Mistral v1, Gemma), pass ``tool_role="user"``.
"""

from __future__ import annotations

import os

from loki_pipeline.data.records import read_records
from loki_pipeline.errors import LokiInputError

DEFAULT_SOURCE = "data/toolace/train.json"
HUB_SOURCE = "hf:Team-ACE/ToolACE"

#: ToolACE's speaker names (plus the ShareGPT aliases some copies use) -> chat roles
SPEAKER_ROLES = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
}


def load_toolace(
    source: str | os.PathLike = DEFAULT_SOURCE,
    *,
    max_samples: int | None = None,
    split: str = "train",
    tool_role: str = "tool",
) -> list[list[dict[str, str]]]:
    """Read ToolACE-schema rows into chat conversations (system, then the turns in order).

    Raises ``LokiInputError`` naming file and row for a missing field, an unknown speaker, a
    conversation without an assistant turn, or an empty data set.
    """
    if tool_role not in ("tool", "user"):
        raise LokiInputError(f"tool_role must be 'tool' or 'user', got {tool_role!r}")
    conversations = [
        toolace_row_to_messages(row, where=where, tool_role=tool_role)
        for where, row in read_records(source, max_rows=max_samples, split=split)
    ]
    if not conversations:
        raise LokiInputError(f"ToolACE data {source} is empty: no rows to train on")
    return conversations


def toolace_row_to_messages(
    row: dict, *, where: str = "row", tool_role: str = "tool"
) -> list[dict[str, str]]:
    """One ToolACE row -> chat messages; ``where`` names the row in error messages."""
    turns = row.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise LokiInputError(
            f"{where}: missing or empty 'conversations' (expected a list of "
            "{'from': 'user'|'assistant'|'tool', 'value': str})"
        )
    system = row.get("system")
    if system is not None and not isinstance(system, str):
        raise LokiInputError(f"{where}: 'system' must be a string, got {type(system).__name__}")
    messages = [{"role": "system", "content": system}] if system else []
    for t, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise LokiInputError(f"{where}, turn {t}: expected an object with 'from' and 'value'")
        role = SPEAKER_ROLES.get(turn["from"])
        if role is None:
            raise LokiInputError(
                f"{where}, turn {t}: unknown speaker {turn['from']!r} "
                f"(expected one of {', '.join(sorted(set(SPEAKER_ROLES)))})"
            )
        if not isinstance(turn["value"], str):
            raise LokiInputError(f"{where}, turn {t}: 'value' must be a string")
        messages.append({"role": tool_role if role == "tool" else role, "content": turn["value"]})
    if not any(m["role"] == "assistant" for m in messages):
        raise LokiInputError(f"{where}: the conversation has no assistant turn to train on")
    return messages
