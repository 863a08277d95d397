"""The comparison table (issue 25): each LoKI run against each baseline, paired differences in Avg
forgetting and the primary task score with 95% intervals and a verdict. Checked against a
plain-Python paired bootstrap written from the textbook definition, and on edge cases (a base
score of 0, one item, identical runs)."""

from __future__ import annotations

import csv
import json
import random

import numpy as np
import pytest
from test_report_build import evals, write_general, write_task  # noqa: F401 (a fixture)

from loki_pipeline.report.comparison import (
    A_BETTER,
    B_BETTER,
    COLUMNS,
    NOISE,
    build_comparison,
    comparison_pairs,
    comparison_rows,
    verdict,
)
from loki_pipeline.report.forgetting import ItemScores, forgetting_rows, unstable_benchmarks

A, B = "cities-loki_q10", "cities-lora_r16"  # a task of the user's (sft summaries)


def _items(values):
    values = [float(v) for v in values]
    return ItemScores(len(values), np.array(values), tuple(str(i) for i in range(len(values))))


def _mean(values):
    return sum(values) / len(values)


def oracle(base, a, b, tasks, *, relative, resamples=4000, seed=7):
    """The paired bootstrap by hand: per resample, one list of item indices per benchmark,
    applied to base, a and b; Avg_a − Avg_b; the 2.5% and 97.5% order statistics."""
    rng = random.Random(seed)
    diffs = []
    for _ in range(resamples):
        total_a = total_b = 0.0
        undefined = False
        for t in tasks:
            n = len(base[t])
            idx = [rng.randrange(n) for _ in range(n)]
            s_o = _mean([base[t][i] for i in idx])
            s_a = _mean([a[t][i] for i in idx])
            s_b = _mean([b[t][i] for i in idx])
            if relative:
                if s_o == 0:
                    undefined = True
                    break
                total_a += (s_o - s_a) / s_o
                total_b += (s_o - s_b) / s_o
            else:
                total_a += s_o - s_a
                total_b += s_o - s_b
        if not undefined:
            diffs.append(100 * (total_a - total_b) / len(tasks))
    diffs.sort()
    return diffs[int(0.025 * len(diffs))], diffs[int(0.975 * len(diffs)) - 1]


def sft_summary(em, loss=None):
    """A task-of-the-user's summary (evaluate.sft) with per-row exact match, loss and tokens."""
    loss = loss or [1.0] * len(em)
    items = [
        {"id": f"r{i}", "output": "x" if e else "y", "exact_match": bool(e), "loss": x,
         "tokens": 2}
        for i, (e, x) in enumerate(zip(em, loss, strict=True))
    ]  # fmt: skip
    total = sum(loss) / (2 * len(loss))
    return {"kind": "sft", "primary_metric": "exact_match", "percent": ["exact_match"],
            "lower_is_better": ["loss", "perplexity"], "items": items,
            "metrics": {"exact_match": _mean(em), "loss": total, "perplexity": np.exp(total)}}  # fmt: skip


def _case(base, a, b):
    """Scores and items of base and two runs from per-benchmark 0/1 lists."""
    scores = {n: {t: _mean(v) for t, v in d.items()} for n, d in (("base", base), (A, a), (B, b))}
    items = {n: {t: _items(v) for t, v in d.items()} for n, d in (("base", base), (A, a), (B, b))}
    return scores, items


@pytest.mark.parametrize("metric", ["Avg", "Avg_drop"])
def test_avg_differences_match_a_plain_python_paired_bootstrap(metric):
    r = random.Random(3)
    base = {
        "gsm8k": [r.random() < 0.6 for _ in range(20)],
        "ifeval": [r.random() < 0.5 for _ in range(16)],
    }
    a = {t: [x if r.random() < 0.9 else not x for x in v] for t, v in base.items()}
    b = {t: [x and r.random() < 0.5 for x in v] for t, v in base.items()}
    scores, items = _case(base, a, b)
    em = [1, 0] * 10
    rows = comparison_rows("cities", scores["base"], scores, items,
                           {"base": sft_summary([0] * 20), A: sft_summary(em), B: sft_summary(em)})  # fmt: skip
    row = next(r for r in rows if r["metric"] == metric)
    relative = metric == "Avg"
    base_f = {t: [float(x) for x in v] for t, v in base.items()}
    a_f = {t: [float(x) for x in v] for t, v in a.items()}
    b_f = {t: [float(x) for x in v] for t, v in b.items()}
    lo, hi = oracle(base_f, a_f, b_f, list(base), relative=relative)

    # the point: the formula on the full item sets
    def avg(run):
        terms = [(_mean(base_f[t]) - _mean(run[t])) / (_mean(base_f[t]) if relative else 1)
                 for t in base_f]  # fmt: skip
        return 100 * _mean(terms)

    assert row["delta"] == pytest.approx(avg(a_f) - avg(b_f))
    width = hi - lo
    assert row["lo"] == pytest.approx(lo, abs=0.08 * width)
    assert row["hi"] == pytest.approx(hi, abs=0.08 * width)
    assert row["verdict"] == verdict(lo, hi, lower_is_better=True)


