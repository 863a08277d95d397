"""The LoKI paper's forgetting formula on the paper's own Table 2 and Table 4 numbers.

The scores are written as lm-eval results files (the shape lm-eval writes: ``results`` ->
task -> ``"metric,filter"``, with stderr keys and aliases beside them) and read back through the
same loader the pipeline and ``loki forgetting`` use.
"""

from __future__ import annotations

import csv
import json

import pytest

from loki_pipeline.cli import main
from loki_pipeline.errors import LokiInputError
from loki_pipeline.report.forgetting import (
    DEFAULT_METRICS,
    forgetting_avg,
    load_scores,
)

TASKS = ["triviaqa", "gsm8k", "hellaswag", "winogrande", "humaneval", "ifeval"]

# Table 2 (ToolACE, Llama-3.1-8B-Instruct): six scores (%) and the Avg the paper prints.
TABLE2_BASE = [65.77, 84.46, 73.85, 62.98, 68.29, 79.76]
TABLE2 = {
    "lora_r16": ([64.63, 79.53, 46.81, 42.78, 60.37, 72.76], 16.11),
    "dora_r16": ([63.97, 82.64, 70.78, 57.85, 65.24, 73.47], 4.92),
    "pissa_r16": ([52.50, 51.40, 37.98, 13.18, 15.85, 55.95], 48.93),
    "loki_q10": ([65.85, 84.99, 75.14, 61.33, 68.90, 77.54], 0.34),
    # The paper prints 0.93 for q=20 and 1.23 for q=30: the two values are swapped (the LoKI paper);
    # the formula on the printed scores gives 1.23 and 0.93, which is what is asserted here.
    "loki_q20": ([65.60, 84.31, 73.60, 60.62, 67.68, 78.18], 1.23),
    "loki_q30": ([65.49, 84.61, 71.16, 61.09, 70.73, 77.94], 0.93),
    "loki_lora_q30_r32": ([64.30, 83.47, 70.78, 62.51, 70.12, 78.21], 1.26),
}
# Table 4 (LB Reranker, Qwen2.5-0.5B-Instruct): the LoKI paper gives the untuned row and each Avg.
TABLE4_BASE = [24.37, 39.65, 30.98, 44.20, 26.83, 33.39]
TABLE4_AVG = {
    "full": 84.13, "dora_r8": 12.23, "pissa_r8": 48.95, "corda_r8": 84.22,
    "loki_q5": 6.12, "loki_q10": 8.86, "loki_q20": 1.70, "loki_q30": 0.46,
}  # fmt: skip


def lm_eval_results(percent: list[float]) -> dict:
    """An lm-eval results file holding these scores (given in %) under the default metrics."""
    results = {}
    for task, value in zip(TASKS, percent, strict=True):
        metric, _, flt = DEFAULT_METRICS[task].partition(",")
        results[task] = {
            "alias": task,
            f"{metric},{flt}": value / 100,
            f"{metric}_stderr,{flt}": 0.01,
            "other_metric,none": 0.123,
        }
    return {
        "results": results,
        "versions": {t: 1.0 for t in TASKS},
        "n-shot": {t: 0 for t in TASKS},
        "config": {"model": "hf", "model_args": "pretrained=x"},
    }


@pytest.fixture
def table2_files(tmp_path):
    paths = {"base": tmp_path / "base.json"}
    paths["base"].write_text(json.dumps(lm_eval_results(TABLE2_BASE)))
    for name, (scores, _) in TABLE2.items():
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(lm_eval_results(scores)))
    return paths


@pytest.mark.parametrize("name", list(TABLE2))
def test_avg_matches_paper_table2(table2_files, name):
    base = load_scores(table2_files["base"])
    tuned = load_scores(table2_files[name], tasks=list(base))
    assert list(base) == TASKS
    assert forgetting_avg(base, tuned) == pytest.approx(TABLE2[name][1], abs=0.005)


def test_direct_formula_oracle_on_table2():
    for scores, _ in TABLE2.values():
        oracle = 100 / 6 * sum((o - t) / o for o, t in zip(TABLE2_BASE, scores, strict=True))
        got = forgetting_avg(
            dict(zip(TASKS, TABLE2_BASE, strict=True)), dict(zip(TASKS, scores, strict=True))
        )
        assert got == pytest.approx(oracle, rel=1e-12)


def test_paper_printed_q20_q30_values_are_the_swapped_pair():
    base = dict(zip(TASKS, TABLE2_BASE, strict=True))
    q20 = forgetting_avg(base, dict(zip(TASKS, TABLE2["loki_q20"][0], strict=True)))
    q30 = forgetting_avg(base, dict(zip(TASKS, TABLE2["loki_q30"][0], strict=True)))
    printed = {"loki_q20": 0.93, "loki_q30": 1.23}
    assert round(q20, 2) == printed["loki_q30"] and round(q30, 2) == printed["loki_q20"]


