# Shared by every rule: config validation, wildcard constraints and input functions.
# No science here; that lives in src/loki_pipeline.

import pathlib
import re

from loki_pipeline.models.sources import source_fingerprint
from loki_pipeline.schemas import validate_config

# The package's schema (src/loki_pipeline/schemas/config.schema.yaml), the one `loki train
# --config` checks too: an unknown key, a wrong type or a name that is not a plain folder name
# fails here, naming its key, before any job is planned; then every default is filled in.
# (A workflow importing this one as a module with skip_validation: true checks its own.)
if not workflow.modifier.skip_validation:
    validate_config(config)


MODELS = list(config["models"])


wildcard_constraints:
    model="|".join(map(re.escape, MODELS)) if MODELS else "[^/]+",
    shard=r"\d+",
    run=r"[^/]+",


def model_dir(wildcards):
    return f"resources/models/{wildcards.model}"


def kva_shards():
    return range(config["kva"]["shards"])


def all_targets():
    """Every file the config asks for; `rule all` depends on these."""
    targets = []
    targets += expand("results/kva/{model}/kva.h5", model=MODELS)
    targets += select_targets()  # selections, figures, stability (below)
    targets += train_targets()  # training runs of `experiments` (train.smk)
    targets += report_targets()  # tables and trade-off figures (report.smk)
    return targets


# A "run" names one model to evaluate: "base" (the untuned model), "{task}-{method}" (a training
# run) or "suppress-{strategy}_q{q}" (a suppression ablation, the LoKI paper's Table 5).
def run_model_dir(model, run):
    """Directory of the plain Hugging Face checkpoint a run's evaluation loads."""
    if run == "base":
        return f"resources/models/{model}"
    kind, _, rest = run.partition("-")
    if kind == "suppress":
        return f"results/suppress/{model}/{rest}"
    return f"results/train/{model}/{kind}/{rest}/merged"


def training_runs(model):
    """(task, method) pairs the config asks to train for a model."""
    tasks = config.get("experiments", {}).get(model, {})
    return [(task, method) for task, methods in tasks.items() for method in methods]


# Selecting (select.smk): selection files, figure targets, honest {strategy} and {q} wildcards.
from loki_pipeline.select.naming import Q_PATTERN, STRATEGIES, format_q

SELECT = config.get("select", {})  # the Selecting stage (select.smk)


wildcard_constraints:
    strategy="|".join(STRATEGIES),
    q=Q_PATTERN,


def selection_file(model, strategy, q):
    """The selection JSON for (model, strategy, q); other stages ask for selections through it."""
    return f"results/select/{model}/{strategy}_q{format_q(q)}.json"


def heatmap_q(model):
    """The q of a model's figures: one number for all models, or a per-model mapping."""
    value = SELECT.get("heatmap_q", 10)
    return value.get(model, 10) if isinstance(value, dict) else value


def figure_targets():
    """Heatmaps, global per-layer counts and stability for every model (the `figures` target)."""
    targets = []
    for model in MODELS:
        q = format_q(heatmap_q(model))
        for stem in (f"kva_heatmap_q{q}", f"global_layer_counts_q{q}", "stability"):
            targets += expand("results/figures/{model}/{stem}.{ext}", model=model, stem=stem,
                              ext=["png", "pdf"])  # fmt: skip
        targets.append(f"results/select/{model}/stability.csv")
    return targets


def select_targets():
    """Every selection the config asks for (strategies x q) plus the figures."""
    targets = [
        selection_file(model, strategy, q)
        for model in MODELS
        for strategy in SELECT.get("strategies", STRATEGIES)
        for q in SELECT.get("q", [1, 5, 10])
    ]
    return targets + figure_targets()


# Implanting (train.smk): what each training run reads, and the runs the config asks for.
from loki_pipeline.train.methods import parse_method


wildcard_constraints:
    task="toolace|reranker",
    method=r"[a-z0-9][a-z0-9_.]*",


def train_inputs(wildcards):
    """Base model, the task's local data file (if any) and, for LoKI methods, the selection."""
    inputs = {"model": f"resources/models/{wildcards.model}"}
    source = config["tasks"].get(wildcards.task, {}).get("train", {}).get("source")
    if source and not str(source).startswith("hf:"):
        inputs["data"] = source
    method = parse_method(wildcards.method)
    if method.needs_selection:
        inputs["selection"] = selection_file(wildcards.model, method.strategy, method.q)
    return inputs


def train_targets():
    """Every training run's directory files the config asks for."""
    return [
        f"results/train/{model}/{task}/{method}/trainable_params.json"
        for model in MODELS
        for task, method in training_runs(model)
    ]


# Evaluating (evaluate.smk): the tasks a run's task.json reports.
def run_tasks(model, run):
    """Tasks whose performance task.json of (model, run) reports."""
    kind = run.partition("-")[0]
    if kind in config.get("tasks", {}) and run != "base":
        return [kind]
    trained = sorted({task for task, _ in training_runs(model)})
    return trained or sorted(config.get("tasks", {}))


# Reporting (report.smk): the runs of each table, suppression runs, table inputs and targets.
def task_runs(model, task):
    """Runs of one task's tables: the untuned base first, then the task's training runs."""
    return ["base"] + [f"{task}-{m}" for t, m in training_runs(model) if t == task]


def suppress_runs(model):
    """Suppression ablation run names from config `suppress`: a list of {strategy, q} or a
    mapping {strategies: [...], q: [...]} (empty when the key is absent)."""
    spec = config.get("suppress") or []
    if isinstance(spec, dict):
        spec = [
            {"strategy": s, "q": q}
            for s in spec.get("strategies", [])
            for q in spec.get("q", [])
        ]
    return [f"suppress-{item['strategy']}_q{format_q(item['q'])}" for item in spec]


def table_inputs(wildcards):
    runs = task_runs(wildcards.model, wildcards.task)
    return {
        "general": [f"results/eval/{wildcards.model}/{r}/general.json" for r in runs],
        "task": [f"results/eval/{wildcards.model}/{r}/task.json" for r in runs],
        "params": [
            f"results/train/{wildcards.model}/{wildcards.task}/{r.split('-', 1)[1]}/trainable_params.json"
            for r in runs[1:]
        ],
    }


def report_targets():
    """Tables and trade-off figures of every trained task, and the suppression table."""
    targets = []
    for model in MODELS:
        for task in sorted({t for t, _ in training_runs(model)}):
            for stem in ("forgetting", "task"):
                targets += expand(
                    "results/tables/{model}/{task}/{stem}.{ext}",
                    model=model, task=task, stem=stem, ext=["csv", "md", "tex"],
                )  # fmt: skip
            targets.append(f"results/figures/{model}/{task}/tradeoff.png")
        if suppress_runs(model):
            targets += expand(
                "results/tables/{model}/suppress/forgetting.{ext}",
                model=model, ext=["csv", "md", "tex"],
            )  # fmt: skip
    return targets


def eval_general_data(wildcards):
    """The local items the run reads (none for source 'hub'), so editing them re-runs it."""
    general = config.get("evaluate", {}).get("general", {})
    if general.get("source", "local") != "local":
        return []
    root = general.get("data_dir", "data/lm_eval")
    tasks = general.get("tasks", [])
    return sorted(
        str(p) for task in tasks for p in pathlib.Path(root, task).glob("*.jsonl")
    )
