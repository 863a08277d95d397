"""Batched model calls on chat prompts, shared by the task evaluators.

Prompts are left-padded with position ids that count real tokens only, so a padded prompt is
computed exactly as it would be alone; batches group prompts of similar length (less padding).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def left_padded(tokenizer: Any, prompts: Sequence[str], device: Any):
    """``(input_ids, attention_mask, position_ids, torch)`` of ``prompts``, left-padded."""
    import torch

    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False)
    mask = enc["attention_mask"]
    # Positions count real tokens only, so a padded prompt sees exactly its unpadded positions.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return enc["input_ids"].to(device), mask.to(device), positions.to(device), torch


def chat_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The chat as text through the model's template, ready for the assistant's answer."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def length_batches(tokenizer: Any, prompts: Sequence[str], batch_size: int) -> list[list[int]]:
    """Index batches of prompts of similar length (less padding), in a stable order."""
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def generate_greedy(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[list[dict[str, str]]],
    *,
    max_new_tokens: int | Sequence[int],
    batch_size: int = 8,
) -> list[str]:
    """The model's greedy answer (special tokens removed) to each chat, in input order.

    ``max_new_tokens``: one cap for all, or one per chat (a batch decodes up to the largest
    of its members'; each answer is then cut at its own cap)."""
    from tqdm import tqdm

    prompts = [chat_prompt(tokenizer, c) for c in conversations]
    caps = (
        [max_new_tokens] * len(prompts)
        if isinstance(max_new_tokens, int)
        else [int(c) for c in max_new_tokens]
    )
    answers: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    for batch in tqdm(length_batches(tokenizer, prompts, batch_size), desc="generate"):
        ids, mask, _, torch = left_padded(tokenizer, [prompts[i] for i in batch], device)
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max(caps[i] for i in batch),
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        for row, i in enumerate(batch):
            new = out[row, ids.shape[1] : ids.shape[1] + caps[i]]
            answers[i] = tokenizer.decode(new, skip_special_tokens=True)
    return answers
