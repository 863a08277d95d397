"""The non-learning flag and the task intervals, on task.json summaries as ``tasks.driver``
builds them (BFCL records through its own ``bfcl_summary``); the per-query ranking metrics
against ``rank_metrics`` (ranx) once, on graded judgements."""

from __future__ import annotations

import pytest

from loki_pipeline.report.intervals import wilson
from loki_pipeline.report.learning import (
    at_one,
    learning_check,
    reranker_qrels,
    task_estimates,
)
from loki_pipeline.tasks.driver import bfcl_summary

CATEGORIES = ("simple_python", "multiple", "live_simple")


def bfcl(correct_of) -> dict:
    """A BFCL summary with 20 items per category; ``correct_of(category, i)`` judges item i."""
    records = [
        {"id": f"{c}_{i}", "category": c, "output": f"[f(x={int(correct_of(c, i))})]",
         "correct": bool(correct_of(c, i))}
        for c in CATEGORIES
        for i in range(20)
    ]  # fmt: skip
    metrics, counts = bfcl_summary(records)
    return {"primary_metric": "overall", "metrics": metrics, "counts": counts, "items": records}


BASE = bfcl(lambda c, i: i % 4 == 0)  # 5/20 in every category


def test_run_identical_to_base_is_flagged():
    check = learning_check("toolace", BASE, bfcl(lambda c, i: i % 4 == 0))
    assert check.learned is False and check.identical is True
    assert "equal base's on every item" in check.reason


def test_run_that_learned_is_not_flagged():
    check = learning_check("toolace", BASE, bfcl(lambda c, i: i % 4 != 3))  # 15/20
    assert check.learned is True and check.identical is False
    assert check.delta.value == pytest.approx(0.5) and check.delta.lo > 0.3


def test_small_gain_within_noise_is_flagged_with_its_interval():
    run = bfcl(lambda c, i: i % 4 == 0 or (c == "multiple" and i == 1))  # one more item right
    check = learning_check("toolace", BASE, run)
    assert check.learned is False and check.identical is False
    assert check.delta.lo <= 0 < check.delta.value
    assert "not above 0" in check.reason and "paired" in check.reason


def test_without_items_learning_is_unknown_not_silently_yes():
    bare = {k: v for k, v in BASE.items() if k != "items"}
    check = learning_check("toolace", bare, {**bare, "metrics": {"overall": 0.9}})
    assert check.learned is None


def test_bfcl_estimates_wilson_per_category_and_at_effective_n_for_means():
    est = task_estimates("toolace", BASE)
    assert est["multiple"].n == 20
    assert (est["multiple"].lo, est["multiple"].hi) == pytest.approx(wilson(5, 20))
    assert est["live"].n == 20 and est["non_live"].n == 40 and est["overall"].n == 60
    # overall = (mean of two non-live shares + live share) / 2: weights 1/4, 1/4, 1/2, so
    # Var = (2/16 + 1/4)·(0.25·0.75/20) = 0.0035156 and n_eff = 0.1875 / Var = 160/3
    n_eff = 160 / 3
    assert (est["overall"].lo, est["overall"].hi) == pytest.approx(wilson(0.25 * n_eff, n_eff))
    assert task_estimates("toolace", BASE) == est


def test_bfcl_mean_at_zero_keeps_a_width():
    est = task_estimates("toolace", bfcl(lambda c, i: False))["overall"]
    assert est.value == 0 and est.lo == 0 and est.hi == pytest.approx(wilson(0, 60)[1])


def _beir(tmp_path, queries: int = 30):
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\tpos{i}\t1" for i in range(queries)]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return root


def reranker(root, score) -> dict:
    """A reranker summary over 30 queries of 3 candidates, scored by ``score(q, doc)``."""
    items = [
        {"query_id": f"q{i}", "doc_id": d, "score": float(score(i, d))}
        for i in range(30)
        for d in (f"neg{i}a", f"pos{i}", f"neg{i}b")
    ]
    hits = sum(
        score(i, f"pos{i}") > max(score(i, f"neg{i}a"), score(i, f"neg{i}b")) for i in range(30)
    )
    return {
        "primary_metric": "map@1",
        "metrics": {m: hits / 30 for m in ("map@1", "recall@1", "ndcg@1", "precision@1")},
        "counts": {"queries": 30, "pairs": 90},
        "settings": {"source": str(root), "split": "test"},
        "items": items,
    }


def _weak(i, d):  # right on every third query only
    return {"a": 3, "b": 2}.get(d[-1], 4 if i % 3 == 0 else 1)


def test_reranker_same_ranking_is_flagged_and_better_ranking_is_not(tmp_path):
    root = _beir(tmp_path)
    base = reranker(root, _weak)
    qrels = reranker_qrels(base)
    same_order = reranker(root, lambda i, d: 10 * _weak(i, d) + 1)  # other scores, same ranking
    check = learning_check("reranker", base, same_order, qrels=qrels)
    assert check.learned is False and check.identical is True
    good = reranker(root, lambda i, d: 5 if d.startswith("pos") else 1)
    check = learning_check("reranker", base, good, qrels=qrels)
    assert check.learned is True and check.delta.value == pytest.approx(1 - 10 / 30)


