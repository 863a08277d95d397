"""Intervals of the report: Wilson against hand-computed values, the bootstrap of Avg on cases
with a known answer, and the per-item scores read from lm-eval's samples (or rebuilt from n)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from loki_pipeline.report.forgetting import (
    ItemScores,
    forgetting_avg_interval,
    forgetting_rows,
    load_item_scores,
)
from loki_pipeline.report.intervals import mean_estimate, wilson


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [
        # z = 1.96: 0/20 -> [0, (z²/n)/(1 + z²/n)] = [0, 0.19208/1.19208]
        (0, 20, 0.0, 0.16113),
        # 10/20 -> 0.5 ± z·sqrt(0.25/20 + z²/1600)/(1 + z²/20) = 0.5 ± 0.20070
        (10, 20, 0.29930, 0.70070),
        (20, 20, 0.83887, 1.0),
        (1, 2, 0.09453, 0.90547),
    ],
)
def test_wilson_matches_hand_computed_values(k, n, lo, hi):
    got = wilson(k, n)
    assert got == pytest.approx((lo, hi), abs=5e-5)


def test_mean_estimate_is_wilson_for_0_1_items_and_bootstrap_otherwise():
    est = mean_estimate(np.array([1.0] * 10 + [0.0] * 10))
    assert (est.value, est.n) == (0.5, 20)
    assert (est.lo, est.hi) == pytest.approx(wilson(10, 20))
    const = mean_estimate(np.full(7, 0.25))  # non-binary, no spread: zero-width interval
    assert (const.lo, const.hi) == pytest.approx((0.25, 0.25))


def _items(values, keys=None):
    values = np.asarray(values, dtype=float)
    keys = tuple(str(i) for i in range(len(values))) if keys is None else tuple(keys)
    return ItemScores(len(values), values, keys)


def test_identical_runs_give_avg_zero_with_zero_width_interval():
    rng = np.random.default_rng(1)
    base = {t: _items(rng.integers(0, 2, 20)) for t in ("gsm8k", "winogrande")}
    base = {t: v if v.values.sum() else _items([1] * 20) for t, v in base.items()}
    lo_hi = forgetting_avg_interval(base, dict(base), list(base))
    assert lo_hi == pytest.approx((0.0, 0.0))
    rows = forgetting_rows(
        {t: float(v.values.mean()) for t, v in base.items()},
        {"same": {t: float(v.values.mean()) for t, v in base.items()}},
        items={"base": base, "same": base},
    )
    assert rows[1]["Avg"] == 0 and (rows[1]["Avg_lo"], rows[1]["Avg_hi"]) == (0.0, 0.0)
    assert rows[1]["Avg_n"] == 40 and rows[0]["gsm8k_n"] == 20


def test_a_known_constant_shift_gives_its_avg_exactly():
    # base scores every item 1, the run every item 0.5 on one benchmark and 1 on the other:
    # every resample has the same relative drops (0.5 and 0), so Avg = 25 with no width.
    base = {"a": _items([1] * 10), "b": _items([1] * 8)}
    run = {"a": _items([0.5] * 10), "b": _items([1] * 8)}
    assert forgetting_avg_interval(base, run, ["a", "b"]) == pytest.approx((25.0, 25.0))


def test_avg_interval_on_a_binomial_run_covers_the_binomial_quantiles():
    # base perfect, run 10/20: Avg = 100·(1 − mean), whose resampled 2.5%/97.5% quantiles are
    # those of Binomial(20, 0.5)/20: 6/20 and 14/20, i.e. Avg in [30, 70].
    base, run = {"a": _items([1] * 20)}, {"a": _items([1, 0] * 10)}
    lo, hi = forgetting_avg_interval(base, run, ["a"])
    assert 25 <= lo <= 35 and 65 <= hi <= 75
    assert forgetting_avg_interval(base, run, ["a"]) == (lo, hi)  # fixed seed: reproducible


def test_paired_resampling_is_narrower_than_unpaired_for_a_small_change():
    values = [1, 0] * 10
    changed = [0, 0] + values[2:]  # one item flipped on the same items
    base = {"a": _items(values)}
    paired = forgetting_avg_interval(base, {"a": _items(changed)}, ["a"])
    other_items = _items(changed, keys=[f"x{i}" for i in range(20)])
    unpaired = forgetting_avg_interval(base, {"a": other_items}, ["a"])
    assert paired[1] - paired[0] < (unpaired[1] - unpaired[0]) / 2
    assert paired[0] >= 0  # the paired drop is never negative: one item only went 1 -> 0


def test_no_items_means_no_interval_and_rows_keep_none():
    assert forgetting_avg_interval({"a": ItemScores(20)}, {"a": ItemScores(20)}, ["a"]) is None
    rows = forgetting_rows({"a": 0.5}, {"r": {"a": 0.4}})
    assert rows[1]["Avg"] == pytest.approx(20.0) and rows[1]["Avg_lo"] is None
    assert rows[1]["a_n"] is None


def _lm_eval_dir(folder, scores, samples=None, n=None):
    folder.mkdir(parents=True, exist_ok=True)
    keys = {"gsm8k": "exact_match,flexible-extract", "winogrande": "acc,none"}
    results = {"results": {t: {keys[t]: v} for t, v in scores.items()}}
    if n is not None:
        results["n-samples"] = {t: {"original": 100, "effective": n} for t in scores}
    (folder / "results.json").write_text(json.dumps(results))
    for task, values in (samples or {}).items():
        metric, _, flt = keys[task].partition(",")
        lines = [
            json.dumps({"doc_id": i, "filter": flt, metric: v, "resps": [["x"]]})
            for i, v in enumerate(values)
        ]
        # a second filter's records (as lm-eval writes for gsm8k) must be ignored
        lines += [json.dumps({"doc_id": i, "filter": "other", metric: 1.0}) for i in range(3)]
        (folder / f"samples_{task}.jsonl").write_text("\n".join(lines) + "\n")
    general = folder.parent / "general.json"
    general.write_text(json.dumps({"scores": scores, "metrics": {}, "lm_eval_results": "gone"}))
    return general


def test_item_scores_from_lm_eval_samples_beside_general_json(tmp_path):
    general = _lm_eval_dir(
        tmp_path / "run" / "lm_eval",
        {"gsm8k": 0.25, "winogrande": 0.5},
        samples={"gsm8k": [1, 0, 0, 0], "winogrande": [True, False]},
    )
    items = load_item_scores(general)
    assert items["gsm8k"].n == 4 and items["gsm8k"].keys == ("0", "1", "2", "3")
    assert list(items["winogrande"].values) == [1.0, 0.0]


def test_item_scores_rebuilt_from_n_samples_without_sample_files(tmp_path):
    general = _lm_eval_dir(tmp_path / "r" / "lm_eval", {"gsm8k": 0.3, "winogrande": 0.5}, n=10)
    items = load_item_scores(general)
    assert items["gsm8k"].n == 10 and items["gsm8k"].values.sum() == 3
    assert items["gsm8k"].keys is None  # cannot be paired by item


def test_samples_that_disagree_with_the_score_keep_only_n(tmp_path, caplog):
    general = _lm_eval_dir(
        tmp_path / "r" / "lm_eval", {"gsm8k": 0.9, "winogrande": 0.5},
        samples={"gsm8k": [1, 0], "winogrande": [1, 0]},
    )  # fmt: skip
    items = load_item_scores(general)
    assert items["gsm8k"].n == 2 and items["gsm8k"].values is None
    assert items["winogrande"].values is not None
    assert "is not the reported" in caplog.text and "not used" in caplog.text
