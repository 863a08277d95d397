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
    targets += select_targets()  # selections, figures, stability (select.smk)
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
