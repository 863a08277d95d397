"""The stages' settings objects: schema defaults only, the whole config section, and the rules
and scripts reading the config through them (the same values reach the same functions)."""

from __future__ import annotations

import dataclasses
import logging
import re
import runpy
import sys
import types
from pathlib import Path

import pytest
import yaml

from loki_pipeline.config import validate_config
from loki_pipeline.errors import LokiInputError
from loki_pipeline.evaluate.settings import GeneralEvalSettings
from loki_pipeline.kva.settings import KVASettings
from loki_pipeline.select.settings import SelectSettings
from loki_pipeline.settings import config_key, schema_node
from loki_pipeline.train.settings import TrainSettings, resolve_settings

ROOT = Path(__file__).resolve().parents[1]
STAGES = [KVASettings, SelectSettings, GeneralEvalSettings, TrainSettings]
#: config section -> the settings class that holds all of it
SECTIONS = {
    "kva": KVASettings,
    "select": SelectSettings,
    "evaluate.general": GeneralEvalSettings,
    "training": TrainSettings,
}
#: config keys of these stages that are no field, and who reads them instead
NOT_FIELDS = {
    "training.threads": "the train rule's threads: (the job's, not a run's setting)",
    "training.tasks": "TrainSettings.from_config (per-task overrides)",
    "training.methods": "TrainSettings.from_config (per-method overrides)",
    "tasks": "the train rule: whether the config declares the task",
    "tasks.*.train": "TrainSettings.from_config (cutoff_len, packing, max_samples) and the "
    "task's data loader (source, split, tool_role, columns)",
    "models.*.source": "prepare_model",
    "models.*.trust_remote_code": "prepare_model",
}
RULES = ["kva", "select", "train", "evaluate_general", "models"]
SCRIPTS = ["kva", "kva_gather", "select", "eval_general", "train", "prepare_model", "suppress",
           "heatmap", "select_layer_counts", "stability"]  # fmt: skip


def config_keys(cls) -> set[str]:
    return {key for f in dataclasses.fields(cls) if (key := config_key(f)) is not None}


def default_config(name: str = "config.yaml") -> dict:
    return validate_config(yaml.safe_load((ROOT / "config" / name).read_text()))


@pytest.mark.parametrize("cls", STAGES, ids=lambda c: c.__name__)
def test_defaults_are_the_schemas_and_every_field_mirrors_a_config_key(cls):
    default = cls()
    assert cls.schema_defaults() == {
        f.name: getattr(default, f.name) for f in dataclasses.fields(cls)
    }


def _leaves(section: str, fields: set[str]) -> set[str]:
    """Dotted keys under ``section`` in the schema, nested objects flattened unless a field."""
    keys = set()
    for name in schema_node(section).get("properties", {}):
        key = f"{section}.{name}"
        nested = key not in fields and schema_node(key).get("properties")
        keys |= _leaves(key, fields) if nested else {key}
    return keys


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_a_settings_object_holds_its_whole_config_section(section):
    fields = config_keys(SECTIONS[section])
    assert _leaves(section, fields) - set(NOT_FIELDS) == {
        key for key in fields if key.startswith(f"{section}.")
    }


def _config_reads(text: str) -> set[str]:
    """Dotted keys of every ``config[...][...]`` in ``text`` (a wildcard index is ``*``)."""
    keys = set()
    for chain in re.findall(r"config((?:\[[^\]]+\])+)", text):
        parts = re.findall(r"\[([^\]]+)\]", chain)
        keys.add(".".join(p.strip("\"'") if p[0] in "\"'" else "*" for p in parts))
    return keys


def test_the_rules_read_the_config_only_through_settings_fields():
    fields = set().union(*map(config_keys, STAGES), SECTIONS)  # a field, or a whole section
    for rule in RULES:
        text = (ROOT / "workflow" / "rules" / f"{rule}.smk").read_text()
        assert ".get(" not in text, f"{rule}.smk: the validated config has every key"
        for key in _config_reads(text):
            assert key in fields or key in NOT_FIELDS, f"{rule}.smk reads {key}"
        for attr in re.findall(r"SELECTING\.(\w+)", text):
            assert attr in {f.name for f in dataclasses.fields(SelectSettings)}


def test_the_scripts_take_params_not_the_config():
    for script in SCRIPTS:
        text = (ROOT / "workflow" / "scripts" / f"{script}.py").read_text()
        assert "snakemake.config" not in text, script
        gets = re.findall(r"([\w.]+)\.get\(", text)
        assert set(gets) <= {"snakemake.input", "data"}, (script, gets)


