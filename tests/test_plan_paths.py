"""`loki plan` labels each job with the path the workflow writes for that config.

A ``--configfile <name>.yaml`` writes to ``results/<name>/`` (or its own ``results_dir``), the
embedded default to ``results/``. The oracle is Snakemake itself: `snakemake all --summary`
lists every output of the config's `all` with the rule that makes it, and the dry run's job
stats count each rule's jobs. Every label of the plan (``{i}`` a KVA shard, ``{run}`` the runs
a row stands for; a training job's label is its folder) must be such an output of its rule, and
the labels must cover as many jobs as the workflow runs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from test_workflow_plan import plan as workflow_jobs  # rule -> its jobs in a dry run of `all`

from loki_pipeline.cli import main

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = shutil.which("snakemake") or str(Path(sys.executable).with_name("snakemake"))
PLANNED_RULES = ("kva", "kva_compare", "train", "eval_general", "eval_task")


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the workflow runs here, and writes results/ here


def _snakemake(*args: str) -> str:
    proc = subprocess.run(
        [SNAKEMAKE, "all", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def workflow_outputs(*config: str) -> dict[str, list[str]]:
    """rule -> every output of it that the config's `all` needs (`snakemake --summary`)."""
    lines = _snakemake("--summary", *config).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("output_file\t"))
    outputs = defaultdict(list)
    for line in lines[start + 1 :]:
        cells = line.split("\t")
        if len(cells) > 2:
            outputs[cells[2]].append(cells[0])
    return outputs


def plan_rows(configfile: str, capsys) -> list[dict]:
    assert main(["plan", "--configfile", configfile, "--format", "json", "--device", "h100"]) == 0
    return json.loads(capsys.readouterr().out)["rows"]


def label_regex(label: str) -> re.Pattern:
    """A label as the outputs it names: ``{i}``/``{run}`` any one folder name, and a label that
    is a folder (a training job's) every output inside it."""
    pattern = re.escape(label).replace(r"\{i\}", "[^/]+").replace(r"\{run\}", "[^/]+")
    return re.compile(f"({pattern})(?:/.*)?")


def check_labels_are_the_workflows_paths(rows: list[dict], *config: str) -> None:
    outputs, jobs = workflow_outputs(*config), workflow_jobs(*config)
    for row in rows:
        regex = label_regex(row["job"])
        assert any(regex.fullmatch(o) for o in outputs[row["rule"]]), (
            row["job"],
            outputs[row["rule"]][:3],
        )
    planned = Counter()
    for row in rows:
        planned[row["rule"]] += row["count"]
    for rule in PLANNED_RULES:
        # the jobs the labels name, each once (a grouped {run} row and a run's own row may
        # both match one run's output): as many as the workflow runs
        named = {
            m[1]
            for row in rows
            if row["rule"] == rule
            for o in outputs[rule]
            if (m := label_regex(row["job"]).fullmatch(o))
        }
        assert len(named) == planned[rule] == jobs.get(rule, 0), (rule, sorted(named)[:5])


@pytest.mark.parametrize(
    ("name", "folder"), [("paper", "results/paper/"), ("example_task", "results/example_task/")]
)
def test_a_config_files_jobs_are_labelled_with_its_own_results_folder(name, folder, capsys):
    rows = plan_rows(f"config/{name}.yaml", capsys)
    assert rows and all(r["job"].startswith(folder) for r in rows)
    check_labels_are_the_workflows_paths(rows, "--configfile", f"config/{name}.yaml")


def test_the_defaults_labels_are_unchanged(capsys):
    rows = plan_rows("config/config.yaml", capsys)
    labels = {r["job"] for r in rows}
    assert {
        "results/kva/smollm2-135m/shards/{i}.h5",
        "results/train/smollm2-135m/toolace/loki_q10",
        "results/train/smollm2-135m/toolace/lora_r16",
    } <= labels
    assert all(re.match(r"results/(kva|train|eval)/smollm2-135m/", label) for label in labels)
    check_labels_are_the_workflows_paths(rows)  # the embedded default, as `snakemake all` runs


def test_a_config_that_sets_results_dir_is_labelled_with_it(tmp_path, capsys):
    """results_dir is the file's own: kept though `loki plan` reads the file through
    ``extends``, which never passes a base's results_dir on."""
    config = tmp_path / "mine.yaml"
    config.write_text(f"extends: {ROOT}/config/example_task.yaml\nresults_dir: out/mine\n")
    rows = plan_rows(str(config), capsys)
    assert rows and all(r["job"].startswith("out/mine/") for r in rows)
    check_labels_are_the_workflows_paths(rows, "--configfile", str(config))


def test_a_config_named_like_a_results_folder_is_refused_as_the_workflow_refuses_it(
    tmp_path, capsys
):
    """tables.yaml would write to results/tables/, among the default's tables: the workflow
    stops at it (results_dir), and so does the plan, instead of labelling its jobs results/..."""
    config = tmp_path / "tables.yaml"
    config.write_text(f"extends: {ROOT}/config/example_task.yaml\n")
    assert main(["plan", "--configfile", str(config)]) == 2
    assert "set results_dir in the config" in capsys.readouterr().err
