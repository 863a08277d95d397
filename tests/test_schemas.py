"""The pipeline config is strict: unknown keys, wrong types and unsafe names fail at the door.

Each config is checked with ``validate_config``, the function ``workflow/rules/common.smk``
calls before planning; ``tests/test_workflow_plan.py`` runs one bad config through Snakemake.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

import loki_pipeline
from loki_pipeline.cli import main as loki_main
from loki_pipeline.config import validate_config
from loki_pipeline.errors import LokiInputError
from loki_pipeline.schemas import SCHEMA_FILE, load_schema
from loki_pipeline.train.settings import TrainSettings, resolve_settings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def default_config() -> dict:
    return copy.deepcopy(DEFAULT)


def refused(config: dict) -> str:
    with pytest.raises(LokiInputError) as info:
        validate_config(config)
    return str(info.value)


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_shipped_configs_validate(name):
    config = yaml.safe_load((ROOT / "config" / name).read_text())
    validate_config(config)
    assert config["kva"]["shards"] >= 1  # defaults filled in


@pytest.mark.parametrize("name", ["..", ".", "a/b", "-x", "a b", ""])
def test_model_name_that_is_not_a_folder_name_is_refused_naming_the_key(name):
    config = default_config()
    config["models"][name] = {"source": "local:/nowhere"}
    message = refused(config)
    assert f"models: name {name!r} is not allowed" in message
    assert "folder name" in message


@pytest.mark.parametrize(
    "where",
    [
        lambda c, bad: c["select"].update(heatmap_q={bad: 5}),
        lambda c, bad: c["evaluate"]["general"].update(tasks=[bad]),
        lambda c, bad: c["evaluate"]["general"].update(metrics={bad: "acc,none"}),
        lambda c, bad: c["tasks"]["reranker"]["eval"]["beir"].update(split=bad),
        lambda c, bad: c["tasks"]["toolace"]["eval"]["bfcl"].update(categories=[bad]),
        lambda c, bad: c["experiments"].update({bad: {}}),
        lambda c, bad: c["experiments"]["smollm2-135m"].update(toolace=[bad]),
    ],
    ids=["heatmap_q", "lm_eval_task", "metric_task", "beir_split", "bfcl", "exp_model", "method"],
)
@pytest.mark.parametrize("bad", ["..", "."])
def test_every_name_that_becomes_a_path_segment_is_checked(where, bad):
    config = default_config()
    where(config, bad)
    assert repr(bad) in refused(config)


def test_method_patterns_keep_their_glob_characters():
    config = default_config()
    config["training"]["methods"] = {"loki*_q[23]0*": {"lr_scale": 0.5}, "lora_?16": {}}
    validate_config(config)
    config["training"]["methods"] = {"../*": {}}
    assert "training.methods: key '../*'" in refused(config)


def test_unknown_top_level_key_is_refused_naming_it():
    config = default_config()
    config["experiment"] = config.pop("experiments")  # the typo that silently dropped 7 jobs
    message = refused(config)
    assert "unknown top-level key: 'experiment' (did you mean 'experiments'?)" in message


@pytest.mark.parametrize("block", ["methods", "tasks"])
def test_override_of_the_wrong_type_is_refused_naming_its_key(block):
    config = default_config()
    name = "full" if block == "methods" else "reranker"
    config["training"][block] = {name: {"batch_size": 2.7}}
    message = refused(config)
    assert f"training.{block}.{name}.batch_size: 2.7 is not of type 'integer'" in message


def test_override_of_an_unknown_or_job_key_is_refused():
    config = default_config()
    config["training"]["methods"] = {"full": {"batch_sise": 2, "threads": 4}}
    message = refused(config)
    assert "unknown key under training.methods.full: 'batch_sise' (did you mean" in message
    assert "'threads'" in message  # threads is the job's, not a run's setting


def test_overrides_get_no_defaults_filled_in():
    config = default_config()
    validate_config(config)
    assert config["training"]["methods"]["full"] == {"lr_scale": 0.1}
    assert config["training"]["weight_decay"] == 0.0  # the block itself is filled
    assert config["models"]["smollm2-135m"]["trust_remote_code"] is False


def test_one_definition_of_the_training_settings():
    schema = load_schema()
    assert set(schema["$defs"]["training_settings"]["properties"]) == {
        f.name for f in dataclasses.fields(TrainSettings)
    }
    # One schema file, shipped in the package (installed non-editable too), used by the workflow.
    assert SCHEMA_FILE.parent == Path(loki_pipeline.__file__).parent / "schemas"
    assert not (ROOT / "workflow" / "schemas" / "config.schema.yaml").exists()
    assert "    validate_config(config)" in (ROOT / "workflow" / "rules" / "common.smk").read_text()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda c: c["experiments"].update({"smollm2": {"toolace": ["full"]}}),
            "experiments.smollm2: model 'smollm2' is not defined under models",
        ),
        (
            lambda c: c["tasks"].pop("toolace"),
            "experiments.smollm2-135m.toolace: task 'toolace' is not defined under tasks",
        ),
        (
            lambda c: c["experiments"]["smollm2-135m"].update({"toolacee": ["full"]}),
            "experiments.smollm2-135m.toolacee: task 'toolacee' is not defined under tasks",
        ),
    ],
    ids=["model", "task", "unknown_task"],
)
def test_experiment_naming_an_undefined_model_or_task_is_refused(mutate, expected):
    config = default_config()
    mutate(config)
    assert expected in refused(config)


def test_resolve_settings_checks_every_override_even_one_that_does_not_match():
    training = {"methods": {"lora_*": {"batch_size": 2.7}}}
    with pytest.raises(LokiInputError, match=r"training\.methods\.lora_\*\.batch_size: 2\.7"):
        resolve_settings(training, "toolace", "full")


def test_loki_train_config_is_checked_with_the_same_schema(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  methods:\n    full: {batch_size: 2.7}\n")
    args = ["train", "--model", str(tmp_path / "m"), "--task", "toolace", "--method", "full"]
    rc = loki_main([*args, "--out", str(tmp_path / "run"), "--config", str(bad)])
    assert rc == 2
    assert f"{bad}: training.methods.full.batch_size: 2.7 is not of type" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_loki_train_accepts_the_pipeline_config(tmp_path, monkeypatch):
    import loki_pipeline.train.run as train_run

    seen = {}
    monkeypatch.setattr(train_run, "run_training", lambda *a, **kw: seen.update(settings=a[5]))
    args = ["train", "--model", str(tmp_path / "m"), "--task", "toolace", "--method", "full"]
    config = str(ROOT / "config" / "config.yaml")
    rc = loki_main([*args, "--out", str(tmp_path / "run"), "--config", config, "--threads", "1"])
    assert rc == 0  # its training block has 'threads' (a job setting): no longer an error
    assert seen["settings"].lr_scale == pytest.approx(0.1)
    assert seen["settings"].max_steps == 48
