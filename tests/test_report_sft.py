"""Tables and the trade-off figure of a task of the user's: exact match in percent with Wilson,
loss and perplexity as they are with a bootstrap over rows (checked against a direct loop), and
the learned flag in the right direction (a lower loss is learning)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from test_report_build import write_general

from loki_pipeline.report.build import build_task_tables, build_tradeoff
from loki_pipeline.report.intervals import RESAMPLES, SEED, ratio_estimate, wilson
from loki_pipeline.report.learning import learning_check, task_estimates

GENERAL = ("gsm8k", "winogrande")


def summary(
    em: list[int], loss: list[float], tokens: list[int], outputs=None, primary="exact_match"
):
    items = [
        {"id": str(10 + i), "answer": "a", "output": (outputs or ["x"] * len(em))[i],
         "exact_match": bool(e), "loss": nats, "tokens": t}
        for i, (e, nats, t) in enumerate(zip(em, loss, tokens, strict=True))
    ]  # fmt: skip
    mean_loss = sum(loss) / sum(tokens)
    return {
        "task": "capitals", "benchmark": "held-out", "primary_metric": primary,
        "metrics": {"exact_match": sum(em) / len(em), "loss": mean_loss,
                    "perplexity": math.exp(mean_loss)},
        "counts": {"items": len(em), "tokens": sum(tokens)}, "settings": {}, "items": items,
        "kind": "sft", "percent": ["exact_match"], "lower_is_better": ["loss", "perplexity"],
        "lm_eval_items": {},
    }  # fmt: skip


def test_ratio_interval_is_the_percentile_of_resampled_sums_of_rows():
    rng = np.random.default_rng(7)
    loss, tokens = rng.uniform(0, 20, 25), rng.integers(1, 9, 25).astype(float)
    got = ratio_estimate(loss, tokens)
    draws = np.random.default_rng(SEED).integers(0, 25, size=(RESAMPLES, 25))
    ratios = [loss[row].sum() / tokens[row].sum() for row in draws]  # one resample at a time
    assert got.value == pytest.approx(loss.sum() / tokens.sum()) and got.n == 25
    assert (got.lo, got.hi) == pytest.approx(tuple(np.percentile(ratios, [2.5, 97.5])))


def test_estimates_wilson_for_exact_match_bootstrap_for_loss_and_exp_for_perplexity():
    s = summary(
        [1, 0, 1, 1, 0, 0, 0, 1], [3.0, 9.0, 2.5, 4.0, 8.0, 7.5, 6.0, 1.0], [3, 4, 2, 5, 3, 4, 2, 3]
    )
    est = task_estimates("capitals", s)
    assert (est["exact_match"].lo, est["exact_match"].hi) == pytest.approx(wilson(4, 8))
    assert est["exact_match"].n == 8
    loss = ratio_estimate(np.array([i["loss"] for i in s["items"]]),
                          np.array([i["tokens"] for i in s["items"]]))  # fmt: skip
    assert est["loss"] == loss
    assert est["perplexity"].value == pytest.approx(math.exp(loss.value))
    assert (est["perplexity"].lo, est["perplexity"].hi) == pytest.approx(
        (math.exp(loss.lo), math.exp(loss.hi))
    )


def test_a_lower_loss_is_learning_and_equal_outputs_are_not():
    n = 30
    base = summary([0] * n, [12.0 + i % 3 for i in range(n)], [4] * n, primary="loss")
    better = summary([0] * n, [3.0 + i % 3 for i in range(n)], [4] * n, primary="loss")
    check = learning_check("capitals", base, better)
    assert check.learned is True and check.delta.hi < 0 and "below base" in check.reason
    worse = learning_check("capitals", better, base)
    assert worse.learned is False and "not below 0" in worse.reason
    same = learning_check("capitals", base, json.loads(json.dumps(base)))
    assert same.learned is False and same.identical is True


def test_exact_match_learning_pairs_rows_by_id():
    n = 30
    base = summary([0] * n, [9.0] * n, [3] * n, outputs=["The capital is X."] * n)
    run = summary([1] * 20 + [0] * 10, [2.0] * n, [3] * n, outputs=["a"] * 20 + ["b"] * 10)
    check = learning_check("capitals", base, run)
    assert check.learned is True and check.delta.value == pytest.approx(20 / 30)
    assert check.delta.lo > 0 and "paired" in check.reason
    same = learning_check("capitals", base, json.loads(json.dumps(base)))
    assert same.learned is False and same.identical is True


@pytest.fixture
def evals(tmp_path):
    general, task = {}, {}
    n = 30
    runs = {
        "base": summary([0] * n, [12.0] * n, [4] * n),
        "capitals-loki_q10": summary([1] * 18 + [0] * 12, [4.0] * n, [4] * n, outputs=["a"] * n),
        "capitals-lora_r16": summary([0] * n, [11.0] * n, [4] * n),
    }
    for name, s in runs.items():
        folder = tmp_path / "eval" / name
        general[name] = write_general(folder, {t: [1, 0] * 10 for t in GENERAL})
        (folder / "task.json").write_text(json.dumps({"tasks": {"capitals": s}}))
        task[name] = folder / "task.json"
    return general, task


def test_task_table_shows_exact_match_in_percent_and_loss_as_it_is(evals, tmp_path):
    general, task = evals
    out = tmp_path / "tables"
    build_task_tables("capitals", general, task, {}, out, caption_model="tiny")
    rows = {r["run"]: r for r in csv.DictReader((out / "task.csv").open())}
    loki = rows["capitals-loki_q10"]
    assert float(loki["exact_match"]) == pytest.approx(60.0) and loki["exact_match_n"] == "30"
    assert float(loki["loss"]) == pytest.approx(1.0)  # 4 nats over 4 tokens, not 100
    assert float(loki["perplexity"]) == pytest.approx(math.e)
    assert loki["learned"] == "yes" and rows["capitals-lora_r16"]["learned"] == "no"
    md = (out / "task.md").read_text()
    assert "| capitals-lora_r16 † |" in md
    # the verdict right after the primary metric, then the other metrics
    assert (
        "| run | exact_match (n=30) | Δexact_match vs base (n=30) | learned | loss (n=30) "
        "| perplexity (n=30) |" in md
    )
    assert "1.000 [1.000, 1.000]" in md and "60.0 [" in md
    assert "Scores in percent where they are shares; held-out rows of the task's own" in md
    assert "does not lie above 0" in md


def test_tradeoff_plots_a_loss_primary_as_it_is(evals, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import loki_pipeline.figures.tradeoff as tradeoff

    general, task = evals
    for path in task.values():
        data = json.loads(path.read_text())
        data["tasks"]["capitals"]["primary_metric"] = "loss"
        path.write_text(json.dumps(data))
    seen = {}
    real = tradeoff.plot_tradeoff
    monkeypatch.setattr(tradeoff, "plot_tradeoff", lambda points, out, **kw: seen.update(
        points=points, **kw) or real(points, out, **kw))  # fmt: skip
    assert build_tradeoff("capitals", general, task, tmp_path / "t.png").is_file()
    assert seen["points"]["capitals-loki_q10"][1] == pytest.approx(1.0)
    assert seen["score_label"] == "capitals: loss, lower is better"
    assert "capitals-lora_r16" not in seen["no_learning"]  # 11 < 12 nats on every row: learned