def test_primary_difference_matches_a_plain_python_paired_bootstrap():
    em_a = [1] * 14 + [0] * 6
    em_b = [1] * 6 + [0] * 14
    rows = comparison_rows(
        "cities", {"a": 0.5}, {A: {"a": 0.5}, B: {"a": 0.5}},
        {n: {"a": _items([1, 0] * 5)} for n in ("base", A, B)},
        {"base": sft_summary([0] * 20), A: sft_summary(em_a), B: sft_summary(em_b)},
    )  # fmt: skip
    row = next(r for r in rows if r["metric"] == "exact_match")
    rng = random.Random(11)
    diffs = []
    for _ in range(4000):
        idx = [rng.randrange(20) for _ in range(20)]
        diffs.append(100 * (_mean([em_a[i] for i in idx]) - _mean([em_b[i] for i in idx])))
    diffs.sort()
    lo, hi = diffs[100], diffs[3899]
    assert row["delta"] == pytest.approx(40.0)
    assert row["lo"] == pytest.approx(lo, abs=5.01) and row["hi"] == pytest.approx(hi, abs=5.01)
    assert row["verdict"] == A_BETTER  # 8 of 20 items better for a, none for b


def test_identical_runs_are_within_noise_with_a_zero_width_interval():
    base = {"gsm8k": [1, 0] * 10, "winogrande": [1, 1, 0] * 6}
    same = {"gsm8k": [1, 1, 0, 0] * 5, "winogrande": [1, 0, 0] * 6}
    scores, items = _case(base, same, same)
    em = [1, 0, 1] * 7
    rows = comparison_rows("cities", scores["base"], scores, items,
                           {"base": sft_summary([0] * 21), A: sft_summary(em), B: sft_summary(em)})  # fmt: skip
    assert [r["metric"] for r in rows] == ["Avg", "Avg_drop", "exact_match"]
    for row in rows:
        assert (row["delta"], row["lo"], row["hi"]) == (0.0, 0.0, 0.0)
        assert row["verdict"] == NOISE


def test_a_base_score_of_0_leaves_the_benchmark_out_of_avg_but_not_out_of_the_drop():
    base = {"gsm8k": [0] * 20, "winogrande": [1] * 20}
    a = {"gsm8k": [1] * 10 + [0] * 10, "winogrande": [1] * 20}
    b = {"gsm8k": [0] * 20, "winogrande": [1] * 10 + [0] * 10}
    scores, items = _case(base, a, b)
    assert list(unstable_benchmarks(scores["base"], items["base"], list(base))) == ["gsm8k"]
    em = [1, 0] * 10
    rows = comparison_rows("cities", scores["base"], scores, items,
                           {"base": sft_summary([0] * 20), A: sft_summary(em), B: sft_summary(em)})  # fmt: skip
    by = {r["metric"]: r for r in rows}
    assert by["Avg"]["delta"] == pytest.approx(0 - 50.0)  # winogrande only: 0% vs 50% lost
    assert by["Avg"]["verdict"] == A_BETTER
    # drop in points over both: a (−50 + 0)/2 = −25, b (0 + 50)/2 = 25
    assert by["Avg_drop"]["delta"] == pytest.approx(-50.0) and by["Avg_drop"]["hi"] < 0
    table = forgetting_rows(scores["base"], {A: scores[A], B: scores[B]}, items=items)
    assert table[1]["Avg"] == pytest.approx(0.0) and table[1]["Avg_drop"] == pytest.approx(-25.0)
    assert table[1]["Avg_drop_lo"] < -25 < table[1]["Avg_drop_hi"]


