"""Chat tokenization with the model's own template and loss on assistant tokens only.

``labels[t] = input_ids[t]`` on the tokens of every assistant turn (its content and the
template's end-of-turn token) and ``-100`` everywhere else (system, user and tool turns and the
role headers), the masking LLaMA-Factory's SFT uses.

How assistant spans are found, for any template:

1. If the template marks them with ``{% generation %}``, transformers' assistant-token mask.
2. Otherwise by rendering prefixes: for assistant message ``i``, ``P`` = the conversation up to
   ``i`` with the generation prompt and ``F`` = up to and including ``i``; the turn's tokens are
   ``F[len(P):]`` cut after its last end-of-turn token (so ChatML's newline after
   ``<|im_end|>`` stays masked). This needs ``P`` and ``F`` to be token prefixes of the whole
   conversation, which holds for ChatML (SmolLM2, Qwen2.5) and Llama-3. Templates that rewrite
   earlier turns (Qwen3 drops reasoning from past turns) fall back to: start where ``P`` stops
   matching, end at the next end-of-turn token; a warning says so once.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from loki_pipeline.data.chat_render import render_chat
from loki_pipeline.errors import LokiInputError

log = logging.getLogger(__name__)

IGNORE_INDEX = -100

#: end-of-turn markers of common templates; those in a tokenizer's vocabulary count as such
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "</s>", "<|eom_id|>")

_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")
_warned_fallback = False


def tokenize_conversation(
    tokenizer: Any, messages: list[dict[str, str]], *, cutoff_len: int
) -> dict[str, list[int]]:
    """``{"input_ids", "labels"}`` of one conversation, truncated to ``cutoff_len`` tokens.

    Truncation keeps the beginning (the system prompt and the first turns) and logs a warning;
    ``build_sft_dataset`` counts truncations over a whole data set instead.
    """
    example, full_length = encode_conversation(tokenizer, messages, cutoff_len=cutoff_len)
    if full_length > cutoff_len:
        log.warning("conversation of %d tokens truncated to cutoff_len=%d", full_length, cutoff_len)
    return example


def encode_conversation(
    tokenizer: Any, messages: list[dict[str, str]], *, cutoff_len: int
) -> tuple[dict[str, list[int]], int]:
    """Like ``tokenize_conversation`` but silent; also returns the untruncated length."""
    if not isinstance(cutoff_len, int) or cutoff_len < 2:
        raise LokiInputError(f"cutoff_len must be an integer >= 2, got {cutoff_len!r}")
    if not any(m.get("role") == "assistant" for m in messages):
        raise LokiInputError("conversation has no assistant turn to train on")
    if getattr(tokenizer, "chat_template", None) is None:
        raise LokiInputError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; "
            "use an instruct/chat model's tokenizer"
        )
    if _GENERATION_TAG.search(tokenizer.chat_template):
        input_ids, mask = _generation_mask(tokenizer, messages)
    else:
        input_ids, mask = _prefix_mask(tokenizer, messages)
    labels = [tok if m else IGNORE_INDEX for tok, m in zip(input_ids, mask, strict=True)]
    return {"input_ids": input_ids[:cutoff_len], "labels": labels[:cutoff_len]}, len(input_ids)


def encode_answer(
    tokenizer: Any, messages: list[dict[str, str]], *, cutoff_len: int
) -> tuple[dict[str, list[int]], int]:
    """Like ``encode_conversation``, but only the last turn (an assistant's: the answer) is
    labelled; the earlier turns are its context. What a held-out evaluation scores."""
    if not messages or messages[-1].get("role") != "assistant":
        raise LokiInputError("conversation does not end with an assistant turn to score")
    example, full_length = encode_conversation(tokenizer, messages, cutoff_len=cutoff_len)
    start = len(_render(tokenizer, messages[:-1], generation_prompt=True))
    labels = [IGNORE_INDEX if i < start else t for i, t in enumerate(example["labels"])]
    return {"input_ids": example["input_ids"], "labels": labels}, full_length


def _render(
    tokenizer: Any, messages: list[dict[str, str]], *, generation_prompt: bool
) -> list[int]:
    if not messages:
        return []
    ids = render_chat(
        tokenizer,
        messages,
        tokenize=True,
        add_generation_prompt=generation_prompt,
        return_dict=False,
    )
    return list(ids)


def end_of_turn_ids(tokenizer: Any) -> set[int]:
    """Token ids that close a turn: the tokenizer's eos and known end-of-turn markers it has."""
    # convert_tokens_to_ids per marker, not get_vocab(): that copies a 50k-150k entry dict
    ids = set()
    for token in END_OF_TURN_TOKENS:
        i = tokenizer.convert_tokens_to_ids(token)
        if isinstance(i, int) and tokenizer.convert_ids_to_tokens(i) == token:
            ids.add(i)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _prefix_mask(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[list[int], list[bool]]:
    global _warned_fallback
    full = _render(tokenizer, messages, generation_prompt=False)
    eot = end_of_turn_ids(tokenizer)
    mask = [False] * len(full)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], generation_prompt=True)
        turn = _render(tokenizer, messages[: i + 1], generation_prompt=False)
        start = _common_prefix(prompt, full)
        if start == len(prompt) and full[: len(turn)] == turn:
            end = len(turn)
            closing = [j for j in range(start, end) if full[j] in eot]
            if closing:
                end = closing[-1] + 1
        else:
            if not _warned_fallback:
                log.warning(
                    "chat template of %r is not prefix-stable; assistant turns are located by "
                    "their end-of-turn token instead",
                    getattr(tokenizer, "name_or_path", ""),
                )
                _warned_fallback = True
            end = next((j + 1 for j in range(start, len(full)) if full[j] in eot), len(full))
        for j in range(start, end):
            mask[j] = True
    return full, mask


def _generation_mask(
    tokenizer: Any, messages: list[dict[str, str]]
) -> tuple[list[int], list[bool]]:
    out = render_chat(
        tokenizer, messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    return list(out["input_ids"]), [bool(m) for m in out["assistant_masks"]]
