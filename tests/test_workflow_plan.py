"""The Snakemake workflow plans the jobs each config asks for, without downloading anything.

These run `snakemake -n` in a subprocess (the dry run only reads the config and the rules), so
they check the real Snakefile, schema, profiles and config files a user would run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = shutil.which("snakemake") or str(Path(sys.executable).with_name("snakemake"))


def plan(*args: str) -> dict[str, int]:
    """Job counts per rule of a dry run of `all` (forced, so outputs already on disk count too)."""
    proc = subprocess.run(
        [SNAKEMAKE, "-n", "all", "--forceall", "--quiet", "rules", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = proc.stdout.split("Job stats:")[1]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.M))
    return {rule: int(n) for rule, n in counts.items() if rule != "total"}


def test_paper_config_plans_every_experiment_of_the_paper():
    counts = plan("--configfile", "config/paper.yaml")
    models, shards, strategies, qs = 2, 8, 4, 5
    analysed = 1  # Llama-2-7B (Figure 4): KVA and figures only, its prompts plain
    runs = 7 + 10  # ToolACE on Llama-3.1-8B; LB reranker on Qwen2.5-0.5B (incl. G-H/G-L)
    external = 2  # the released ToolACE-8B (Tables 1-2) and LB-Reranker (Table 3's reference)
    suppressions = 2 * models  # S-H and S-L per model
    assert counts["prepare_model"] == models + analysed
    assert counts["prepare_external"] == external
    assert counts["kva"] == (models + analysed) * shards
    assert counts["kva_gather"] == models + analysed
    # an analysed model's selections: only the global ones its layer-count figure draws
    assert counts["select"] == models * strategies * qs + analysed * 2
    assert counts["heatmap"] == counts["stability"] == models + analysed
    assert counts["train"] == runs
    assert counts["suppress"] == suppressions
    assert counts["eval_general"] == models + runs + external + suppressions  # base + every run
    assert counts["eval_task"] == models + runs + external  # base on its task + every other run
    assert counts["tables"] == 2  # one (model, task) pair each


def test_paper_config_replaces_the_embedded_default():
    counts = plan("--configfile", "config/paper.yaml")
    assert counts["prepare_model"] == 3  # the default's SmolLM2 does not join a paper run


def test_default_config_plans_the_whole_pipeline():
    counts = plan()
    assert counts["kva"] == 2 and counts["train"] == 2  # ToolACE: LoKI q=10 and LoRA r=16
    assert counts["eval_general"] == 1 + 2 + 2
    assert counts["tables"] == 1


def test_reranker_overlay_adds_the_reranker_runs_to_the_default():
    counts = plan("--configfile", "config/reranker.yaml")
    assert counts["prepare_model"] == 1 and counts["kva"] == 2  # the default's model and KVA
    assert counts["train"] == 4 and counts["eval_general"] == 1 + 4 + 2
    assert counts["eval_task"] == 1 + 4 and counts["tables"] == 2  # one per task


def test_slurm_profile_plans_the_paper_without_a_cluster():
    pytest.importorskip(
        "snakemake_executor_plugin_slurm",
        reason='the SLURM executor plugin is not installed: `pip install -e ".[test,slurm]"`',
    )
    counts = plan("--profile", "profiles/slurm", "--configfile", "config/paper.yaml")
    assert counts["train"] == 17


def test_local_profile_plans_the_default():
    assert plan("--profile", "profiles/local")["kva_gather"] == 1


def test_unknown_top_level_key_stops_snakemake_naming_it(tmp_path):
    # 'experiment:' for 'experiments:' used to plan silently without the training runs.
    config = (ROOT / "config" / "config.yaml").read_text()
    bad = tmp_path / "typo.yaml"
    bad.write_text(config.replace("\nexperiments:", "\nexperiment:"))
    proc = subprocess.run(
        [SNAKEMAKE, "-n", "all", "--configfile", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "unknown top-level key: 'experiment' (did you mean 'experiments'?)" in (
        proc.stdout + proc.stderr
    )


def _dry_run(tmp_path, config_text: str, *targets: str) -> str:
    """A dry run of `targets` under the config; its results go to the default's results/ (a
    config file's own would be results/<its name>), where the targets are named."""
    config = tmp_path / "config.yaml"
    config.write_text(config_text + "\nresults_dir: results\n")
    proc = subprocess.run(
        [SNAKEMAKE, "-n", "--forceall", *targets, "--configfile", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_run_names_plan_the_checkpoint_each_kind_evaluates(tmp_path):
    # loki_q12.3456789 trains on the selection of that q, not of a rounded 12.3457 (which
    # selects other nodes, and the run refuses); an external run evaluates a released model
    # listed under `models`, prepared like a base model.
    default = (ROOT / "config" / "config.yaml").read_text()
    assert "    toolace: [loki_q10, lora_r16]" in default and "\nmodels:\n" in default
    text = default.replace("    toolace: [loki_q10, lora_r16]", "    toolace: [loki_q12.3456789]")
    text = text.replace("\nmodels:\n", "\nmodels:\n  released-x:\n    source: hf:org/released\n")
    out = _dry_run(
        tmp_path,
        text,
        "results/eval/smollm2-135m/toolace-loki_q12.3456789/general.json",
        "results/eval/smollm2-135m/released-x/general.json",
        "results/eval/smollm2-135m/suppress-global_low_q2.5/general.json",
    )
    assert "results/select/smollm2-135m/layer_balanced_low_q12.3456789.json" in out
    assert "results/train/smollm2-135m/toolace/loki_q12.3456789/merged" in out
    assert "resources/models/released-x" in out
    assert "results/suppress/smollm2-135m/global_low_q2.5" in out


def test_external_runs_are_prepared_evaluated_and_tabled_like_a_training_run(tmp_path):
    default = (ROOT / "config" / "config.yaml").read_text()
    assert "\nexperiments:\n" in default
    text = default.replace(
        "\nexperiments:\n",
        "\nexternal_runs:\n  smollm2-135m:\n    toolace:\n      released-x: hf:org/released\n"
        "\nexperiments:\n",
    )
    config = tmp_path / "config.yaml"
    config.write_text(text)
    proc = subprocess.run(
        [SNAKEMAKE, "-n", "--forceall", "--quiet", "rules", "all", "--configfile", str(config)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", proc.stdout.split("Job stats:")[1], re.M))
    assert counts["prepare_external"] == "1"
    assert counts["eval_general"] == str(1 + 2 + 2 + 1) and counts["eval_task"] == str(1 + 2 + 1)
    out = _dry_run(tmp_path, text, "results/tables/smollm2-135m/toolace/forgetting.csv")
    assert "resources/external/smollm2-135m/released-x" in out
    assert "results/eval/smollm2-135m/released-x/general.json" in out
    assert "results/eval/smollm2-135m/released-x/task.json" in out


def test_a_run_name_of_another_kind_is_refused_as_an_external_run(tmp_path):
    default = (ROOT / "config" / "config.yaml").read_text()
    text = default.replace(
        "\nexperiments:\n",
        "\nexternal_runs:\n  smollm2-135m:\n    toolace:\n      toolace-full: hf:org/x\n"
        "\nexperiments:\n",
    )
    config = tmp_path / "config.yaml"
    config.write_text(text)
    proc = subprocess.run(
        [SNAKEMAKE, "-n", "all", "--configfile", str(config)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "external_runs.smollm2-135m.toolace.toolace-full" in proc.stdout + proc.stderr


def test_an_imported_selection_replaces_the_computed_one_and_is_trained_on(tmp_path):
    published = tmp_path / "pos_q10.json"
    published.write_text("[[0]]")
    default = (ROOT / "config" / "config.yaml").read_text()
    assert "\nselect:\n" in default
    text = default.replace(
        "\nselect:\n",
        f"\nselect:\n  imports:\n    smollm2-135m:\n      layer_balanced_low_q10: {published}\n",
    )
    out = _dry_run(
        tmp_path, text, "results/train/smollm2-135m/toolace/loki_q10/trainable_params.json"
    )
    jobs = re.findall(r"^rule (\w+):\n(?:    .*\n)*?    output: (.*)$", out, flags=re.M)
    rules = {rule for rule, _ in jobs}
    assert "import_selection" in rules and "select" not in rules and "kva" not in rules
    assert str(published) in out
    # another model's or another q's selection is still computed from kva.h5
    out = _dry_run(tmp_path, text, "results/select/smollm2-135m/layer_balanced_low_q5.json")
    assert "rule select:" in out and "import_selection" not in out


def test_a_compare_dataset_plans_its_kva_and_the_overlap(tmp_path):
    default = (ROOT / "config" / "config.yaml").read_text()
    assert "\n  steps: 7\n" in default
    text = default.replace(
        "\n  steps: 7\n",
        "\n  steps: 7\n  compare_dataset:\n    source: data/mmlu/mmlu_mini.jsonl\n"
        "    max_per_subject: 1\n",
    )
    out = _dry_run(tmp_path, text, "all")
    assert "results/select/smollm2-135m/dataset_overlap.csv" in out
    assert "results/kva/smollm2-135m/compare/shards/0.h5" in out
    assert "rule kva_compare_gather:" in out
    assert "dataset_overlap.csv" not in _dry_run(tmp_path, default, "all")  # only when set


def test_long_jobs_tell_the_console_which_log_to_follow():
    """Snakemake sends a job's stderr (its progress bars) to its log file; each long job's
    message, printed when the job starts, names that file to `tail -f`."""
    proc = subprocess.run(
        [SNAKEMAKE, "-n", "all", "--forceall"], cwd=ROOT, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    for log in ("prepare_model/smollm2-135m.log", "kva/smollm2-135m/0.log",
                "train/smollm2-135m/toolace/loki_q10.log", "eval_general/smollm2-135m/base.log",
                "eval_task/smollm2-135m/base.log"):  # fmt: skip
        assert f"tail -f logs/{log}" in out


def test_a_config_extending_the_default_plans_the_default_with_its_changes(tmp_path):
    """`extends: config/config.yaml` (relative to the working directory here) keeps the
    default's model, data and stages; the user's experiments replace the default's."""
    user = tmp_path / "mine.yaml"
    user.write_text(
        "extends: config/config.yaml\ntraining:\n  learning_rate: 0.0005\n"
        "experiments:\n  smollm2-135m:\n    toolace: [loki_q10]\n"
    )
    counts = plan("--configfile", str(user))
    assert counts["prepare_model"] == 1 and counts["kva"] == 2
    assert counts["train"] == 1 and counts["tables"] == 1


def test_a_task_of_your_own_goes_through_the_whole_plan():
    """config/example_task.yaml: an alpaca task named cities, no code of its own; base and
    both runs are evaluated on it, and it gets its tables and trade-off figure."""
    counts = plan("--configfile", "config/example_task.yaml")
    assert counts["train"] == 2 and counts["eval_general"] == 1 + 2
    assert counts["eval_task"] == 1 + 2 and counts["tables"] == counts["tradeoff"] == 1
    assert "suppress" not in counts


def test_a_sharegpt_task_with_a_hyphenated_name_plans_its_runs_and_tables(tmp_path):
    data = tmp_path / "chats.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, '
                    '{"role": "assistant", "content": "hello"}]}\n')  # fmt: skip
    text = (
        "extends: config/config.yaml\n"
        "tasks:\n  my-chat.v2:\n    train:\n"
        f"      source: {data}\n      format: sharegpt\n"
        "      columns: {messages: messages}\n"
        "      tags: {role_tag: role, content_tag: content, user_tag: user, "
        "assistant_tag: assistant}\n"
        "experiments:\n  smollm2-135m:\n    my-chat.v2: [loki_q10]\n"
    )
    out = _dry_run(tmp_path, text, "all")
    assert "results/train/smollm2-135m/my-chat.v2/loki_q10/merged" in out
    assert "results/eval/smollm2-135m/my-chat.v2-loki_q10/task.json" in out
    assert "results/tables/smollm2-135m/my-chat.v2/task.md" in out
    assert "results/figures/smollm2-135m/my-chat.v2/tradeoff.png" in out


def test_a_prompts_file_to_protect_is_an_input_of_every_kva_shard(tmp_path):
    """kva.dataset of the user's own (format prompts): each shard reads the file as an input
    (editing it redoes the KVA); a missing one stops the plan, naming its key, also where the
    shards already exist (as a missing input alone Snakemake would gather the old shards); an
    lm-eval task by name plans without a file."""
    own = (
        "extends: config/config.yaml\nkva:\n  dataset:\n"
        "    source: data/example_task/protect.jsonl\n    format: prompts\n"
    )
    assert "rule kva_gather:" in _dry_run(tmp_path, own, "all")
    config = tmp_path / "missing.yaml"
    config.write_text(own.replace("protect.jsonl", "no_such_file.jsonl"))
    proc = subprocess.run(
        [SNAKEMAKE, "-n", "--forceall", "results/kva/smollm2-135m/kva.h5", "--configfile",
         str(config)], cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert (
        "kva.dataset.source: data/example_task/no_such_file.jsonl does not exist"
        in proc.stdout + proc.stderr
    )
    task = own.replace("data/example_task/protect.jsonl", "local:hellaswag").replace(
        "format: prompts", "format: lm_eval"
    )
    assert "rule kva_gather:" in _dry_run(tmp_path, task, "all")
