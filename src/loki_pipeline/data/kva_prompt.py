"""What every KVA prompt set shares: ids and per-subject caps, and the prompt's token ids.

A KVA item (``MMLUItem``, ``PromptItem``) has a ``question_id``, a ``subject``, ``chat()``
(the chat messages the model reads: MMLU's one user turn, or a user's chat) and
``fingerprint()`` (what its attributions depend on, hashed into the KVA file's inputs). The
prompt is the chat through the model's template with the generation prompt appended, so the
last position predicts the first token of the assistant's answer: the token KVA attributes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from loki_pipeline.data.chat_render import render_chat
from loki_pipeline.errors import LokiInputError

#: kva.prompt_format values: a chat user turn (the paper), or the text as it is
PROMPT_FORMATS = ("chat", "plain")

T = TypeVar("T")


class KVAItem(Protocol):
    question_id: str
    subject: str

    def chat(self) -> list[dict[str, str]]: ...

    def fingerprint(self) -> list[Any]: ...


def number_and_cap(
    entries: Iterable[tuple[str, str | None, str, T]],
    *,
    name: str,
    max_per_subject: int | None,
) -> list[tuple[str, str, T]]:
    """``[(question_id, subject, payload)]`` from ``[(where, question_id or None, subject,
    payload)]``: a missing id becomes ``<subject>/<n>`` (``n`` counts that subject's rows in
    file order, from 0), a repeated id is refused naming both rows, and at most
    ``max_per_subject`` rows of each subject are kept (the first, in file order)."""
    if max_per_subject is not None and (
        isinstance(max_per_subject, bool)
        or not isinstance(max_per_subject, int)
        or max_per_subject < 1
    ):
        raise LokiInputError(
            f"max_per_subject {max_per_subject!r}: expected an integer >= 1 or None"
        )
    seen: Counter[str] = Counter()
    ids: dict[str, str] = {}
    kept: list[tuple[str, str, T]] = []
    for where, qid, subject, payload in entries:
        n = seen[subject]
        seen[subject] += 1
        qid = qid if qid is not None else f"{subject}/{n}"
        if qid in ids:
            raise LokiInputError(f"{where}: duplicate question_id {qid!r} (first at {ids[qid]})")
        ids[qid] = where
        if max_per_subject is None or n < max_per_subject:
            kept.append((qid, subject, payload))
    if not kept:
        raise LokiInputError(f"{name}: empty data set (no prompts)")
    return kept


def optional_id(row: Mapping[str, Any], where: str) -> str | None:
    """A row's ``question_id`` (str or int) or None; anything else is refused."""
    qid = row.get("question_id")
    if qid is not None and (
        not isinstance(qid, (str, int)) or isinstance(qid, bool) or str(qid) == ""
    ):
        raise LokiInputError(f"{where}: 'question_id' must be a non-empty string, got {qid!r}")
    return None if qid is None else str(qid)


def encode_chat(tokenizer: Any, messages: Sequence[Mapping[str, str]], prompt_format: str = "chat"):
    """Token ids ``LongTensor [n]`` of ``messages`` through the chat template, followed by the
    assistant generation prompt; ``prompt_format="plain"``: the one user turn's text tokenized
    as it is, with the tokenizer's special tokens (BOS), for a model without a chat template."""
    import torch

    if prompt_format not in PROMPT_FORMATS:
        raise LokiInputError(
            f"kva.prompt_format={prompt_format!r}: expected one of {', '.join(PROMPT_FORMATS)}"
        )
    if prompt_format == "plain":
        if len(messages) != 1 or messages[0]["role"] != "user":
            raise LokiInputError(
                f"a chat of {len(messages)} messages has no plain-text form (kva.prompt_format "
                "'plain' takes one user turn)"
            )
        ids = torch.as_tensor(
            list(tokenizer(messages[0]["content"], add_special_tokens=True)["input_ids"]),
            dtype=torch.long,
        )
        if ids.numel() == 0:
            raise RuntimeError("the tokenizer gave no ids for a prompt")
        return ids
    if not getattr(tokenizer, "chat_template", None):
        raise LokiInputError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__} "
            "has no chat template; LoKI's prompts are chat turns (set kva.prompt_format: plain "
            "for a model without one)"
        )
    out = render_chat(
        tokenizer, [dict(m) for m in messages], add_generation_prompt=True, tokenize=True
    )
    # transformers 5 returns a BatchEncoding (dict-like); 4.x a list of ids.
    if isinstance(out, Mapping) or hasattr(out, "input_ids"):
        out = out["input_ids"]
    ids = torch.as_tensor(out, dtype=torch.long)
    if ids.dim() == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.dim() != 1 or ids.numel() == 0:
        raise RuntimeError(f"apply_chat_template gave ids of shape {tuple(ids.shape)}")
    return ids


def encode_prompts(
    tokenizer: Any,
    items: Sequence[KVAItem],
    *,
    max_length: int | None = None,
    source: str = "",
    prompt_format: str = "chat",
) -> list:
    """:func:`encode_chat` of every item; refuse prompts longer than ``max_length`` tokens.

    A prompt past the model's context (``max_position_embeddings``) would be attributed with
    positions the model never learned, or crash mid-run; all prompts are encoded first (only
    the tokenizer is needed) so the error counts them and comes before any weight is loaded.
    """
    where = f"{source}: " if source else ""
    chats = [item.chat() for item in items]
    if prompt_format == "plain":
        for item, chat in zip(items, chats, strict=True):
            if len(chat) != 1 or chat[0]["role"] != "user":
                raise LokiInputError(
                    f"{where}question_id {item.question_id!r}: a chat of {len(chat)} messages "
                    "has no plain-text form (kva.prompt_format 'plain' takes one user turn)"
                )
    encoded = [encode_chat(tokenizer, chat, prompt_format) for chat in chats]
    if max_length is not None:
        long = [
            (item, len(ids))
            for item, ids in zip(items, encoded, strict=True)
            if len(ids) > max_length
        ]
        if long:
            item, n = long[0]
            raise LokiInputError(
                f"{where}{len(long)} of {len(items)} prompts are longer "
                f"than the model's context of {max_length} tokens (the first: question_id "
                f"{item.question_id!r}, {n} tokens); shorten those questions or leave them out"
            )
    return encoded
