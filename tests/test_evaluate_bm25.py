"""BM25 candidates (BEIR's reranking protocol) against a plain-Python Okapi BM25 oracle."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from collections import Counter

import pytest

from loki_pipeline.errors import LokiInputError
from loki_pipeline.evaluate.bm25 import bm25_ranking, bm25_top_k
from loki_pipeline.evaluate.reranker import BeirSettings, load_beir
from loki_pipeline.tasks.driver import evaluate_task, prepare_task

K1, B = 0.9, 0.4
#: Lucene's default English stop set (EnglishAnalyzer.ENGLISH_STOP_WORDS_SET), written out here.
LUCENE_STOPWORDS = {
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
}  # fmt: skip


def oracle_tokens(text: str, stopwords: bool) -> list[str]:
    """Lower-cased runs of two or more word characters, optionally without Lucene's stopwords."""
    words = re.findall(r"\w\w+", text.lower())
    return [w for w in words if not (stopwords and w in LUCENE_STOPWORDS)]


def oracle_bm25(corpus, query: str, *, stopwords: bool) -> dict[str, float]:
    """Okapi BM25, Lucene/Pyserini variant, straight from the formula, for docs sharing a term:
    Σ_t idf(t)·tf·(k1+1) / (tf + k1·(1 - b + b·dl/avgdl)), idf = ln(1 + (N-df+0.5)/(df+0.5))."""
    docs = {d: oracle_tokens(f"{title} {text}", stopwords) for d, (title, text) in corpus.items()}
    n = len(docs)
    avgdl = sum(len(toks) for toks in docs.values()) / n
    df = Counter(t for toks in docs.values() for t in set(toks))
    scores = {}
    for d, toks in docs.items():
        tf = Counter(toks)
        score = 0.0
        for t in oracle_tokens(query, stopwords):  # a repeated query term counts again
            if tf[t]:
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                norm = tf[t] + K1 * (1 - B + B * len(toks) / avgdl)
                score += idf * tf[t] * (K1 + 1) / norm
        if score > 0:
            scores[d] = score
    return scores


def oracle_order(scores: dict[str, float]) -> list[str]:
    return sorted(scores, key=lambda d: (-scores[d], d))


# Ids out of order; d4 and d2 are the same passage (a tie, broken by id); dl varies widely.
CORPUS = {
    "d4": ("Bread", "Knead the dough, then let the dough rest."),
    "d9": ("", "The quick brown fox jumps over the lazy dog in the garden."),
    "d1": ("Baking bread", "Bread dough rises when the yeast ferments the sugar in the flour."),
    "d2": ("Bread", "Knead the dough, then let the dough rest."),
    "d7": ("Gardening", "Water the tomato plants deeply; a tomato plant wilts in hot sun."),
    "d3": ("", "Sourdough starter: flour and water, fed every day until it bubbles."),
    "d8": ("Cycling", "A chain that skips gears is worn or the derailleur needs tuning " * 3),
    "d5": ("", "It is what it is, and that is that."),
    "d6": ("Yeast", "Dry yeast keeps for months; fresh yeast for two weeks in the fridge."),
}
QUERIES = {
    "q1": "How long should bread dough rest?",
    "q2": "tomato plants wilting in the sun",
    "q3": "yeast yeast flour",  # repeated term
    "q4": "why does my bike chain skip gears",
    "q5": "it is that",  # only stopwords: nothing under the stop list, d5 without it
    "q6": "zebra",  # in no passage
}


@pytest.mark.parametrize("stopwords", [None, "en"])
def test_bm25_ranking_matches_the_formula(stopwords):
    got = bm25_ranking(CORPUS, QUERIES, len(CORPUS), stopwords=stopwords)
    assert got.keys() == QUERIES.keys()
    for q, query in QUERIES.items():
        oracle = oracle_bm25(CORPUS, query, stopwords=stopwords is not None)
        want = oracle_order(oracle)
        assert [d for d, _ in got[q]] == want, q
        # bm25s drops Lucene's constant (k1 + 1) factor: the same ranking, scores scaled.
        for d, score in got[q]:
            assert score == pytest.approx(oracle[d] / (K1 + 1), rel=1e-9), (q, d)
        # The ranking is decided by real gaps, not rounding: distinct scores differ clearly.
        values = sorted(set(round(v, 9) for v in oracle.values()))
        assert all(b - a > 1e-6 for a, b in zip(values, values[1:], strict=False))
    assert got["q6"] == []
    if stopwords:
        assert got["q5"] == []
    else:
        assert [d for d, _ in got["q5"]][0] == "d5"


def test_bm25_top_k_cuts_the_ranking_and_breaks_ties_by_id():
    full = oracle_bm25(CORPUS, QUERIES["q1"], stopwords=True)
    assert full["d2"] == full["d4"]  # the duplicated passage: an exact tie
    for k in range(1, len(CORPUS) + 2):
        got = bm25_top_k(CORPUS, QUERIES, k)
        for q, query in QUERIES.items():
            assert got[q] == oracle_order(oracle_bm25(CORPUS, query, stopwords=True))[:k]
    assert bm25_top_k(CORPUS, QUERIES, 2)["q1"] == ["d2", "d4"]
    assert bm25_top_k(CORPUS, QUERIES, 1)["q1"] == ["d2"]


@pytest.mark.parametrize("k", [0, -3, 1.5, True, "10", None])
def test_bm25_rejects_a_bad_k(k):
    with pytest.raises(LokiInputError, match="top-k"):
        bm25_top_k(CORPUS, QUERIES, k)


