"""BFCL evaluation end to end on a tiny model, from a wheel-shaped zip (nothing downloaded)."""

from __future__ import annotations

import json
import zipfile

import pytest

from loki_pipeline.cli import main
from loki_pipeline.errors import LokiInputError
from loki_pipeline.evaluate.bfcl_data import bfcl_messages, check_categories
from loki_pipeline.evaluate.bfcl_multi_turn import load_bfcl
from loki_pipeline.evaluate.toolace import bfcl_summary
from loki_pipeline.tasks.driver import run_task_eval
from loki_pipeline.tasks.settings import TaskEvalSettings, benchmark_settings

FN = {
    "name": "get_weather",
    "parameters": {
        "type": "dict",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def fake_wheel(path, n=3, version="v3"):
    """A zip laid out like the bfcl-eval wheel, with project-written items."""
    q = [
        {"id": f"simple_{i}", "question": [[{"role": "user", "content": f"Weather in city {i}?"}]],
         "function": [FN]}
        for i in range(n)
    ]  # fmt: skip
    a = [
        {"id": f"simple_{i}", "ground_truth": [{"get_weather": {"city": [f"c{i}"]}}]}
        for i in range(n)
    ]
    irr = [
        {"id": "irrelevance_0", "question": [[{"role": "user", "content": "Hi"}]], "function": [FN]}
    ]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"bfcl_eval/data/BFCL_{version}_simple.json", "\n".join(map(json.dumps, q)))
        zf.writestr(
            f"bfcl_eval/data/possible_answer/BFCL_{version}_simple.json",
            "\n".join(map(json.dumps, a)),
        )
        zf.writestr(f"bfcl_eval/data/BFCL_{version}_irrelevance.json", json.dumps(irr[0]))
        zf.writestr("bfcl_eval/__init__.py", "raise ImportError('never imported')")
    return path


def test_loader_reads_items_with_old_category_names_and_limits(tmp_path):
    wheel = fake_wheel(tmp_path / "w.whl")
    items = load_bfcl(wheel, ["simple_python", "irrelevance"], max_per_category=2)
    assert [i["id"] for i in items] == ["simple_0", "simple_1", "irrelevance_0"]
    assert items[0]["ground_truth"] == [{"get_weather": {"city": ["c0"]}}]
    assert items[2]["ground_truth"] is None
    assert items[0]["messages"] == [{"role": "user", "content": "Weather in city 0?"}]


def test_unsupported_or_missing_categories_are_clear_errors(tmp_path):
    with pytest.raises(LokiInputError, match="web_search"):
        check_categories(["simple_python", "web_search"])
    assert check_categories(["simple_python", "multi_turn_base"])  # run as conversations
    with pytest.raises(LokiInputError, match="no multi-turn category"):
        load_bfcl(fake_wheel(tmp_path / "w0.whl"), ["simple"], multi_turn_ids=["multi_turn_base_1"])
    with pytest.raises(LokiInputError, match="simple_java"):
        check_categories(["simple_java"])
    with pytest.raises(LokiInputError, match="no question file"):
        load_bfcl(fake_wheel(tmp_path / "w.whl"), ["parallel"])
    (tmp_path / "bad.whl").write_text("not a zip")
    with pytest.raises(LokiInputError, match="not a readable"):
        load_bfcl(tmp_path / "bad.whl", ["simple"])


def test_functions_go_into_the_system_prompt():
    item = {"messages": [{"role": "user", "content": "q"}], "function": [FN]}
    msgs = bfcl_messages(item)
    assert msgs[0]["role"] == "system" and '"name": "get_weather"' in msgs[0]["content"]
    item = {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"}],
        "function": [FN],
    }
    merged = bfcl_messages(item)
    assert len(merged) == 2 and merged[0]["content"].endswith("\n\nBe brief.")


def test_summary_groups_non_live_unweighted_and_live_by_items():
    recs = [
        {"category": "simple_python", "correct": True},
        {"category": "multiple", "correct": False},
        {"category": "multiple", "correct": False},
        {"category": "live_simple", "correct": True},
        {"category": "live_simple", "correct": True},
        {"category": "live_multiple", "correct": False},
    ]
    metrics, counts = bfcl_summary(recs)
    assert metrics["non_live"] == pytest.approx(0.5)  # (1 + 0) / 2 categories
    assert metrics["live"] == pytest.approx(2 / 3)  # 2 of 3 live items
    assert metrics["overall"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert counts == {"simple_python": 1, "multiple": 2, "live_simple": 2, "live_multiple": 1}


def test_eval_task_on_tiny_checkpoint_writes_both_tasks(tiny_checkpoint, tmp_path):
    (tmp_path / "cache" / "wheels").mkdir(parents=True)
    fake_wheel(tmp_path / "cache" / "wheels" / "bfcl_eval-9.9.9-py3-none-any.whl")
    out = tmp_path / "task.json"
    eval_configs = {
        "toolace": {
            "bfcl": {
                "version": "9.9.9",
                "categories": ["simple", "irrelevance"],
                "max_new_tokens": 4,
            }
        },
        "reranker": {"beir": {"max_queries": 2, "negatives_per_query": 2}},
    }
    settings = TaskEvalSettings(
        tasks={t: benchmark_settings(t, c) for t, c in eval_configs.items()},
        batch_size=2,
        threads=1,
        device="cpu",
        cache_dir=str(tmp_path / "cache"),
    )
    result = run_task_eval(tiny_checkpoint, out, settings, names={"run": "base"})
    assert json.loads(out.read_text())["tasks"].keys() == {"toolace", "reranker"}
    tool = result["tasks"]["toolace"]
    assert tool["counts"] == {"simple": 3, "irrelevance": 1}
    # A random tiny model writes no valid call: every simple item fails, irrelevance passes.
    assert [r["correct"] for r in tool["items"]] == [False, False, False, True]
    rr = result["tasks"]["reranker"]
    assert rr["counts"] == {"queries": 2, "pairs": 6}
    assert all(0 <= v <= 1 for v in rr["metrics"].values())
    assert all(1 <= it["score"] <= 7 for it in rr["items"])


def test_cli_rejects_a_directory_that_is_not_a_checkpoint(tmp_path, capsys):
    code = main(["eval-task", "--model", str(tmp_path), "--task", "reranker",
                 "--out", str(tmp_path / "t.json")])  # fmt: skip
    assert code == 2 and "not a checkpoint" in capsys.readouterr().err
