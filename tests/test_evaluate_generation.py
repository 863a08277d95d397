"""Greedy generation for the task evaluators: the prefix-cached chat used by BFCL multi-turn
answers exactly as generating each prompt afresh does."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import build_tiny_model, build_tiny_tokenizer

from loki_pipeline.evaluate import generation
from loki_pipeline.evaluate.generation import PrefixCachedChat, generate_greedy

WHEEL = (
    Path(__file__).resolve().parents[1]
    / "resources/cache/wheels/bfcl_eval-2026.3.23-py3-none-any.whl"
)
NEEDS_WHEEL = (
    "bfcl-eval wheel not in resources/cache (tests never download): "
    "`scripts/setup-test-extras.sh --no-model` (or `pip download bfcl-eval==2026.3.23 --no-deps "
    "-d resources/cache/wheels`)"
)


class FreshChat:
    """The oracle: every prompt computed from scratch (no cache kept between calls)."""

    def __init__(self, model, tokenizer, *, max_new_tokens):
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        self.computed_tokens = self.reused_tokens = 0

    def __call__(self, messages):
        return generate_greedy(
            self.model, self.tokenizer, [messages], max_new_tokens=self.max_new_tokens,
            batch_size=1,
        )[0]  # fmt: skip


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_prefix_cached_chat_answers_as_a_fresh_prompt(arch):
    """A chat grown over five steps (answers, tool results, a new user turn, and one step that
    rewrites history, so the shared prefix shrinks): every answer equals the uncached one, and
    the later steps reuse most of their prompt."""
    model, tok = build_tiny_model(arch, seed=3), build_tiny_tokenizer()
    cached = PrefixCachedChat(model, tok, max_new_tokens=12)
    fresh = FreshChat(model, tok, max_new_tokens=12)
    messages = [
        {"role": "system", "content": "You can call get_weather(city, unit). " * 20},
        {"role": "user", "content": "What is the weather in Paris?"},
    ]
    for step in range(5):
        if step == 3:  # a conversation that changes an earlier turn: the cache is cut back
            messages[1] = {"role": "user", "content": "And in Rome?"}
        answer = cached(messages)
        assert answer == fresh(messages), f"step {step}"
        messages += [
            {"role": "assistant", "content": answer},
            {"role": "tool", "content": f'{{"temperature": {20 + step}}}'},
        ]
    assert cached.reused_tokens > 2 * cached.computed_tokens > 0


@pytest.mark.skipif(not WHEEL.is_file(), reason=NEEDS_WHEEL)
def test_multi_turn_item_with_and_without_the_cache(monkeypatch):
    """A real BFCL multi-turn item through ``toolace.evaluate`` (its API docs cut to three
    functions: the tiny tokenizer spends ~4x SmolLM2's tokens on text): the cached conversation
    gives the same answers and verdict as the uncached one."""
    from loki_pipeline.evaluate import toolace
    from loki_pipeline.evaluate.bfcl_multi_turn import load_bfcl

    items = load_bfcl(WHEEL, ["multi_turn_base"], max_per_category=1,
                      multi_turn_ids=["multi_turn_base_1"])  # fmt: skip
    items[0]["function"] = items[0]["function"][:3]
    model = build_tiny_model(
        "qwen2", layers=2, max_position_embeddings=8192, attn_implementation="sdpa"
    )
    settings = toolace.BfclSettings(max_new_tokens=8)
    with_cache = toolace.evaluate(model, build_tiny_tokenizer(), items, settings)["items"]
    monkeypatch.setattr(generation, "PrefixCachedChat", FreshChat)
    without = toolace.evaluate(model, build_tiny_tokenizer(), items, settings)["items"]
    assert with_cache == without
    assert len(with_cache[0]["output"]) == len(items[0]["turns"]) > 1
