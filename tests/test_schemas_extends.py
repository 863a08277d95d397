"""`extends:`: a user config names the config it extends and gives only what it changes; the
merge (mappings key by key, the user winning; `models` and `experiments` replaced whole) is
validated afterwards, and a config without `extends` (config/paper.yaml) stays as it is."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from loki_pipeline.config import apply_extends, merge_configs, resolve_extends, validate_config
from loki_pipeline.errors import LokiInputError

ROOT = Path(__file__).resolve().parents[1]


def test_merge_is_deep_for_mappings_and_replaces_the_rest():
    base = {"training": {"epochs": 2, "learning_rate": 1e-4, "peft_target_modules": ["a", "b"]},
            "models": {"smol": {"source": "hf:a/b"}},
            "experiments": {"smol": {"toolace": ["loki_q10"]}},
            "tasks": {"toolace": {"train": {"source": None, "max_samples": 3}}}}  # fmt: skip
    over = {"training": {"learning_rate": 5e-4, "peft_target_modules": ["c"]},
            "models": {"qwen": {"source": "hf:q/w"}},
            "experiments": {"qwen": {"reranker": ["full"]}},
            "tasks": {"toolace": {"train": {"max_samples": None}}}}  # fmt: skip
    assert merge_configs(base, over) == {
        "training": {"epochs": 2, "learning_rate": 5e-4, "peft_target_modules": ["c"]},
        "models": {"qwen": {"source": "hf:q/w"}},  # x-merge: replace
        "experiments": {"qwen": {"reranker": ["full"]}},
        "tasks": {"toolace": {"train": {"source": None, "max_samples": None}}},
    }
    assert base["training"]["learning_rate"] == 1e-4  # inputs unchanged


def test_a_user_config_extending_the_default_changes_only_what_it_says(tmp_path):
    user = {"extends": "config/config.yaml", "training": {"learning_rate": 5e-4}}
    merged = validate_config(resolve_extends(user, [tmp_path, ROOT]))
    default = validate_config(yaml.safe_load((ROOT / "config/config.yaml").read_text()))
    assert merged["training"]["learning_rate"] == 5e-4
    assert merged["extends"] == str((ROOT / "config/config.yaml").resolve())
    merged["training"]["learning_rate"] = default["training"]["learning_rate"]
    assert {k: v for k, v in merged.items() if k != "extends"} == {
        k: v for k, v in default.items() if k != "extends"
    }


def test_extends_is_relative_to_the_file_first_then_chains_and_in_place(tmp_path):
    (tmp_path / "a.yaml").write_text("models: {m: {source: 'hf:x/y'}}\ndevice: cpu\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\ndevice: cuda\nkva: {steps: 3}\n")
    config = {"extends": "b.yaml", "kva": {"shards": 4}}
    apply_extends(config, [tmp_path / "user.yaml"])
    assert config["models"] == {"m": {"source": "hf:x/y"}} and config["device"] == "cuda"
    assert config["kva"] == {"steps": 3, "shards": 4}
    assert config["extends"] == str((tmp_path / "b.yaml").resolve())


def test_bad_extends_fail_naming_the_file(tmp_path):
    with pytest.raises(LokiInputError, match="extends: 'nope.yaml': no such config file"):
        resolve_extends({"extends": "nope.yaml"}, [tmp_path])
    (tmp_path / "x.yaml").write_text("extends: y.yaml\n")
    (tmp_path / "y.yaml").write_text("extends: x.yaml\n")
    with pytest.raises(LokiInputError, match="in a loop"):
        resolve_extends({"extends": "x.yaml"}, [tmp_path])
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(LokiInputError, match="list.yaml: expected a mapping"):
        resolve_extends({"extends": "list.yaml"}, [tmp_path])


def test_the_paper_config_does_not_extend():
    paper = yaml.safe_load((ROOT / "config/paper.yaml").read_text())
    assert "extends" not in paper
    assert resolve_extends(paper, [ROOT]) == {**paper, "extends": None}