@pytest.mark.parametrize("name", list(TABLE4_AVG))
def test_table4_base_row_and_avg_scale(tmp_path, name):
    # The LoKI paper gives only Table 4's untuned scores and each run's Avg, not the tuned scores.
    # What can be checked: the base row reads back, and a run that loses exactly Avg% on every
    # benchmark gets that Avg from the formula (the formula's scale and sign).
    avg = TABLE4_AVG[name]
    (tmp_path / "base.json").write_text(json.dumps(lm_eval_results(TABLE4_BASE)))
    tuned = [s * (1 - avg / 100) for s in TABLE4_BASE]
    (tmp_path / "run.json").write_text(json.dumps(lm_eval_results(tuned)))
    base = load_scores(tmp_path / "base.json")
    assert [round(100 * base[t], 2) for t in TASKS] == TABLE4_BASE
    assert forgetting_avg(base, load_scores(tmp_path / "run.json")) == pytest.approx(avg)


def test_improvement_gives_negative_avg():
    assert forgetting_avg({"a": 0.5}, {"a": 0.6}) == pytest.approx(-20.0)


def test_base_score_of_zero_is_a_clear_error():
    with pytest.raises(LokiInputError, match="base score of 'gsm8k' is 0"):
        forgetting_avg({"gsm8k": 0.0, "ifeval": 0.3}, {"gsm8k": 0.1, "ifeval": 0.3})


def test_missing_task_or_metric_is_a_clear_error(tmp_path):
    obj = lm_eval_results(TABLE2_BASE)
    del obj["results"]["ifeval"]
    (tmp_path / "no_task.json").write_text(json.dumps(obj))
    with pytest.raises(LokiInputError, match="no task 'ifeval'"):
        load_scores(tmp_path / "no_task.json", tasks=TASKS)
    obj = lm_eval_results(TABLE2_BASE)
    del obj["results"]["gsm8k"]["exact_match,flexible-extract"]
    (tmp_path / "no_metric.json").write_text(json.dumps(obj))
    with pytest.raises(LokiInputError, match="no metric 'exact_match,flexible-extract'"):
        load_scores(tmp_path / "no_metric.json")
    with pytest.raises(LokiInputError, match="has no score for 'x'"):
        forgetting_avg({"a": 0.5}, {"a": 0.4}, tasks=["a", "x"])


def test_general_json_scores_are_read_too(tmp_path):
    path = tmp_path / "general.json"
    path.write_text(json.dumps({"scores": {"gsm8k": 0.25, "winogrande": 0.5}, "metrics": {}}))
    assert load_scores(path) == {"gsm8k": 0.25, "winogrande": 0.5}


def test_cli_writes_table2_with_paper_avgs(table2_files, tmp_path, capsys):
    argv = ["forgetting", "--base", str(table2_files["base"]), "--out", str(tmp_path / "t2")]
    for name in TABLE2:
        argv += ["--run", f"{name}={table2_files[name]}"]
    argv += ["--params", "loki_q10=188000000"]
    assert main(argv) == 0
    rows = list(csv.DictReader((tmp_path / "t2.csv").read_text().splitlines()))
    assert [r["run"] for r in rows] == ["base", *TABLE2]
    for row in rows[1:]:
        assert float(row["Avg"]) == pytest.approx(TABLE2[row["run"]][1], abs=0.005)
    assert rows[4]["#params"] == "188000000"
    assert float(rows[0]["TriviaQA"]) == pytest.approx(65.77)
    md = (tmp_path / "t2.md").read_text()
    assert "| loki_q10 | 188,000,000 | 65.85 |" in md and "| 0.34 |" in md
    assert r"\toprule" in (tmp_path / "t2.tex").read_text()


def test_cli_bad_input_exits_with_message(tmp_path, capsys):
    assert main(["forgetting", "--base", str(tmp_path / "nope.json"), "--run", "a=b",
                 "--out", str(tmp_path / "x")]) == 2  # fmt: skip
    assert "no such results file" in capsys.readouterr().err
    assert main(["forgetting", "--base", "x", "--run", "broken", "--out", "y"]) == 2


def test_cli_reads_lm_eval_samples_beside_dated_results_for_n_and_intervals(tmp_path):
    # lm-eval's own output names: results_<date>.json with samples_<task>_<date>.jsonl beside it
    paths = {}
    for name, hits in (("base", 10), ("run", 5)):
        folder = tmp_path / name
        folder.mkdir()
        values = [1.0] * hits + [0.0] * (20 - hits)
        obj = {"results": {"winogrande": {"acc,none": hits / 20}}}
        paths[name] = folder / "results_2026-01-01T00-00-00.json"
        paths[name].write_text(json.dumps(obj))
        lines = [
            json.dumps({"doc_id": i, "filter": "none", "acc": v}) for i, v in enumerate(values)
        ]
        sample = folder / "samples_winogrande_2026-01-01T00-00-00.jsonl"
        sample.write_text("\n".join(lines) + "\n")
    out = tmp_path / "t"
    argv = ["forgetting", "--base", str(paths["base"]), "--run", f"run={paths['run']}"]
    assert main([*argv, "--out", str(out)]) == 0
    rows = list(csv.DictReader((tmp_path / "t.csv").read_text().splitlines()))
    assert rows[1]["WinoGrande_n"] == "20" and float(rows[1]["Avg"]) == pytest.approx(50.0)
    assert float(rows[1]["Avg_lo"]) > 0  # five items lost out of ten, paired: beyond noise
    assert float(rows[0]["WinoGrande_lo"]) == pytest.approx(29.93, abs=0.01)
    assert "WinoGrande (n=20)" in (tmp_path / "t.md").read_text()
