# Shared by every rule: config validation, wildcard constraints and input functions.
# No science here; that lives in src/loki_pipeline.

from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")


MODELS = list(config["models"])


wildcard_constraints:
    model="|".join(MODELS) if MODELS else "[^/]+",
    shard=r"\d+",


def model_dir(wildcards):
    return f"resources/models/{wildcards.model}"


def kva_shards():
    return range(config["kva"]["shards"])


def all_targets():
    """Every file the config asks for; `rule all` depends on these."""
    targets = []
    targets += expand("results/kva/{model}/kva.h5", model=MODELS)
    return targets