def test_bm25_on_a_corpus_without_tokens_retrieves_nothing():
    assert bm25_top_k({"d1": ("", "a"), "d2": ("", "!")}, {"q": "a b"}, 5) == {"q": []}
    with pytest.raises(LokiInputError, match="non-empty corpus"):
        bm25_top_k({}, {"q": "bread"}, 5)


def test_load_beir_bm25_candidates_on_the_shipped_set():
    a = load_beir(BeirSettings(candidates="bm25", top_k=5))
    b = load_beir(BeirSettings(candidates="bm25", top_k=5))
    assert a["candidates"] == b["candidates"]
    assert len(a["queries"]) == 32
    assert a["protocol"]["candidates"] == "bm25" and a["protocol"]["top_k"] == 5
    assert (a["protocol"]["k1"], a["protocol"]["b"]) == (K1, B)
    for q, docs in a["candidates"].items():
        want = oracle_order(oracle_bm25(a["corpus"], a["queries"][q], stopwords=True))
        assert docs == want[:5], q  # at most top_k: only passages sharing a term are retrieved
    one = load_beir(BeirSettings(candidates="bm25", top_k=1))["candidates"]
    assert all(len(docs) == 1 for docs in one.values())
    # Lexically obvious queries: the relevant passage is BM25's first candidate.
    for q, d in [("q02", "d02"), ("q10", "d10"), ("q13", "d13"), ("q30", "d30")]:
        assert a["candidates"][q][0] == d
    # Positives are not added: "rust ... pans" never matches "rusty ... pan" without a stemmer.
    assert a["qrels"]["q05"] == {"d05": 1}
    assert "d05" not in load_beir(BeirSettings(candidates="bm25"))["candidates"]["q05"]
    assert len(load_beir(BeirSettings(candidates="bm25", max_queries=3))["queries"]) == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"candidates": "BM25"}, "candidates 'BM25'"),
        ({"candidates": "dense"}, "expected one of"),
        ({"candidates": "bm25", "top_k": 0}, "top_k"),
        ({"candidates": "bm25", "top_k": 2.0}, "top_k"),
        ({"top_k": True}, "top_k"),
    ],
)
def test_load_beir_rejects_bad_candidate_settings_before_reading(tmp_path, kwargs, match):
    settings = BeirSettings(source=str(tmp_path / "nowhere"), **kwargs)
    with pytest.raises(LokiInputError, match=match):
        load_beir(settings)  # the settings fail, not the folder


def test_prepare_task_records_the_protocol_in_its_settings(tmp_path):
    default = prepare_task("reranker", BeirSettings(), tmp_path)
    assert default["settings"].candidates == "random"
    assert default["settings"].top_k == 100
    assert default["data"]["protocol"] == {
        "candidates": "random",
        "negatives_per_query": 9,
        "seed": 0,
    }
    bm25 = prepare_task("reranker", BeirSettings(candidates="bm25", top_k=3), tmp_path)
    assert (bm25["settings"].candidates, bm25["settings"].top_k) == ("bm25", 3)
    assert bm25["data"]["protocol"]["candidates"] == "bm25"
    assert all(len(docs) <= 3 for docs in bm25["data"]["candidates"].values())


def test_reranker_summary_on_bm25_candidates(tiny_tokenizer, tmp_path):
    from conftest import build_tiny_model

    settings = BeirSettings(candidates="bm25", top_k=2, max_queries=6)
    prepared = prepare_task("reranker", settings, tmp_path)
    data = prepared["data"]
    data["candidates"]["q05"] = []  # as if BM25 had retrieved nothing for it
    summary = evaluate_task(build_tiny_model("llama"), tiny_tokenizer, prepared, batch_size=4)
    pairs = sum(len(docs) for docs in data["candidates"].values())
    with_positive = sum(
        any(data["qrels"][q].get(d, 0) > 0 for d in docs) for q, docs in data["candidates"].items()
    )
    assert with_positive == 5  # q00-q04 have theirs; q05 has nothing
    assert summary["counts"] == {"queries": 6, "pairs": pairs, "with_positive": 5}
    assert summary["protocol"]["candidates"] == "bm25" and summary["protocol"]["top_k"] == 2
    assert summary["settings"]["candidates"] == "bm25" and summary["settings"]["top_k"] == 2
    assert len(summary["items"]) == pairs
    # the judgements travel with the summary, so the report can rescore each query (q05 too)
    assert summary["qrels"] == {q: data["qrels"].get(q, {}) for q in data["candidates"]}
    assert set(summary["qrels"]) == {f"q{i:02d}" for i in range(6)}
    # @1 hits are possible on at most 5 of the 6 queries
    assert all(0 <= v <= 5 / 6 + 1e-12 for v in summary["metrics"].values())


def test_bm25s_leaves_numba_for_ranx_to_import():
    """bm25s would import numba first; ranx's pure-Python mode for small runs needs it not to."""
    code = (
        "import sys\n"
        "from loki_pipeline.evaluate.bm25 import bm25_top_k\n"
        "from loki_pipeline.evaluate.reranker import rank_metrics\n"
        "assert bm25_top_k({'d': ('', 'bread dough')}, {'q': 'bread'}, 1) == {'q': ['d']}\n"
        "assert 'numba' not in sys.modules\n"
        "rank_metrics({'q': {'d': 1}}, {'q': {'d': 2.0, 'e': 1.0}})\n"
        "assert sys.modules['numba'].config.DISABLE_JIT\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
