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
    from loki_pipeline.data.chat_render import render_chat

    return render_chat(tokenizer, messages, tokenize=False, add_generation_prompt=True)


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


class PrefixCachedChat:
    """Greedy answers to one growing chat, reusing the keys and values of its shared prefix.

    A BFCL multi-turn conversation re-sends its whole history at every step: the same system
    prompt with the API docs (~5.5k tokens), then every earlier turn. Computed afresh, each
    answer pays for all of it again; here the cache of the previous prompt and answer is cut
    back to the longest token prefix the new prompt shares with it (``DynamicCache.crop``) and
    ``generate`` computes only what follows, so a step costs its new tokens and its answer.
    The result is the same greedy decoding up to float rounding (the cached keys were computed
    in other matrix shapes), as in any prefix-caching server. One chat per instance (batch 1).
    """

    def __init__(self, model: Any, tokenizer: Any, *, max_new_tokens: int) -> None:
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        self._ids: list[int] = []  # the tokens whose keys and values ``_cache`` holds
        self._cache: Any = None
        #: prompt tokens computed and reused so far (for the log and the benchmark)
        self.computed_tokens = self.reused_tokens = 0

    def __call__(self, messages: list[dict[str, str]]) -> str:
        import torch

        from loki_pipeline.models.architecture import cache_kwarg

        prompt = chat_prompt(self.tokenizer, messages)
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        shared = 0
        for cached, new in zip(
            self._ids, ids[:-1], strict=False
        ):  # at least one token left to compute
            if cached != new:
                break
            shared += 1
        cache = None
        if shared:
            cache = self._cache
            # negative: tokens to drop (every transformers version reads it so)
            cache.crop(shared - cache.get_seq_length())
        self.reused_tokens += shared
        self.computed_tokens += len(ids) - shared
        device = next(self.model.parameters()).device
        input_ids = torch.tensor([ids], device=device)
        with torch.no_grad():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                **{cache_kwarg(self.model): cache},
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
                return_dict_in_generate=True,
            )
        sequence = out.sequences[0]
        self._cache = out.cache if hasattr(out, "cache") else out.past_key_values
        self._ids = sequence[: self._cache.get_seq_length()].tolist()
        return self.tokenizer.decode(sequence[len(ids) :], skip_special_tokens=True)
