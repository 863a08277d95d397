"""Task data: chat tokenization (assistant-only labels), truncation, packing, collation.

Oracles: the rendered chat template itself (input ids must be exactly what the template gives)
and the assistant contents (the trained tokens must decode to exactly them plus end-of-turn).
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from conftest import CHATML_TEMPLATE, build_tiny_model, build_tiny_tokenizer

from loki_pipeline.data import chat
from loki_pipeline.data.chat import IGNORE_INDEX, tokenize_conversation
from loki_pipeline.data.sft import SFTCollator, pack_examples
from loki_pipeline.errors import LokiInputError
from loki_pipeline.models.loading import context_length
from loki_pipeline.tasks.registry import task_examples

# SmolLM2-135M-Instruct's template (public tokenizer_config.json): ChatML with a default system
# prompt when the conversation has none.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Llama-3 layout: header tokens around the role, <|eot_id|> closing every turn, tool -> ipython.
LLAMA3_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}{% for message in messages %}"
    "{% set role = 'ipython' if message['role'] == 'tool' else message['role'] %}"
    "{{ '<|start_header_id|>' + role + '<|end_header_id|>\n\n' + message['content'] | trim "
    "+ '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)
# ChatML whose assistant turns are marked with {% generation %} (transformers' own mask).
GENERATION_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}"
    "{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Qwen3-like: the final assistant turn gets an empty think block that earlier turns do not,
# so prefixes of the conversation are not prefixes of its rendering.
NOT_PREFIX_STABLE_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' and loop.last %}{{ '<think></think>' }}{% endif %}"
    "{{ message['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TOOL_DIALOGUE = [
    {"role": "system", "content": 'Functions: [{"name": "get_weather"}]'},
    {"role": "user", "content": "Weather in Paris and Oslo?"},
    {"role": "assistant", "content": '[get_weather(city="Paris"), get_weather(city="Oslo")]'},
    {"role": "tool", "content": '[{"name": "get_weather", "results": {"t": 12}}]'},
    {"role": "assistant", "content": "It is 12°C in Paris and 3°C in Oslo."},
]


def _tokenizer(template: str, extra_special: list[str] | None = None):
    tok = build_tiny_tokenizer()
    if extra_special:
        tok.add_special_tokens({"additional_special_tokens": extra_special})
    tok.chat_template = template
    return tok


def _trained_text(tok, example) -> str:
    return tok.decode([t for t in example["labels"] if t != IGNORE_INDEX])


def _trained_runs(labels: list[int]) -> int:
    """Number of maximal runs of trained (non -100) positions."""
    return sum(
        1
        for i, t in enumerate(labels)
        if t != IGNORE_INDEX and (i == 0 or labels[i - 1] == IGNORE_INDEX)
    )


def _assistant_contents(messages, end: str) -> str:
    return "".join(m["content"] + end for m in messages if m["role"] == "assistant")


@pytest.mark.parametrize(
    ("template", "end", "special"),
    [
        (CHATML_TEMPLATE, "<|im_end|>", None),
        (SMOLLM2_TEMPLATE, "<|im_end|>", None),
        (
            LLAMA3_TEMPLATE,
            "<|eot_id|>",
            ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        ),
        (GENERATION_TEMPLATE, "<|im_end|>", None),
    ],
    ids=["chatml", "smollm2", "llama3", "generation_tag"],
)
@pytest.mark.parametrize("with_system", [True, False])
def test_labels_are_exactly_assistant_contents_plus_end_of_turn(
    template, end, special, with_system
):
    tok = _tokenizer(template, special)
    messages = TOOL_DIALOGUE if with_system else TOOL_DIALOGUE[1:]
    ex = tokenize_conversation(tok, messages, cutoff_len=4096)
    assert _trained_text(tok, ex) == _assistant_contents(messages, end)
    assert _trained_runs(ex["labels"]) == 2  # one contiguous span per assistant turn
    # what the model sees is exactly the template's rendering, and labels copy it where trained
    assert ex["input_ids"] == tok.apply_chat_template(messages, tokenize=True, return_dict=False)
    assert all(
        lab in (IGNORE_INDEX, tid) for lab, tid in zip(ex["labels"], ex["input_ids"], strict=True)
    )


def test_generation_tag_mask_agrees_with_prefix_rendering():
    plain = tokenize_conversation(_tokenizer(CHATML_TEMPLATE), TOOL_DIALOGUE, cutoff_len=4096)
    tagged = tokenize_conversation(_tokenizer(GENERATION_TEMPLATE), TOOL_DIALOGUE, cutoff_len=4096)
    assert plain == tagged


def test_template_that_rewrites_earlier_turns_still_trains_every_assistant_turn(
    caplog, monkeypatch
):
    monkeypatch.setattr(chat, "_warned_fallback", False)
    tok = _tokenizer(NOT_PREFIX_STABLE_TEMPLATE)
    with caplog.at_level(logging.WARNING):
        ex = tokenize_conversation(tok, TOOL_DIALOGUE, cutoff_len=4096)
    first, last = TOOL_DIALOGUE[2]["content"], TOOL_DIALOGUE[4]["content"]
    # the final turn's think block is what the template emits for it, so it is trained too
    assert _trained_text(tok, ex) == f"{first}<|im_end|><think></think>{last}<|im_end|>"
    assert ex["input_ids"] == tok.apply_chat_template(
        TOOL_DIALOGUE, tokenize=True, return_dict=False
    )
    assert "not prefix-stable" in caplog.text


def test_truncation_keeps_the_beginning_and_warns(caplog):
    tok = _tokenizer(CHATML_TEMPLATE)
    full = tokenize_conversation(tok, TOOL_DIALOGUE, cutoff_len=4096)
    cut = len(full["input_ids"]) - 10
    with caplog.at_level(logging.WARNING):
        ex = tokenize_conversation(tok, TOOL_DIALOGUE, cutoff_len=cut)
    assert ex["input_ids"] == full["input_ids"][:cut]
    assert ex["labels"] == full["labels"][:cut]
    assert "truncated" in caplog.text


def test_dataset_counts_truncations_in_one_warning(caplog, tiny_tokenizer):
    with caplog.at_level(logging.WARNING):
        examples = task_examples("reranker", None, tiny_tokenizer, cutoff_len=287, max_samples=40)
    assert all(len(e["input_ids"]) <= 287 for e in examples)
    warnings = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert len(warnings) == 1 and "of 40 examples truncated to 287 tokens" in warnings[0]


def test_cutoff_beyond_the_models_context_is_capped_with_a_warning(caplog, tiny_tokenizer):
    with caplog.at_level(logging.WARNING):
        examples = task_examples(
            "reranker", None, tiny_tokenizer, cutoff_len=4096, max_samples=40, max_context=287
        )
    assert examples and max(len(e["input_ids"]) for e in examples) <= 287
    assert "longer than the model's context of 287 tokens" in caplog.text
    assert "examples truncated to 287 tokens" in caplog.text


@pytest.mark.parametrize(
    "config,expected",
    [
        ({"max_position_embeddings": 8192}, 8192),
        ({"text_config": {"max_position_embeddings": 4096}, "max_position_embeddings": 9}, 4096),
        ({"n_positions": 1024}, 1024),
        ({"hidden_size": 32}, None),
    ],
)
def test_context_length_reads_the_language_models_config(config, expected):
    assert context_length(config) == expected


def test_cutoff_that_leaves_no_assistant_token_is_an_error_not_a_silent_drop(tiny_tokenizer):
    # the reranker's answer comes after the system prompt and the passage: a tiny cutoff cuts
    # every answer off, which must stop the run instead of training on nothing
    with pytest.raises(LokiInputError, match="raise cutoff_len"):
        task_examples("reranker", None, tiny_tokenizer, cutoff_len=32, max_samples=20)


def test_packing_concatenates_whole_examples_in_order_up_to_cutoff(tiny_tokenizer):
    examples = task_examples("reranker", None, tiny_tokenizer, cutoff_len=1024, max_samples=30)
    packs = task_examples(
        "reranker", None, tiny_tokenizer, cutoff_len=1024, max_samples=30, packing=True
    )
    lengths = [len(e["input_ids"]) for e in examples]
    assert len(packs) < len(examples)
    assert all(len(p["input_ids"]) <= 1024 for p in packs)
    # nothing lost or reordered
    assert sum((p["input_ids"] for p in packs), []) == sum((e["input_ids"] for e in examples), [])
    assert sum((p["labels"] for p in packs), []) == sum((e["labels"] for e in examples), [])
    # greedy and never splitting an example: each pack is a run of whole examples, and the next
    # example would not have fitted
    i = 0
    for p in packs:
        n = 0
        while i < len(lengths) and n + lengths[i] <= len(p["input_ids"]):
            n += lengths[i]
            i += 1
        assert n == len(p["input_ids"])
        if i < len(lengths):
            assert n + lengths[i] > 1024


def test_pack_examples_rejects_an_example_longer_than_cutoff():
    with pytest.raises(LokiInputError):
        pack_examples([{"input_ids": [1] * 9, "labels": [1] * 9}], cutoff_len=8)


def test_collator_pads_ids_with_pad_id_and_labels_with_ignore_index():
    features = [
        {"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
        {"input_ids": [8], "labels": [8]},
    ]
    batch = SFTCollator(pad_token_id=0, pad_to_multiple_of=4)(copy.deepcopy(features))
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100], [8, -100, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]


def test_model_loss_on_a_batch_is_cross_entropy_over_assistant_tokens_only(tiny_tokenizer):
    examples = task_examples("reranker", None, tiny_tokenizer, cutoff_len=1024, max_samples=2)
    batch = SFTCollator(tiny_tokenizer.pad_token_id)(examples)
    model = build_tiny_model("llama")
    with torch.no_grad():
        out = model(**batch)
    # oracle: next-token cross-entropy averaged over positions whose target is an assistant token
    logits, labels = out.logits[:, :-1], batch["labels"][:, 1:]
    keep = labels != IGNORE_INDEX
    expected = torch.nn.functional.cross_entropy(logits[keep], labels[keep])
    torch.testing.assert_close(out.loss, expected)