def test_a_base_of_1_in_20_is_unstable_and_4_in_20_is_not():
    # (19/20)^20 = 36% of resamples of base score 0; (16/20)^20 = 1.2%
    base = {"t": 0.05, "u": 0.2}
    items = {"t": _items([1] + [0] * 19), "u": _items([1] * 4 + [0] * 16)}
    assert list(unstable_benchmarks(base, items, ["t", "u"])) == ["t"]


def test_every_benchmark_left_out_gives_no_avg_row_and_one_item_no_interval():
    base = {"gsm8k": [0] * 20}
    scores, items = _case(base, {"gsm8k": [1] * 20}, {"gsm8k": [0] * 20})
    rows = comparison_rows("cities", scores["base"], scores, items,
                           {"base": sft_summary([0]), A: sft_summary([1]), B: sft_summary([0])})  # fmt: skip
    assert [r["metric"] for r in rows] == ["Avg_drop", "exact_match"]
    one = rows[1]
    assert one["delta"] == pytest.approx(100.0) and one["lo"] is None and one["verdict"] == NOISE


def test_verdict_follows_the_side_of_the_interval():
    assert verdict(-3.0, -1.0, lower_is_better=True) == A_BETTER
    assert verdict(1.0, 3.0, lower_is_better=True) == B_BETTER
    assert verdict(1.0, 3.0, lower_is_better=False) == A_BETTER
    assert verdict(-1.0, 3.0, lower_is_better=False) == NOISE
    assert verdict(None, None, lower_is_better=False) == NOISE


def test_pairs_are_loki_runs_against_baselines_only():
    runs = ["base", "toolace-loki_q10", "toolace-loki_global_q10", "toolace-lora_r16",
            "toolace-full", "released-x"]  # fmt: skip
    pairs = comparison_pairs(runs, "toolace")
    assert ("toolace-loki_q10", "toolace-lora_r16") in pairs
    assert ("toolace-loki_q10", "toolace-full") in pairs
    assert all(b in ("toolace-lora_r16", "toolace-full") for _, b in pairs)
    assert all(a.startswith("toolace-loki") for a, _ in pairs)


def test_build_writes_exactly_the_contract_columns_in_every_format(evals, tmp_path):  # noqa: F811
    general, task = evals  # toolace: BFCL task.json
    written = build_comparison("toolace", general, task, tmp_path / "t", caption_model="tiny")
    assert sorted(p.suffix for p in written) == [".csv", ".html", ".md", ".tex"]
    with (tmp_path / "t" / "comparison.csv").open() as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == COLUMNS
        rows = list(reader)
    assert {r["metric"] for r in rows} == {"Avg", "Avg_drop", "overall"}
    by = {r["metric"]: r for r in rows}
    # loki: same general items as base (Avg 0), lora lost half (Avg 50): a forgets less
    assert float(by["Avg"]["delta"]) == pytest.approx(-50.0) and by["Avg"]["verdict"] == A_BETTER
    # loki answers 4 in 5 items right, lora 1 in 4: a is better on the task too
    assert float(by["overall"]["delta"]) > 0 and by["overall"]["verdict"] == A_BETTER
    md = (tmp_path / "t" / "comparison.md").read_text()
    assert "paired bootstrap" in md and "overall n=40" in md


def test_a_task_without_a_pair_gets_an_empty_table_with_a_note(tmp_path):
    folder = tmp_path / "eval"
    run = "toolace-loki_q10"
    general = {"base": write_general(folder / "base", {"gsm8k": [1, 0] * 10}),
               run: write_general(folder / run, {"gsm8k": [1, 0] * 10})}  # fmt: skip
    task = {"base": write_task(folder / "base", lambda c, i: i % 2),
            run: write_task(folder / run, lambda c, i: i % 2)}  # fmt: skip
    build_comparison("toolace", general, task, tmp_path / "t")
    assert (tmp_path / "t" / "comparison.csv").read_text().strip() == ",".join(COLUMNS)
    assert "No comparison" in (tmp_path / "t" / "comparison.md").read_text()
    assert json.loads(json.dumps(COLUMNS))  # the contract is plain strings


