"""Two configs never write the same file: each config file has a results folder of its own.

The workflow test plans the embedded default (A) and the worked example (B) with Snakemake dry
runs in a copy of the workflow, over fake outputs (empty files, no job runs): A's and B's
outputs and logs share no path, and after A, then B, then A again the third plan has nothing
to do (before results_dir, B's KVA of its own prompts overwrote A's results/kva/.../kva.h5 and
A redid everything downstream of it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loki_pipeline.config import resolve_extends
from loki_pipeline.errors import LokiInputError
from loki_pipeline.results_dir import logs_dir, results_dir

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = shutil.which("snakemake") or str(Path(sys.executable).with_name("snakemake"))
DEFAULT = ROOT / "config" / "config.yaml"


def test_the_default_keeps_results_and_a_config_file_gets_results_slash_its_name():
    assert results_dir({}, [], DEFAULT) == "results"
    assert results_dir({}, [DEFAULT], DEFAULT) == "results"  # the default, named
    assert results_dir({}, ["config/example_task.yaml"], DEFAULT) == "results/example_task"
    assert results_dir({"results_dir": "out/mine"}, ["x.yaml"], DEFAULT) == "out/mine"
    assert logs_dir("results") == "logs"
    assert logs_dir("results/example_task") == "results/example_task/logs"


@pytest.mark.parametrize("name", ["kva", "tables", "my config"])
def test_a_config_named_like_a_results_folder_must_set_results_dir(name):
    with pytest.raises(LokiInputError, match="set results_dir in the config"):
        results_dir({}, [f"{name}.yaml"], DEFAULT)


def test_results_dir_is_not_inherited_through_extends(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("results_dir: results/base\ndevice: cpu\n")
    merged = resolve_extends({"extends": str(base)})
    assert "results_dir" not in merged and merged["device"] == "cpu"


def _workflow_copy(tmp_path: Path) -> Path:
    """The workflow and its inputs, copied with their modification times."""
    work = tmp_path / "work"
    for name in ("Snakefile", "workflow", "config", "data", "envs"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            work.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, work / name)
    return work


def _snakemake(work: Path, *args: str) -> str:
    proc = subprocess.run(
        [SNAKEMAKE, "all", *args], cwd=work, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def _outputs(work: Path, *config: str) -> list[str]:
    """Every output of the config's `all` (done or not), from `snakemake --summary`."""
    lines = _snakemake(work, "--summary", *config).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("output_file\t"))
    return [line.split("\t")[0] for line in lines[start + 1 :] if "\t" in line]


def _logs(work: Path, *config: str) -> set[str]:
    """The long jobs' logs, as their messages name them (`tail -f LOG`)."""
    out = _snakemake(work, "-n", "--forceall", *config)
    return set(re.findall(r"tail -f (\S+)", out))


def _pretend_to_run(work: Path, outputs: list[str], mtime: float) -> None:
    """What a run leaves: each output present (a folder where the rule declares one: a path
    without a suffix), all with the same modification time, newer than the inputs."""
    for name in outputs:
        path = work / name
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:
            path.mkdir(parents=True, exist_ok=True)
        os.utime(path, (mtime, mtime))


def test_the_default_then_the_example_then_the_default_again_has_nothing_to_do(tmp_path):
    work = _workflow_copy(tmp_path)
    a, b = (), ("--configfile", "config/example_task.yaml")
    outputs_a, outputs_b = _outputs(work, *a), _outputs(work, *b)
    assert any("/kva.h5" in p for p in outputs_a) and any("/kva.h5" in p for p in outputs_b)
    results = [p for p in outputs_a + outputs_b if not p.startswith("resources/")]
    assert all(p.startswith("results/") for p in results)
    # the model checkpoint is shared (the same source, prepared once); no result is
    shared = set(outputs_a) & set(outputs_b)
    assert shared == {"resources/models/smollm2-135m"}, sorted(shared)
    shared_logs = _logs(work, *a) & _logs(work, *b)
    assert not shared_logs, sorted(shared_logs)

    now = time.time()
    _pretend_to_run(work, outputs_a, now - 200)  # A
    assert "Nothing to be done" in _snakemake(work, "-n", *a)
    # B: every one of its results is written anew (its KVA is of other prompts), the model not
    _pretend_to_run(work, [p for p in outputs_b if p not in shared], now - 100)
    assert "Nothing to be done" in _snakemake(work, "-n", *b)
    assert "Nothing to be done" in _snakemake(work, "-n", *a)  # A again: nothing to redo


def test_the_shipped_configs_share_no_result_file(tmp_path):
    """The default, the worked example, the reranker overlay and the paper: pairwise, no output
    outside resources/ (the prepared models, one per model source) is the same file."""
    work = _workflow_copy(tmp_path)
    configs = {"default": ()} | {
        name: ("--configfile", f"config/{name}.yaml")
        for name in ("example_task", "reranker", "paper")
    }
    outputs = {
        name: {p for p in _outputs(work, *args) if not p.startswith("resources/")}
        for name, args in configs.items()
    }
    names = list(outputs)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not outputs[a] & outputs[b], (a, b, sorted(outputs[a] & outputs[b])[:5])
    assert all(p.startswith("results/reranker/") for p in outputs["reranker"])
    assert all(p.startswith("results/paper/") for p in outputs["paper"])
