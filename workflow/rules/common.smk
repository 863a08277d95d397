# Shared by every rule: config validation, wildcard constraints and input functions.
# No science here; that lives in src/loki_pipeline.

from snakemake.utils import validate

validate(config, schema="../schemas/config.schema.yaml")


MODELS = list(config["models"])


wildcard_constraints:
    model="|".join(MODELS) if MODELS else "[^/]+",
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
# run) or "suppress-{strategy}_q{q}" (a suppression ablation, PAPER.md Table 5).
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
