"""Run names: one parser for the rules, the report and the trade-off figure."""

from __future__ import annotations

import pytest

from loki_pipeline.errors import LokiInputError
from loki_pipeline.runs import BASE, parse_run, suppress_run, trained_run

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
