"""The config module above the registries: ``loki plan`` refuses what the workflow refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from loki_pipeline.cli import main
from loki_pipeline.config import check_prompt_files, validate_config
from loki_pipeline.data.kva_sets import local_dataset_file
from loki_pipeline.errors import LokiInputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # configs name data/ relative to the repository


def test_loki_plan_refuses_a_missing_prompt_file_as_the_workflow_does(tmp_path, capsys):
    """The same message as tests/test_workflow_plan.py's dry run of the workflow."""
    config = tmp_path / "missing.yaml"
    config.write_text(
        f"extends: {ROOT}/config/config.yaml\nkva:\n  dataset:\n"
        "    source: data/example_task/no_such_file.jsonl\n    format: prompts\n"
    )
    assert main(["plan", "--configfile", str(config)]) == 2
    err = capsys.readouterr().err
    assert "kva.dataset.source: data/example_task/no_such_file.jsonl does not exist" in err
    config.write_text(config.read_text().replace("no_such_file", "protect"))
    assert main(["plan", "--configfile", str(config)]) == 0


@pytest.mark.parametrize(
    ("spec", "local"),
    [
        ({"source": "data/mmlu/mmlu_mini.jsonl"}, None),  # mmlu: the shard fingerprints it
        ({"source": "data/p.jsonl", "format": "prompts"}, "data/p.jsonl"),
        ({"source": "hf:org/p", "format": "prompts"}, None),
        ({"source": "local:hellaswag", "format": "lm_eval"}, None),
        ({"source": "tasks/x.yaml", "format": "lm_eval"}, "tasks/x.yaml"),
    ],
)
def test_which_prompt_sets_are_local_files(spec, local):
    assert local_dataset_file(spec) == local


def test_the_compare_set_is_checked_too():
    import yaml

    config = validate_config(yaml.safe_load((ROOT / "config/config.yaml").read_text()))
    check_prompt_files(config)
    config["kva"]["compare_dataset"] = {"source": "nope.jsonl", "format": "prompts"}
    with pytest.raises(LokiInputError, match="kva.compare_dataset.source: nope.jsonl"):
        check_prompt_files(config)
