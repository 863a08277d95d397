"""General-ability evaluation end to end on a tiny checkpoint: all six tasks through lm-eval,
under each protocol (lm-eval's official tasks; OpenCompass's generative configs).

The summary's scores are checked against lm-eval's own per-item sample logs (the mean of each
item's metric), a route through the logged samples that does not read the aggregated table.
"""

from __future__ import annotations

import json

import pytest

from loki_pipeline.evaluate.general import PROTOCOL_METRICS, TASKS, evaluate_general


@pytest.mark.parametrize("protocol", ["lm-eval", "opencompass"])
def test_six_tasks_on_tiny_checkpoint_write_summary_and_lm_eval_output(
    tiny_checkpoint, tmp_path, protocol
):
    metrics = PROTOCOL_METRICS[protocol]
    out = tmp_path / "eval" / "general.json"
    summary = evaluate_general(
        tiny_checkpoint,
        out,
        model="tiny",
        run="base",
        limit=2,
        batch_size=2,
        max_gen_toks=4,
        allow_code_execution=True,
        code_timeout=5,
        protocol=protocol,
    )
    on_disk = json.loads(out.read_text())
    assert on_disk == summary
    assert on_disk["model"] == "tiny" and on_disk["run"] == "base"
    assert set(on_disk["scores"]) == set(TASKS)
    assert on_disk["metrics"] == metrics and on_disk["protocol"] == protocol
    assert any("punkt" in note or "local" in note for note in on_disk["notes"])
    # the result records how HumanEval's model-written code was contained on this machine
    from loki_pipeline.evaluate.code_exec import isolation_mode, isolation_record

    assert on_disk["code_isolation"] == isolation_record()
    assert on_disk["code_isolation"]["mode"] == isolation_mode()
    assert any(f"isolation: {isolation_mode()}" in note for note in on_disk["notes"])

    lm_eval_dir = out.parent / "lm_eval"
    assert on_disk["lm_eval_results"] == str(lm_eval_dir / "results.json")
    raw = json.loads((lm_eval_dir / "results.json").read_text())
    assert set(raw["results"]) == set(TASKS) and "configs" in raw and "n-samples" in raw
    for task, key in metrics.items():
        metric, filt = key.split(",")
        samples = [
            json.loads(line)
            for line in (lm_eval_dir / f"samples_{task}.jsonl").read_text().splitlines()
        ]
        assert len({s["doc_id"] for s in samples}) == 2, task  # one line per doc and filter
        per_item = [s[metric] for s in samples if s["filter"] == filt]
        assert len(per_item) == 2, (task, filt)
        assert on_disk["scores"][task] == sum(map(float, per_item)) / 2, task
        assert raw["results"][task][key] == on_disk["scores"][task]
    # no scratch files left beside the outputs
    assert sorted(p.name for p in out.parent.iterdir()) == ["general.json", "lm_eval"]
