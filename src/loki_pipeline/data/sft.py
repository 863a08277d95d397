"""Supervised fine-tuning examples for a task, ready for a Hugging Face ``Trainer``.

``build_sft_dataset``: a task's conversations (loaded by its loader in the task registry,
``loki_pipeline.tasks.registry``: ToolACE, reranker, or a task of the user's in LLaMA-Factory's
formats) -> chat template with assistant-only labels (``chat.tokenize_conversation``) ->
optional packing. ``SFTCollator`` pads a batch.

Truncation: a conversation longer than ``cutoff_len`` keeps its first ``cutoff_len`` tokens.
One that keeps no assistant token at all is dropped; each is counted and reported in one
warning, and more than ``max_drop_fraction`` of the rows dropped is an error (the cutoff is too
small for the data), so rows are never silently dropped in bulk. A ``cutoff_len`` beyond the
model's context (``max_context``, from :func:`~loki_pipeline.models.loading.context_length`) is lowered to it with a warning:
positions past the context were never trained, and RoPE models would run past them silently.

Packing (LLaMA-Factory's ``packing: true``): whole examples are concatenated in order into
sequences of at most ``cutoff_len`` tokens; an example is never split across two sequences.
Attention is the model's ordinary causal attention over the packed sequence, so a token can
attend to earlier examples in the same pack (no block-diagonal mask, no position reset); the
loss is unaffected at example boundaries because the first tokens of every example are template
tokens, labelled ``-100``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loki_pipeline.data.chat import IGNORE_INDEX, encode_conversation
from loki_pipeline.errors import LokiInputError

log = logging.getLogger(__name__)


def build_sft_dataset(
    conversations: Sequence[list[dict[str, str]]],
    tokenizer: Any,
    *,
    task: str,
    source: str | os.PathLike,
    cutoff_len: int,
    packing: bool = False,
    max_drop_fraction: float = 0.05,
    max_context: int | None = None,
) -> list[dict[str, list[int]]]:
    """Tokenized (and optionally packed) examples ``{"input_ids", "labels"}`` of a task's
    ``conversations`` (the task registry loads them: ``tasks.registry.task_examples``).

    ``task`` and ``source`` (its data file) name the data in messages. ``max_context`` (the
    model's context) caps ``cutoff_len``, with a warning.
    """
    from tqdm.auto import tqdm

    if max_context is not None and cutoff_len > max_context:
        log.warning(
            "cutoff_len=%d is longer than the model's context of %d tokens "
            "(max_position_embeddings): examples are cut at %d tokens",
            cutoff_len,
            max_context,
            max_context,
        )
        cutoff_len = max_context
    examples, truncated, dropped = [], 0, 0
    for messages in tqdm(conversations, desc=f"tokenize {task}", unit="conv", leave=False):
        example, length = encode_conversation(tokenizer, messages, cutoff_len=cutoff_len)
        truncated += length > cutoff_len
        if all(label == IGNORE_INDEX for label in example["labels"]):
            dropped += 1
            continue
        examples.append(example)
    if truncated:
        log.warning(
            "%s: %d of %d examples truncated to %d tokens (cutoff_len); %d kept no assistant "
            "token and were dropped",
            task,
            truncated,
            len(conversations),
            cutoff_len,
            dropped,
        )
    if dropped > max_drop_fraction * len(conversations):
        raise LokiInputError(
            f"{task} data {source}: {dropped} of {len(conversations)} "
            f"conversations have no assistant token within cutoff_len={cutoff_len}; raise "
            "cutoff_len"
        )
    return pack_examples(examples, cutoff_len) if packing else examples


def pack_examples(
    examples: Sequence[dict[str, list[int]]], cutoff_len: int
) -> list[dict[str, list[int]]]:
    """Greedy in-order packing of whole examples into sequences of <= ``cutoff_len`` tokens."""
    packs: list[dict[str, list[int]]] = []
    current: dict[str, list[int]] = {"input_ids": [], "labels": []}
    for ex in examples:
        if len(ex["input_ids"]) > cutoff_len:
            raise LokiInputError(f"example of {len(ex['input_ids'])} tokens exceeds cutoff_len")
        if current["input_ids"] and len(current["input_ids"]) + len(ex["input_ids"]) > cutoff_len:
            packs.append(current)
            current = {"input_ids": [], "labels": []}
        current["input_ids"] += ex["input_ids"]
        current["labels"] += ex["labels"]
    if current["input_ids"]:
        packs.append(current)
    return packs


@dataclass
class SFTCollator:
    """Right-pads ``input_ids`` with ``pad_token_id`` and ``labels`` with -100; adds the mask."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        length = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {"input_ids": [], "labels": [], "attention_mask": []}
        for f in features:
            ids, labels = list(f["input_ids"]), list(f["labels"])
            pad = length - len(ids)
            batch["input_ids"].append(ids + [self.pad_token_id] * pad)
            batch["labels"].append(labels + [IGNORE_INDEX] * pad)
            batch["attention_mask"].append([1] * len(ids) + [0] * pad)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}


def collate_sft(features: Sequence[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Functional form of ``SFTCollator``."""
    return SFTCollator(pad_token_id)(features)