def _xlabel(points, intervals, **kw):
    from loki_pipeline.figures.common import plt
    from loki_pipeline.figures.tradeoff import draw_tradeoff

    fig, ax = plt.subplots()
    draw_tradeoff(ax, points, task="toolace", score_label="s", intervals=intervals, **kw)
    label = ax.get_xlabel()
    plt.close(fig)
    return label


def test_tradeoff_caption_promises_only_the_bars_it_draws():
    points = {"base": (0.0, 20.0), "toolace-loki_q10": (5.0, 40.0), "toolace-lora_r16": (9.0, 45.0)}
    both = {"base": (None, (10.0, 30.0)), "toolace-loki_q10": ((1.0, 9.0), (30.0, 50.0)),
            "toolace-lora_r16": ((4.0, 14.0), (35.0, 55.0))}  # fmt: skip
    label = _xlabel(points, both)
    assert "bars: 95% intervals" in label and "no x interval" not in label  # base: Avg 0
    missing = {**both, "toolace-lora_r16": (None, (35.0, 55.0))}
    assert "no x interval: toolace-lora_r16" in _xlabel(points, missing)
    none = {r: (None, None) for r in points}
    label = _xlabel(points, none)
    assert "no 95% intervals" in label and "bars: 95%" not in label


def test_tradeoff_x_axis_is_the_tables_avg_without_the_unstable_benchmark(tmp_path, monkeypatch):
    from loki_pipeline.figures import tradeoff
    from loki_pipeline.report.build import build_tradeoff

    folder = tmp_path / "eval"
    per_run = {
        "base": ({"gsm8k": [1] + [0] * 19, "winogrande": [1, 0] * 10}, lambda c, i: i % 4 == 0),
        "toolace-loki_q10": ({"gsm8k": [0] * 20, "winogrande": [1, 0] * 10}, lambda c, i: i % 2),
        "toolace-lora_r16": ({"gsm8k": [1] * 20, "winogrande": [0] * 20}, lambda c, i: i % 2),
    }
    general = {r: write_general(folder / r, g) for r, (g, _) in per_run.items()}
    task = {r: write_task(folder / r, c) for r, (_, c) in per_run.items()}
    seen = {}
    real = tradeoff.draw_tradeoff

    def spy(ax, points, **kw):
        seen.update(points=dict(points), intervals=kw["intervals"], x_label=kw["x_label"])
        return real(ax, points, **kw)

    monkeypatch.setattr(tradeoff, "draw_tradeoff", spy)
    build_tradeoff("toolace", general, task, tmp_path / "t.png")
    assert seen["x_label"] == "forgetting Avg (%) without GSM8K"
    # WinoGrande only: loki keeps 10/20 (Avg 0), lora loses all (Avg 100)
    assert seen["points"]["toolace-loki_q10"][0] == pytest.approx(0.0)
    assert seen["points"]["toolace-lora_r16"][0] == pytest.approx(100.0)
    assert all(
        seen["intervals"][r][0] is not None for r in ("toolace-loki_q10", "toolace-lora_r16")
    )


def test_forgetting_table_notes_the_benchmark_left_out_and_gives_avg_drop(tmp_path):
    from loki_pipeline.report.build import build_task_tables

    folder = tmp_path / "eval"
    per_run = {
        "base": {"gsm8k": [1] + [0] * 19, "winogrande": [1, 0] * 10},
        "toolace-lora_r16": {"gsm8k": [1] * 3 + [0] * 17, "winogrande": [0] * 20},
    }
    general = {r: write_general(folder / r, g) for r, g in per_run.items()}
    task = {r: write_task(folder / r, lambda c, i: i % 2) for r in per_run}
    build_task_tables("toolace", general, task, {}, tmp_path / "t")
    rows = list(csv.DictReader((tmp_path / "t" / "forgetting.csv").open()))
    lora = rows[1]
    assert float(lora["Avg"]) == pytest.approx(100.0)  # WinoGrande only: all lost
    assert lora["Avg_n"] == "20"
    # in points over both: ((5 − 15) + (50 − 0)) / 2 = 20
    assert float(lora["Avg drop (points)"]) == pytest.approx(20.0)
    assert lora["Avg drop (points)_lo"] and lora["Avg drop (points)_n"] == "40"
    md = (tmp_path / "t" / "forgetting.md").read_text()
    assert "Left out of the relative Avg" in md and "GSM8K: base scored 1 of 20" in md
    assert "35.8% of resamples score 0" in md  # (19/20)^20
