"""Task tables (relative change vs the full fine-tune), table rendering, and the report build."""

from __future__ import annotations

import csv
import json

import pytest

from loki_pipeline.errors import LokiInputError
from loki_pipeline.report.build import build_suppress_table, build_task_tables, build_tradeoff
from loki_pipeline.report.tables import render_latex, render_markdown, task_rows

RERANK = {
    "base": {"primary_metric": "map@1", "metrics": {"map@1": 0.40, "ndcg@1": 0.50}},
    "reranker-full": {"primary_metric": "map@1", "metrics": {"map@1": 0.80, "ndcg@1": 0.50}},
    "reranker-loki_q10": {"primary_metric": "map@1", "metrics": {"map@1": 0.78, "ndcg@1": 0.55}},
}


def test_reranker_rows_give_change_relative_to_full_fine_tune():
    rows, cols = task_rows("reranker", RERANK, reference="reranker-full")
    by_run = {r["run"]: r for r in rows}
    assert by_run["reranker-loki_q10"]["map@1"] == pytest.approx(78.0)
    assert by_run["reranker-loki_q10"]["delta:map@1"] == pytest.approx(100 * (0.78 - 0.8) / 0.8)
    assert by_run["reranker-loki_q10"]["delta:ndcg@1"] == pytest.approx(10.0)
    assert by_run["base"]["delta:map@1"] == pytest.approx(-50.0)
    assert by_run["reranker-full"]["delta:map@1"] == 0
    assert [c[0] for c in cols][:3] == ["run", "map@1", "ndcg@1"]
    md = render_markdown(rows, cols)
    assert "| reranker-loki_q10 | 78.00 | 55.00 | -2.5 | +10.0 |" in md


def test_missing_metric_or_reference_is_a_clear_error():
    bad = {**RERANK, "x": {"metrics": {"map@1": 0.1}}}
    with pytest.raises(LokiInputError, match="lacks metrics"):
        task_rows("reranker", bad)
    with pytest.raises(LokiInputError, match="reference run"):
        task_rows("reranker", RERANK, reference="reranker-nothing")


def test_latex_escapes_and_shows_missing_values_as_dash():
    tex = render_latex(
        [{"run": "lora_r16", "Avg": None}], [("run", "run", ""), ("Avg", "Avg", ".2f")], "a_b"
    )
    assert r"lora\_r16 & -- \\" in tex and r"\caption{a\_b}" in tex


def _general(path, **scores):
    path.write_text(json.dumps({"scores": scores, "metrics": {}}))
    return path


def test_build_writes_every_table_and_the_figure(tmp_path):
    g = {
        "base": _general(tmp_path / "g0.json", gsm8k=0.5, winogrande=0.4),
        "toolace-loki_q10": _general(tmp_path / "g1.json", gsm8k=0.5, winogrande=0.36),
        "toolace-lora_r16": _general(tmp_path / "g2.json", gsm8k=0.25, winogrande=0.4),
    }
    t = {}
    for name, acc in (("base", 0.1), ("toolace-loki_q10", 0.3), ("toolace-lora_r16", 0.35)):
        t[name] = tmp_path / f"t_{name}.json"
        t[name].write_text(
            json.dumps(
                {"primary_metric": "overall", "metrics": {"overall": acc, "simple_python": acc}}
            )
        )
    p = tmp_path / "params.json"
    p.write_text(json.dumps({"trainable_params": 1234, "total_params": 99999}))
    out = tmp_path / "tables"
    written = build_task_tables("toolace", g, t, {"toolace-loki_q10": p}, out)
    assert sorted(x.name for x in written) == sorted(
        f"{s}.{e}" for s in ("forgetting", "task") for e in ("csv", "md", "tex", "html")
    )
    rows = {r["run"]: r for r in csv.DictReader((out / "forgetting.csv").read_text().splitlines())}
    assert float(rows["toolace-loki_q10"]["Avg"]) == pytest.approx(100 / 2 * (0 + 0.04 / 0.4))
    assert float(rows["toolace-lora_r16"]["Avg"]) == pytest.approx(25.0)
    assert (
        rows["toolace-loki_q10"]["#params"] == "1234" and rows["toolace-lora_r16"]["#params"] == ""
    )
    s = {
        "suppress-layer_balanced_high_q1": _general(tmp_path / "s.json", gsm8k=0.1, winogrande=0.1)
    }
    task_csv = {r["run"]: r for r in csv.DictReader((out / "task.csv").read_text().splitlines())}
    # task.json without per-item records: whether a run learned cannot be told, and says so
    assert task_csv["toolace-loki_q10"]["learned"] == "unknown"
    assert "No per-item scores" in (out / "forgetting.md").read_text()
    fig = build_tradeoff("toolace", g, t, tmp_path / "fig" / "tradeoff.png", suppress_general=s)
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    build_suppress_table({"base": g["base"], **s}, tmp_path / "sup")
    sup = list(csv.DictReader((tmp_path / "sup" / "forgetting.csv").read_text().splitlines()))
    assert float(sup[1]["Avg"]) == pytest.approx(100 / 2 * (0.4 / 0.5 + 0.3 / 0.4))
