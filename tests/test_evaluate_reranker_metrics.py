"""IR metrics through ranx on a ranking whose MAP@1, Recall@1, NDCG@1 and P@1 are worked by hand."""

from __future__ import annotations

import pytest

from loki_pipeline.evaluate.reranker import rank_metrics


def test_rank_metrics_match_a_hand_computed_ranking():
    qrels = {
        "q1": {"a": 1},  # relevant passage ranked first
        "q2": {"b": 1},  # relevant passage ranked second
        "q3": {"c": 1, "d": 1},  # two relevant, one of them first
    }
    run = {
        "q1": {"a": 6.5, "x": 2.0, "y": 1.0},
        "q2": {"x": 5.0, "b": 4.0},
        "q3": {"c": 3.0, "z": 2.5, "d": 1.0},
    }
    # per query @1: P = 1, 0, 1; Recall = 1, 0, 1/2; AP = 1, 0, (1/1)/2; NDCG = 1, 0, 1
    got = rank_metrics(qrels, run)
    assert got["precision@1"] == pytest.approx(2 / 3)
    assert got["recall@1"] == pytest.approx(1.5 / 3)
    assert got["map@1"] == pytest.approx(1.5 / 3)
    assert got["ndcg@1"] == pytest.approx(2 / 3)


def test_a_query_without_candidates_scores_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 1}}
    run = {"q1": {"a": 2.0, "x": 1.0}, "q2": {"x": 3.0, "b": 1.0}, "q3": {}}
    # per query @1: q1 all 1, q2 all 0, q3 (nothing retrieved) all 0
    got = rank_metrics(qrels, run)
    assert got == pytest.approx({name: 1 / 3 for name in got})
    assert rank_metrics(qrels, {"q3": {}}) == {name: 0.0 for name in got}
