"""A prompt set of the user's own (``kva.dataset.format: prompts``): the knowledge to protect.

JSON lines (or ``.json``/``.parquet``, or ``hf:<repo>``, read by ``data.records``), one prompt a
row, in one of two kinds:

- ``{"prompt": "What is the boiling point of water at sea level?"}``: one user turn;
- ``{"messages": [{"role": "system" | "user" | "assistant", "content": ...}, ...]}``: a chat,
  ``system`` only first, ending with a ``user`` turn.

Optional keys: ``subject`` (groups prompts in the stability table; default ``all``) and
``question_id`` (default ``<subject>/<n>``). Either kind goes through the chat template with
the generation prompt appended, so KVA attributes the model's own next token of its reply,
exactly as for an MMLU prompt; a chat must end with a user turn for that token to be a reply.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from loki_pipeline.data.kva_prompt import number_and_cap, optional_id
from loki_pipeline.data.records import read_records
from loki_pipeline.errors import LokiInputError

ROLES = ("system", "user", "assistant")
#: The subject of a row that names none.
DEFAULT_SUBJECT = "all"
_KINDS = "a prompts row is {\"prompt\": text} or {\"messages\": [{\"role\", \"content\"}, ...]}"


@dataclass(frozen=True)
class PromptItem:
    """One KVA prompt as chat messages (``(role, content)`` pairs)."""

    question_id: str
    subject: str
    messages: tuple[tuple[str, str], ...]

    def chat(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]

    def fingerprint(self) -> list[Any]:
        """What the attributions depend on (the KVA file's ``inputs.dataset`` hashes it)."""
        return [self.question_id, self.subject, [list(m) for m in self.messages]]


def _text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise LokiInputError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value


def _messages(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not value:
        raise LokiInputError(f"{where}: 'messages' must be a non-empty list of role/content turns")
    turns = []
    for i, message in enumerate(value):
        at = f"{where}: messages[{i}]"
        if not isinstance(message, Mapping):
            raise LokiInputError(f"{at}: expected an object with 'role' and 'content'")
        missing = [k for k in ("role", "content") if k not in message]
        if missing:
            raise LokiInputError(f"{at}: missing key {missing[0]!r}")
        role = message["role"]
        if role not in ROLES:
            raise LokiInputError(f"{at}: role {role!r}, expected one of {', '.join(ROLES)}")
        if role == "system" and i > 0:
            raise LokiInputError(f"{at}: a system message may only come first")
        turns.append((role, _text(message["content"], at, "content")))
    if turns[-1][0] != "user":
        raise LokiInputError(
            f"{where}: the last message is {turns[-1][0]!r}; a KVA chat ends with a 'user' turn "
            "(KVA attributes the first token of the model's reply to it)"
        )
    return tuple(turns)


def parse_prompt_row(row: Any, where: str) -> tuple[str | None, str, tuple[tuple[str, str], ...]]:
    """``(question_id or None, subject, messages)`` of one row, or an error naming ``where``."""
    if not isinstance(row, Mapping):
        raise LokiInputError(f"{where}: expected an object; {_KINDS}")
    kinds = [k for k in ("prompt", "messages") if k in row]
    if not kinds:
        raise LokiInputError(f"{where}: missing key 'prompt' or 'messages'; {_KINDS}")
    if len(kinds) == 2:
        raise LokiInputError(f"{where}: has both 'prompt' and 'messages'; give one")
    if kinds[0] == "prompt":
        messages = (("user", _text(row["prompt"], where, "prompt")),)
    else:
        messages = _messages(row["messages"], where)
    subject = _text(row["subject"], where, "subject") if "subject" in row else DEFAULT_SUBJECT
    return optional_id(row, where), subject, messages


def _entries(source: str, split: str) -> Iterator[tuple[str, str | None, str, Any]]:
    for where, row in read_records(source, split=split):
        qid, subject, messages = parse_prompt_row(row, where)
        yield where, qid, subject, messages


def load_prompts(
    source: str | os.PathLike, *, split: str = "train", max_per_subject: int | None = None
) -> list[PromptItem]:
    """Every row of ``source`` validated (``split``: a hub source's split), at most
    ``max_per_subject`` per subject (the first, in file order)."""
    source = os.fspath(source)
    kept = number_and_cap(_entries(source, split), name=source, max_per_subject=max_per_subject)
    return [PromptItem(qid, subject, messages) for qid, subject, messages in kept]
