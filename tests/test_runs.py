"""Run names: one parser for the rules, the report and the trade-off figure."""

from __future__ import annotations

import pytest

from loki_pipeline.errors import LokiInputError
from loki_pipeline.runs import (
    BASE,
    check_external_runs,
    external_runs,
    parse_run,
    suppress_run,
    table_reference,
    table_runs,
    table_tasks,
    trained_run,
)

TASKS = ["toolace", "reranker"]


def test_each_kind_parses_to_its_parts():
    assert parse_run(BASE, TASKS).kind == "base"
    run = parse_run("toolace-loki_lora_q30_r32", TASKS)
    assert (run.kind, run.task, run.method.name, run.method.rank) == (
        "trained", "toolace", "loki_lora_q30_r32", 32,
    )  # fmt: skip
    run = parse_run("suppress-layer_balanced_high_q1", TASKS)
    assert (run.kind, run.strategy, run.q) == ("suppress", "layer_balanced_high", 1.0)
    assert parse_run("Llama-3.1-8B-LoKI", TASKS).kind == "external"


@pytest.mark.parametrize(
    "name",
    [
        "toolace-lokii_q10",  # not a method
        "other-loki_q10",  # not a known task
        "suppress-global_mid_q1",  # not a strategy
        "suppress-layer_balanced_low_q1.0",  # not q as file names write it
        "suppress-layer_balanced_low_q100",  # q outside (0, 100)
        "toolace",
    ],
)
def test_a_name_of_no_kind_is_an_external_run(name):
    run = parse_run(name, TASKS)
    assert run.kind == "external" and run.label == name and run.method is None


def test_a_task_name_with_a_hyphen_is_resolved_by_the_known_tasks():
    tasks = ["my", "my-task"]
    run = parse_run("my-task-loki_q10", tasks)
    assert (run.task, run.method.name, run.label) == ("my-task", "loki_q10", "loki_q10")
    assert parse_run("my-loki_q10", tasks).task == "my"
    # the old first-hyphen split read task 'my' and method 'task-loki_q10'
    assert parse_run("my-task-loki_q10", ["other"]).kind == "external"


@pytest.mark.parametrize("q", [1, 2.5, 12.3456789, "10"])
def test_made_names_parse_back(q):
    name = suppress_run("global_low", q)
    run = parse_run(name, TASKS)
    assert run.kind == "suppress" and run.strategy == "global_low" and run.q == float(q)
    run = parse_run(trained_run("reranker", f"loki_q{q}"), TASKS)
    assert run.kind == "trained" and run.task == "reranker" and run.method.q == float(q)
    assert suppress_run("layer_balanced_high", 1) == "suppress-layer_balanced_high_q1"


@pytest.mark.parametrize("name", ["", "../base", "a/b", ".hidden", None])
def test_a_name_that_cannot_be_a_folder_is_refused(name):
    with pytest.raises(LokiInputError, match="run name"):
        parse_run(name, TASKS)


def _config(**extra):
    config = {
        "models": {"m": {"source": "hf:o/m"}},
        "tasks": {"toolace": {}, "reranker": {}},
        "experiments": {"m": {"reranker": ["loki_q10", "full"]}},
    }
    return config | extra


def test_table_rows_are_base_then_training_runs_then_external_runs():
    config = _config(
        external_runs={
            "m": {
                "reranker": {"lb-reranker": "hf:lightblue/x"},
                "toolace": {"ToolACE-8B": "hf:Team-ACE/ToolACE-8B"},
            }
        }
    )
    assert table_runs(config, "m", "reranker") == [
        "base", "reranker-loki_q10", "reranker-full", "lb-reranker"
    ]  # fmt: skip
    assert table_runs(config, "m", "toolace") == ["base", "ToolACE-8B"]
    assert table_tasks(config, "m") == ["reranker", "toolace"]  # a task with external runs only
    assert external_runs(config, "m") == {
        "lb-reranker": "hf:lightblue/x", "ToolACE-8B": "hf:Team-ACE/ToolACE-8B"
    }  # fmt: skip
    # the reranker is relative to its full fine-tune unless a reference is named
    assert table_reference(config, "m", "reranker") == "reranker-full"
    assert table_reference(config, "m", "toolace") is None
    config["tables"] = {"reference": {"reranker": "lb-reranker"}}
    assert table_reference(config, "m", "reranker") == "lb-reranker"
    check_external_runs(config, TASKS)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"external_runs": {"x": {"reranker": {"r": "hf:o/r"}}}}, r"external_runs\.x: model 'x'"),
        ({"external_runs": {"m": {"reranker": {"reranker-full": "hf:o/r"}}}},
         r"external_runs\.m\.reranker\.reranker-full: 'reranker-full' reads as a trained run"),
        ({"external_runs": {"m": {"reranker": {"base": "hf:o/r"}}}}, "reads as a base run"),
        ({"external_runs": {"m": {"reranker": {"r": "hf:o/a"}, "toolace": {"r": "hf:o/b"}}}},
         r"run 'r' already has source 'hf:o/a'"),
        ({"tables": {"reference": {"reranker": "lb"}}},
         r"tables\.reference\.reranker: run 'lb' is not a row of the reranker table of model 'm'"),
    ],
)  # fmt: skip
def test_external_runs_and_table_references_are_checked(extra, message):
    with pytest.raises(LokiInputError, match=message):
        check_external_runs(_config(**extra), TASKS)


def test_validate_config_checks_external_runs():
    from loki_pipeline.config import validate_config

    config = _config(external_runs={"m": {"reranker": {"reranker-full": "hf:o/r"}}})
    config["tasks"] = {"reranker": {}}
    with pytest.raises(LokiInputError, match="reads as a trained run"):
        validate_config(config)


def test_an_analyse_only_model_is_refused_in_experiments():
    from loki_pipeline.config import validate_config

    config = _config()
    config["models"]["m"]["analyse_only"] = True
    with pytest.raises(LokiInputError, match=r"experiments\.m: model 'm' is analyse_only"):
        validate_config(config)