def test_reranker_estimates_over_queries(tmp_path):
    base = reranker(_beir(tmp_path), _weak)
    est = task_estimates("reranker", base, qrels=reranker_qrels(base))
    assert est["map@1"].n == 30 and est["map@1"].value == pytest.approx(1 / 3)
    assert (est["map@1"].lo, est["map@1"].hi) == pytest.approx(wilson(10, 30))  # 0/1 per query
    no_qrels = task_estimates("reranker", base, qrels=None)
    assert no_qrels["map@1"].n == 30 and no_qrels["map@1"].lo is None
    # two relevant passages per query: MAP@1 is 0.5 on a hit, so the queries are bootstrapped
    two = {q: {**docs, q.replace("q", "neg") + "b": 1} for q, docs in reranker_qrels(base).items()}
    graded = {**base, "metrics": {**base["metrics"], "map@1": 1 / 6, "recall@1": 1 / 6}}
    est = task_estimates("reranker", graded, qrels=two)
    assert est["map@1"].value == pytest.approx(1 / 6)
    assert 0 < est["map@1"].lo < 1 / 6 < est["map@1"].hi < 0.4
    assert (est["precision@1"].lo, est["precision@1"].hi) == pytest.approx(wilson(10, 30))


def test_per_query_metrics_agree_with_ranx_on_graded_judgements():
    from loki_pipeline.tasks.driver import rank_metrics

    qrels = {"a": {"d1": 2, "d2": 1, "d3": 0}, "b": {"d1": 1}, "c": {"d2": 3, "d5": 1}}
    cases = [
        {"d2": 0.9, "d1": 0.5, "d3": 0.1},  # a relevant but not the best at the top
        {"d3": 0.9, "d1": 0.9},  # tie: candidate order decides, a non-relevant one first
        {"d1": 0.2, "d3": 0.9},
        {"d5": 0.7, "d2": 0.3},
        {},
    ]
    for query, judged in qrels.items():
        for docs in cases:
            expected = rank_metrics({query: judged}, {query: docs})
            assert at_one(judged, docs) == pytest.approx(expected), (query, docs)


def test_reranker_judgements_that_do_not_reproduce_the_metrics_are_not_used(tmp_path, caplog):
    root = _beir(tmp_path)
    base = reranker(root, _weak)
    good = reranker(root, lambda i, d: 5 if d.startswith("pos") else 1)
    wrong = {f"q{i}": {f"neg{i}a": 1} for i in range(30)}  # not what the metrics were scored on
    assert learning_check("reranker", base, good, qrels=wrong).learned is None
    assert task_estimates("reranker", base, qrels=wrong)["map@1"].lo is None
    assert "do not reproduce" in caplog.text


def _with_multi_turn(correct_of) -> dict:
    """BFCL V3 groups: 10 items each of simple_python, live_simple, live_relevance,
    multi_turn_base and multi_turn_miss_func; a multi-turn output is answers per turn/step."""
    cats = ("simple_python", "live_simple", "live_relevance", "multi_turn_base",
            "multi_turn_miss_func")  # fmt: skip
    records = [
        {"id": f"{c}_{i}", "category": c, "correct": bool(correct_of(c, i)),
         "output": [["[ls()]", "Done."], [str(correct_of(c, i))]] if "multi" in c else "[f()]"}
        for c in cats
        for i in range(10)
    ]  # fmt: skip
    metrics, counts = bfcl_summary(records)
    return {"primary_metric": "overall", "metrics": metrics, "counts": counts, "items": records}


def test_bfcl_v3_groups_get_intervals_and_the_learned_check():
    base = _with_multi_turn(lambda c, i: i < 2)  # 2/10 everywhere
    est = task_estimates("toolace", base)
    assert est["multi_turn"].n == 20 and est["overall"].n == 50
    assert est["relevance_detection"].n == 10
    assert (est["relevance_detection"].lo, est["relevance_detection"].hi) == pytest.approx(
        wilson(2, 10)
    )
    # live = (2 + 2) / 20 pooled: Wilson over its 20 items
    assert (est["live"].lo, est["live"].hi) == pytest.approx(wilson(4, 20))
    # overall = (simple + live + multi_turn) / 3, weights 1/3, 1/6 + 1/6, 1/6 + 1/6 over five
    # categories of 10 items at p = 0.2: Var = (1/9 + 4/36)·0.016 and n_eff = 0.16 / Var = 45
    assert (est["overall"].lo, est["overall"].hi) == pytest.approx(wilson(0.2 * 45, 45))
    same = learning_check("toolace", base, _with_multi_turn(lambda c, i: i < 2))
    assert same.identical is True and same.learned is False
    better = learning_check("toolace", base, _with_multi_turn(lambda c, i: i < 9))
    assert better.learned is True and better.delta.value == pytest.approx(0.7)
