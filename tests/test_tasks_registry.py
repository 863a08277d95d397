"""The task registry: one place that says which tasks exist and what each is; the schema, the
workflow's params and the CLI follow it, and the paper's two tasks read exactly what they did."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from loki_pipeline.cli import main as loki_main
from loki_pipeline.config import validate_config
from loki_pipeline.errors import LokiInputError
from loki_pipeline.evaluate.sft import SftEvalSettings
from loki_pipeline.schemas import load_schema
from loki_pipeline.tasks.registry import (
    GENERIC,
    TASKS,
    eval_config,
    is_generic,
    loader_options,
    task_block,
    task_names,
    task_spec,
    train_data,
)
from loki_pipeline.tasks.settings import TaskEvalSettings, benchmark_settings

ROOT = Path(__file__).resolve().parents[1]


def _config(tasks: dict, **extra) -> dict:
    return validate_config({"models": {"m": {"source": "hf:org/m"}}, "tasks": tasks, **extra})


MINE = {"train": {"source": "data/example_task/train.json", "format": "alpaca"}}


def test_the_schema_gives_the_registrys_paper_tasks_their_schema_and_any_other_the_generic():
    tasks = load_schema()["properties"]["tasks"]
    assert set(tasks["properties"]) == set(TASKS)
    assert all(p == {"$ref": "#/$defs/paper_task"} for p in tasks["properties"].values())
    assert tasks["additionalProperties"] == {"$ref": "#/$defs/sft_task"}
    assert {task_spec(t) for t in TASKS} == set(TASKS.values())
    assert task_spec("capitals") is GENERIC and task_spec("my-task.v2") is GENERIC
    assert is_generic("capitals") and not is_generic("toolace")


@pytest.mark.parametrize("name", ["..", "a/b", "-x", "suppress"])
def test_a_task_name_that_cannot_be_a_folder_or_is_reserved_is_refused(name):
    with pytest.raises(LokiInputError, match=repr(name)):
        task_spec(name)


def test_a_task_of_your_own_is_validated_and_filled_with_its_defaults():
    config = _config({"capitals": copy.deepcopy(MINE)})
    block = config["tasks"]["capitals"]
    assert block["train"]["columns"] == {} and block["train"]["tags"] == {}  # format-dependent
    assert block["eval"] == {
        "heldout": {"fraction": 0.05, "seed": 0}, "answer_margin": 16, "lm_eval": [],
        "lm_eval_limit": None, "primary_metric": "exact_match",
    }  # fmt: skip
    assert task_names(config) == ["toolace", "reranker", "capitals"]


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        ({"capitals": {"train": {"source": "x.json"}}}, "'format' is a required property"),
        ({"capitals": {"eval": {}}}, "'train' is a required property"),
        ({"capitals": {"train": {"source": "x", "format": "alpaca", "columns": {"messages": "m"}}}},
         "tasks.capitals.train.columns.messages: not a column of format alpaca"),
        ({"capitals": {"train": {"source": "x", "format": "alpaca", "tags": {"role_tag": "r"}}}},
         "tasks.capitals.train.tags: tags apply to format sharegpt only"),
        ({"capitals": {**MINE, "eval": {"primary_metric": "acc"}}},
         "tasks.capitals.eval.primary_metric 'acc': expected one of exact_match, loss"),
        ({"capitals": {**MINE, "eval": {"heldout": {"fraction": 0}}}}, "fraction is 0"),
        ({"suppress": MINE}, "tasks.suppress: the name 'suppress' is reserved"),
        ({"toolace": {"train": {"format": "alpaca"}}}, "unknown key under tasks.toolace.train"),
    ],
    ids=["format", "train", "columns", "tags", "primary", "nothing", "reserved", "paper"],
)  # fmt: skip
def test_a_bad_task_block_is_refused_naming_its_key(tasks, message):
    with pytest.raises(LokiInputError) as info:
        _config(tasks)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "extra",
    [{"experiments": {"m": {"capital": ["full"]}}},
     {"training": {"tasks": {"capital": {"max_steps": 3}}}},
     {"tables": {"reference": {"capital": "base"}}}],
    ids=["experiments", "training", "reference"],
)  # fmt: skip
def test_a_key_naming_an_undeclared_task_is_refused(extra):
    # any name is a valid task name now, so a misspelt one is caught by what is declared
    with pytest.raises(LokiInputError, match="task 'capital' is not defined under tasks"):
        _config({"capitals": MINE}, **extra)


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_the_paper_tasks_jobs_read_exactly_their_blocks_as_before(name):
    """The train and eval_task rules' params of toolace and reranker are what they were (the
    train block; the eval object), so their jobs are not redone and their tables not changed."""
    config = validate_config(yaml.safe_load((ROOT / "config" / name).read_text()))
    for task, block in config["tasks"].items():
        assert repr(train_data(task, block)) == repr(block["train"])
        assert repr(eval_config(task, block)) == repr(block["eval"])
        assert task_block(task, eval_config(task, block)) == {"eval": block["eval"]}
    assert train_data("toolace", None) == {}  # undeclared: the shipped set


def test_a_task_of_your_own_trains_and_evaluates_with_its_heldout_split():
    config = _config({"capitals": {**MINE, "eval": {"heldout": {"fraction": 0.2, "seed": 4}}}})
    block = config["tasks"]["capitals"]
    data = train_data("capitals", block)
    assert data["heldout"] == {"fraction": 0.2, "seed": 4}
    options = loader_options("capitals", data)
    assert options == {"split": "train", "format": "alpaca", "columns": {}, "tags": {},
                       "heldout": {"fraction": 0.2, "seed": 4}}  # fmt: skip
    assert task_block("capitals", eval_config("capitals", block)) == block
    settings = TaskEvalSettings.from_config(config, ["capitals"]).tasks["capitals"]
    assert settings == SftEvalSettings(data=block["train"], **block["eval"])
    with pytest.raises(LokiInputError, match=r"tasks.capitals.train.format: alpaca \| sharegpt"):
        loader_options("capitals", {"source": "x.json"})
    assert loader_options("capitals", {"format": "alpaca"})["heldout"] == {
        "fraction": 0.05, "seed": 0,
    }  # fmt: skip


def test_generic_eval_settings_name_unknown_keys():
    with pytest.raises(LokiInputError, match=r"tasks.capitals.eval: unknown keys \['held_out'\]"):
        benchmark_settings("capitals", {"held_out": {}}, MINE["train"])


def test_loki_train_takes_any_task_name_and_asks_for_its_format(tmp_path, capsys, monkeypatch):
    import loki_pipeline.train.run as train_run

    args = ["train", "--model", str(tmp_path / "m"), "--task", "capitals", "--method", "full",
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert loki_main(args) == 2
    assert "tasks.capitals.train.format: alpaca | sharegpt (CLI: --format)" in (
        capsys.readouterr().err
    )
    seen = {}
    monkeypatch.setattr(train_run, "run_training", lambda *a, **kw: seen.update(a=a, kw=kw))
    data = str(ROOT / "data" / "example_task" / "train.json")
    assert loki_main([*args, "--format", "alpaca", "--data", data]) == 0
    assert seen["a"][1:3] == ("capitals", data)
    assert seen["kw"]["data_options"]["heldout"] == {"fraction": 0.05, "seed": 0}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"tasks": {"capitals": {
        "train": {"source": data, "format": "alpaca", "cutoff_len": 99},
        "eval": {"heldout": {"fraction": 0.2, "seed": 1}}}}}))  # fmt: skip
    assert loki_main([*args, "--config", str(config)]) == 0
    assert seen["a"][2] == data and seen["a"][5].cutoff_len == 99
    assert seen["kw"]["data_options"]["heldout"] == {"fraction": 0.2, "seed": 1}


def test_loki_eval_task_takes_a_task_of_your_own_from_a_pipeline_config(tmp_path):
    from loki_pipeline.cli import build_parser

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"tasks": {"capitals": MINE}}))
    args = build_parser(["eval-task"]).parse_args(
        ["eval-task", "--model", "m", "--out", "o", "--task", "capitals",
         "--eval-config", str(config)]
    )  # fmt: skip
    assert TaskEvalSettings.from_cli(args).tasks == {"capitals": SftEvalSettings(MINE["train"])}
