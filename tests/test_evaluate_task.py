"""Task evaluation settings: the schema is the one source of defaults; the registry dispatches."""

from __future__ import annotations

import dataclasses
import json

import pytest

from loki_pipeline.cli import build_parser
from loki_pipeline.config import validate_config
from loki_pipeline.errors import LokiInputError
from loki_pipeline.evaluate.reranker import BeirSettings
from loki_pipeline.evaluate.sft import SftEvalSettings
from loki_pipeline.evaluate.toolace import BfclSettings
from loki_pipeline.schemas import load_schema
from loki_pipeline.settings import schema_default
from loki_pipeline.tasks import driver as task_module
from loki_pipeline.tasks.driver import TASKS, TaskSpec, evaluate_task, prepare_task
from loki_pipeline.tasks.settings import TaskEvalSettings, benchmark_settings


def _filled(tasks: dict) -> dict:
    """A minimal pipeline config with the schema's defaults filled in, as the workflow has it."""
    return validate_config({"models": {"m": {"source": "hf:org/m"}}, "tasks": tasks})


def test_task_settings_defaults_are_the_schemas():
    eval_schema = load_schema()["$defs"]["paper_task"]["properties"]["eval"]
    for cls, key in ((BfclSettings, "bfcl"), (BeirSettings, "beir")):
        properties = eval_schema["properties"][key]["properties"]
        assert dataclasses.asdict(cls()) == {k: p["default"] for k, p in properties.items()}
    filled = _filled({"toolace": {}, "reranker": {}})["tasks"]
    assert dataclasses.asdict(BfclSettings()) == filled["toolace"]["eval"]["bfcl"]
    assert dataclasses.asdict(BeirSettings()) == filled["reranker"]["eval"]["beir"]
    default = TaskEvalSettings()
    assert TaskEvalSettings.schema_defaults() == {
        "batch_size": default.batch_size,
        "threads": default.threads,
        "dtype": default.dtype,
        "device": default.device,
    }


def test_from_config_reads_the_task_and_run_sections():
    config = _filled(
        {"toolace": {"eval": {"bfcl": {"max_new_tokens": 7}}}, "reranker": {}},
    )
    config["evaluate"] = {"task": {"batch_size": 3}}
    config["device"] = "cpu"
    got = TaskEvalSettings.from_config(config, ["reranker", "toolace"], threads=5)
    assert list(got.tasks) == ["reranker", "toolace"]  # evaluation order as asked
    assert got.tasks["toolace"] == BfclSettings(max_new_tokens=7)
    assert got.tasks["reranker"] == BeirSettings()
    assert (got.batch_size, got.threads, got.dtype, got.device) == (
        3,
        5,
        schema_default("evaluate.task.dtype"),
        "cpu",
    )


def test_unknown_keys_and_tasks_are_named():
    with pytest.raises(LokiInputError, match=r"tasks.reranker.eval.beir: unknown keys \['topk'\]"):
        benchmark_settings("reranker", {"beir": {"topk": 3}})
    with pytest.raises(LokiInputError, match="task name '../qa'"):
        benchmark_settings("../qa", None)
    assert benchmark_settings("qa", None) == SftEvalSettings()  # a task of your own
    assert benchmark_settings("toolace", {"beir": {"top_k": 3}}) == BfclSettings()  # not its key


def _cli(*argv: str):
    args = build_parser(["eval-task"]).parse_args(
        ["eval-task", "--model", "m", "--out", "o", *argv]
    )
    return TaskEvalSettings.from_cli(args)


def test_cli_defaults_are_the_schemas_and_flags_override_them(tmp_path):
    got = _cli("--task", "reranker", "--task", "toolace", "--task", "reranker")
    assert got == TaskEvalSettings(tasks={"reranker": BeirSettings(), "toolace": BfclSettings()})
    assert got.device == "auto"
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"tasks": {"reranker": {"eval": {"beir": {"top_k": 4}}}}}))
    got = _cli("--task", "reranker", "--eval-config", str(config), "--threads", "3",
               "--batch-size", "2", "--dtype", "bfloat16", "--device", "cpu")  # fmt: skip
    assert got.tasks == {"reranker": BeirSettings(top_k=4)}
    assert (got.threads, got.batch_size, got.dtype, got.device) == (3, 2, "bfloat16", "cpu")
    mapping = tmp_path / "m.yaml"
    mapping.write_text("toolace: {bfcl: {max_per_category: 1}}\n")
    assert _cli("--task", "toolace", "--eval-config", str(mapping)).tasks == {
        "toolace": BfclSettings(max_per_category=1)
    }
    with pytest.raises(LokiInputError, match="no such file"):
        _cli("--task", "toolace", "--eval-config", str(tmp_path / "nope.yaml"))


def test_help_states_the_schemas_defaults():
    parser = build_parser(["eval-task"])
    text = " ".join(parser._subparsers._group_actions[0].choices["eval-task"].format_help().split())
    assert f"(default: {schema_default('evaluate.task.threads')})" in text
    assert f"(default: {schema_default('evaluate.task.batch_size')})" in text


def test_registry_names_the_schemas_tasks():
    assert sorted(TASKS) == sorted(load_schema()["properties"]["tasks"]["properties"])


@dataclasses.dataclass
class _QASettings:
    n: int = 2


def test_a_task_is_one_registry_entry(monkeypatch, tmp_path):
    def prepare(settings, cache_dir):
        return list(range(settings.n)), f"qa:{settings.n}"

    def evaluate(model, tokenizer, data, settings, *, batch_size):
        return {"metrics": {"acc": 0.5}, "counts": {"n": len(data)}, "items": data, "note": "x"}

    spec = TaskSpec("qa", _QASettings, prepare, evaluate, "acc")
    monkeypatch.setitem(TASKS, "qa", spec)
    assert benchmark_settings("qa", {"qa": {"n": 3}}) == _QASettings(3)
    prepared = prepare_task("qa", _QASettings(3), tmp_path)
    summary = evaluate_task(None, None, prepared, batch_size=1)
    assert list(summary) == [
        "task", "benchmark", "primary_metric", "metrics", "counts", "settings", "items", "note",
    ]  # fmt: skip
    assert summary["benchmark"] == "qa:3" and summary["settings"] == {"n": 3}
    assert summary["primary_metric"] == "acc" and summary["items"] == [0, 1, 2]
    assert task_module.task_spec("qa") is spec


def test_eval_task_help_imports_no_torch():
    import subprocess
    import sys

    code = (
        "import sys\nfrom loki_pipeline.cli import main\n"
        "try:\n    main(['eval-task', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=60)
