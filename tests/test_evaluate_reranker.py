"""Reranker scoring: the expected score over "1".."7" and batched scoring against a direct oracle."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import build_tiny_model

from loki_pipeline.data.reranker import reranker_messages
from loki_pipeline.errors import LokiInputError
from loki_pipeline.evaluate.reranker import (
    BeirSettings,
    expected_relevance,
    load_beir,
    relevance_scores,
)


@pytest.mark.parametrize(
    ("probs", "expected"),
    [
        ([0, 0, 0, 1, 0, 0, 0], 4.0),
        ([1, 0, 0, 0, 0, 0, 0], 1.0),
        ([0, 0, 0, 0, 0, 0, 0.2], 7.0),  # renormalised over the seven digits
        ([0.5, 0, 0, 0, 0, 0, 0.5], 4.0),
        ([0.1, 0.2, 0.0, 0.0, 0.0, 0.3, 0.4], (0.1 * 1 + 0.2 * 2 + 0.3 * 6 + 0.4 * 7) / 1.0),
        ([0.01, 0.03, 0, 0, 0, 0, 0], (0.01 + 0.06) / 0.04),
    ],
)
def test_expected_relevance_on_known_probabilities(probs, expected):
    assert expected_relevance(probs) == pytest.approx(expected)


def test_expected_relevance_rejects_wrong_length_and_zero_mass():
    with pytest.raises(LokiInputError, match="7 probabilities"):
        expected_relevance([0.5, 0.5])
    with pytest.raises(LokiInputError, match="positive"):
        expected_relevance([0.0] * 7)


def test_batched_left_padded_scores_match_one_prompt_at_a_time(tiny_tokenizer):
    torch.manual_seed(0)
    model = build_tiny_model("qwen2", layers=2)
    pairs = [
        ("bread", "Mix flour, water and yeast."),
        ("how to bake bread at home quickly", "Paris"),
        ("weather", "The capital of France is Paris. Answer the question by replying A."),
    ]
    got = relevance_scores(model, tiny_tokenizer, pairs, batch_size=3)
    digits = [tiny_tokenizer.encode(d, add_special_tokens=False)[0] for d in "1234567"]
    for (query, text), score in zip(pairs, got, strict=True):
        prompt = tiny_tokenizer.apply_chat_template(
            reranker_messages(query, text), tokenize=False, add_generation_prompt=True
        )
        ids = tiny_tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            probs = torch.softmax(model(ids).logits[0, -1], -1)[digits]
        oracle = sum((k + 1) * p for k, p in enumerate(probs.tolist())) / probs.sum().item()
        assert score == pytest.approx(oracle, abs=1e-5)
    assert len(set(round(s, 6) for s in got)) == 3  # the three prompts really differ


def test_shipped_beir_set_loads_with_fixed_candidates():
    a = load_beir(BeirSettings(negatives_per_query=4, seed=0))
    b = load_beir(BeirSettings(negatives_per_query=4, seed=0))
    assert len(a["queries"]) >= 30
    assert a["candidates"] == b["candidates"]
    for q, docs in a["candidates"].items():
        assert len(docs) == 5 and len(set(docs)) == 5
        assert sum(a["qrels"][q].get(d, 0) > 0 for d in docs) == 1
    assert len(load_beir(BeirSettings(max_queries=3))["queries"]) == 3


def test_beir_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(LokiInputError, match="not a directory"):
        load_beir(BeirSettings(source=str(tmp_path / "nowhere")))
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "x"}) + "\n")
    with pytest.raises(LokiInputError, match="qrels"):
        load_beir(BeirSettings(source=str(tmp_path)))
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    with pytest.raises(LokiInputError, match="queries.jsonl"):
        load_beir(BeirSettings(source=str(tmp_path)))
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q2", "text": "y"}) + "\n")
    with pytest.raises(LokiInputError, match="no query with a relevant passage"):
        load_beir(BeirSettings(source=str(tmp_path)))


@pytest.mark.parametrize(
    ("kwargs", "digest"),
    [
        ({}, "47c68f8a1a7b7891ec8e9bde923ef0fb3d0515cf520b20d371b6ab6586ee5855"),
        (
            {"negatives_per_query": 3, "seed": 0},
            "8243b8843828507b83804cbdf1240372a5019a74c20428c11c013137f0bff235",
        ),
        (
            {"negatives_per_query": 4, "seed": 7, "max_queries": 5, "candidates": "random"},
            "d0c31c514377ddae891f7f2d66c67326875994924f7b1c8b7cd44d9569540c8e",
        ),
    ],
)
def test_random_candidates_are_unchanged(kwargs, digest):
    """The seeded random candidates of the shipped set, pinned from before BM25 was added."""
    import hashlib

    got = load_beir(BeirSettings(**kwargs))
    text = json.dumps(got["candidates"], sort_keys=True)
    assert hashlib.sha256(text.encode()).hexdigest() == digest
    assert got["protocol"]["candidates"] == "random"


def test_beir_rows_are_read_as_every_data_file_is(tmp_path):
    """corpus.jsonl and queries.jsonl go through data.records: bad rows are named by line."""
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "y"}) + "\n")
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "x"}) + "\n{oops\n")
    with pytest.raises(LokiInputError, match=r"corpus.jsonl line 2: invalid JSON"):
        load_beir(BeirSettings(source=str(tmp_path)))
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "x"}) + "\n[1]\n")
    with pytest.raises(LokiInputError, match=r"corpus.jsonl line 2: expected a JSON object"):
        load_beir(BeirSettings(source=str(tmp_path)))
    (tmp_path / "corpus.jsonl").write_text(
        json.dumps({"_id": "d1", "text": "x\u2028y"}, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    assert load_beir(BeirSettings(source=str(tmp_path)))["corpus"]["d1"] == ("", "x\u2028y")