def test_the_scripts_import_names_that_exist():
    import ast
    import importlib

    for script in SCRIPTS:
        tree = ast.parse((ROOT / "workflow" / "scripts" / f"{script}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module.startswith("loki_pipeline"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{script}.py: {node.module}.{alias.name}"


class Named(list):
    """A stand-in for Snakemake's input/output/params lists: positional and by name."""

    def __init__(self, **named):
        super().__init__(named.values())
        self.__dict__.update(named)

    def get(self, key, default=None):
        return self.__dict__.get(key, default)


def run_script(name: str, tmp_path: Path, **snakemake) -> None:
    """Run ``workflow/scripts/{name}.py`` with a fake ``snakemake`` object (one thread)."""
    fake = types.SimpleNamespace(log=[str(tmp_path / "job.log")], threads=1, **snakemake)
    saved, handlers = sys.stderr, logging.getLogger().handlers[:]
    try:
        runpy.run_path(str(ROOT / "workflow" / "scripts" / f"{name}.py"), {"snakemake": fake})
    finally:  # the script points stderr (and maybe logging) at its log file
        if sys.stderr is not saved:
            sys.stderr.close()
            sys.stderr = saved
        logging.getLogger().handlers[:] = handlers


def test_kva_script_passes_the_config_values(tmp_path, monkeypatch):
    import loki_pipeline.kva.runner as runner

    config = default_config("paper.yaml")
    seen = {}
    monkeypatch.setattr(runner, "run_kva_shard", lambda *a, **kw: seen.update(args=a, kw=kw))
    kva = config["kva"]
    run_script(
        "kva", tmp_path,
        input=Named(model="m"), output=Named(out="s.h5"), wildcards=Named(shard="3"),
        params=Named(kva=kva, device=config["device"], num_shards=kva["shards"]),
    )  # fmt: skip
    assert seen["args"][:2] == ("m", "s.h5") and seen["kw"] == {"shard": 3}
    assert seen["args"][2] == KVASettings(
        dataset=kva["dataset"], steps=kva["steps"], method=kva["method"],
        quadrature=kva["quadrature"], dtype=kva["dtype"], num_shards=kva["shards"],
        threads=1, batch_prompts=kva["batch_prompts"], device=config["device"],
        prompt_format=kva["prompt_format"],
    )  # fmt: skip


def test_eval_general_script_passes_the_config_values(tmp_path, monkeypatch):
    import loki_pipeline.evaluate.general as general_module

    config = default_config()
    general = config["evaluate"]["general"]
    seen = {}
    monkeypatch.setattr(
        general_module, "evaluate_general", lambda *a, **kw: seen.update(a=a, kw=kw)
    )
    run_script(
        "eval_general", tmp_path,
        input=Named(model="m"), output=Named(summary="g.json", lm_eval="lm/results.json"),
        wildcards=Named(model="tiny", run="base"),
        params=Named(general=general, device=config["device"]),
    )  # fmt: skip
    settings = seen["a"][2]
    assert {k: getattr(settings, k) for k in general} == {**general, "threads": 1}
    assert settings.device == config["device"]
    assert seen["kw"] == {"model": "tiny", "run": "base", "lm_eval_dir": Path("lm")}


@pytest.mark.parametrize(("task", "method"), [("toolace", "loki_q30"), ("reranker", "full")])
def test_train_script_passes_the_resolved_settings(tmp_path, monkeypatch, task, method):
    import torch

    import loki_pipeline.train.run as train_run
    from loki_pipeline.tasks.registry import loader_options

    config = default_config()
    data = config["tasks"][task]["train"]
    seen = {}
    monkeypatch.setattr(train_run, "run_training", lambda **kw: seen.update(kw))
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    run_script(
        "train", tmp_path,
        input=Named(model="m"), wildcards=Named(task=task, method=method),
        params=Named(run_dir="r", checkpoint_dir="c", training=config["training"], data=data,
                     device=config["device"], processes=1),
    )  # fmt: skip
    training = {k: v for k, v in config["training"].items() if k != "threads"}
    assert seen["settings"] == resolve_settings(training, task, method, data=data)
    assert seen["settings"] == TrainSettings.from_config(config, task, method)
    assert seen["data"] == data["source"] and seen["data_options"] == loader_options(task, data)


def test_train_and_eval_task_scripts_pass_a_task_of_your_own_its_heldout_split(
    tmp_path, monkeypatch
):
    """The rules' params of a task of the user's (loki_pipeline.tasks.registry.train_data / eval_config)
    reach the loader (rows left out) and the evaluation (rows scored) as one split."""
    import torch

    import loki_pipeline.tasks.driver as task_eval
    import loki_pipeline.train.run as train_run
    from loki_pipeline.config import resolve_extends
    from loki_pipeline.evaluate.sft import SftEvalSettings
    from loki_pipeline.tasks.registry import eval_config, train_data

    monkeypatch.chdir(ROOT)
    raw = yaml.safe_load((ROOT / "config" / "example_task.yaml").read_text())
    config = validate_config(resolve_extends(raw))
    block = config["tasks"]["cities"]
    seen = {}
    monkeypatch.setattr(train_run, "run_training", lambda **kw: seen.update(train=kw))
    monkeypatch.setattr(task_eval, "run_task_eval", lambda *a, **kw: seen.update(eval=a))
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    run_script(
        "train", tmp_path,
        input=Named(model="m", data=block["train"]["source"]),
        wildcards=Named(task="cities", method="loki_q10"),
        params=Named(run_dir="r", checkpoint_dir="c", training=config["training"],
                     data=train_data("cities", block), device="cpu", processes=1),
    )  # fmt: skip
    heldout = {"fraction": 0.2, "seed": 0}
    assert seen["train"]["data_options"]["heldout"] == heldout
    assert seen["train"]["settings"].cutoff_len == 128
    run_script(
        "eval_task", tmp_path,
        input=Named(model="m"), output=["task.json"],
        wildcards=Named(model="smollm2-135m", run="base"),
        params=Named(tasks=["cities"], eval_configs={"cities": eval_config("cities", block)},
                     run_config=config["evaluate"]["task"], device="cpu"),
    )  # fmt: skip
    settings = seen["eval"][2].tasks["cities"]
    assert settings == SftEvalSettings(data=block["train"], **block["eval"])
    assert settings.heldout == heldout


def test_train_script_hands_a_multi_process_job_to_torchrun(tmp_path, monkeypatch):
    import loki_pipeline.train.launch as launch

    class Exec(Exception):
        """exec_torchrun never returns: the process becomes torchrun."""

    def exec_torchrun(*args):
        raise Exec(args)

    monkeypatch.setattr(launch, "exec_torchrun", exec_torchrun)
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(Exec) as started:
        run_script("train", tmp_path, params=Named(processes=2))
    # the file being run (under Snakemake its copy, which carries the job) and the job's log
    script = str(ROOT / "workflow" / "scripts" / "train.py")
    assert started.value.args[0] == (2, script, str(tmp_path / "job.log"))


def parse(*argv: str):
    from loki_pipeline.cli import build_parser

    return build_parser(list(argv)).parse_args(list(argv))


def test_cli_flags_left_out_are_the_schemas_defaults():
    kva = ["kva", "--model", "m", "--dataset", "d.jsonl", "--out", "o.h5"]
    assert KVASettings.from_cli(parse(*kva)) == KVASettings(
        dataset={**KVASettings().dataset, "source": "d.jsonl"}
    )
    got = KVASettings.from_cli(parse(*kva, "--max-per-subject", "2", "--num-shards", "4"))
    assert (got.dataset["max_per_subject"], got.dataset["split"], got.num_shards) == (2, "test", 4)
    assert SelectSettings.from_cli(parse("select")) == SelectSettings()
    assert SelectSettings.from_cli(parse("select", "--chunk-size", "7")).chunk_size == 7
    general = ["eval-general", "--model", "m", "--out", "g.json"]
    assert GeneralEvalSettings.from_cli(parse(*general)) == GeneralEvalSettings()
    got = GeneralEvalSettings.from_cli(
        parse(*general, "--tasks", "gsm8k, ifeval", "--metric", "gsm8k=exact_match,strict-match",
              "--metric", "ifeval=inst_level_strict_acc,none", "--allow-code-execution")
    )  # fmt: skip
    assert got.tasks == ["gsm8k", "ifeval"] and got.allow_code_execution is True
    assert got.metrics == {
        "gsm8k": "exact_match,strict-match",
        "ifeval": "inst_level_strict_acc,none",
    }
    train = ["train", "--model", "m", "--task", "toolace", "--method", "full", "--out", "r"]
    assert TrainSettings.from_cli(parse(*train)) == TrainSettings()
    got = TrainSettings.from_cli(
        parse(*train, "--lr", "0.5", "--no-packing"), config=default_config()
    )
    assert (got.learning_rate, got.packing, got.lr_scale) == (0.5, False, 0.1)  # full: 0.1 x
    assert got.max_steps == default_config()["training"]["max_steps"]


def test_a_function_taking_settings_also_takes_its_fields_as_keywords():
    assert KVASettings.resolve(None, steps=3) == KVASettings(steps=3)
    base = GeneralEvalSettings(limit=2)
    assert GeneralEvalSettings.resolve(base, batch_size=1) == GeneralEvalSettings(
        limit=2, batch_size=1
    )
    assert base.batch_size == GeneralEvalSettings().batch_size  # not changed in place
    with pytest.raises(LokiInputError, match=r"unknown KVASettings field\(s\) \['step'\]"):
        KVASettings.resolve(None, step=3)
