# Analysing: Knowledge Vector Attribution, scattered over shards and gathered into one file.


rule kva:
    input:
        unpack(kva_inputs),
    output:
        results_path("kva/{model}/shards/{shard}.h5"),
    log:
        log_path("kva/{model}/{shard}.log"),
    benchmark:
        results_path("benchmarks/kva/{model}/{shard}.tsv")
    conda:
        "../../envs/loki.yaml"
    threads: config["kva"]["threads"]
    resources:
        mem_mb=plan_mem_mb("kva"),
        gpu=1 if config["device"] == "cuda" else 0,
    # The script builds KVASettings from these. Snakemake records their values with each output
    # and reruns a job whose values changed, so they stay as they were (num_shards too).
    params:
        kva=lambda wc: kva_settings(wc.model),
        device=config["device"],
        num_shards=config["kva"]["shards"],
    message:
        "KVA shard {wildcards.shard} of {wildcards.model} -> {output}; progress: tail -f {log}"
    script:
        "../scripts/kva.py"


# kva.compare_dataset: the same KVA on a second prompt set (the dataset_overlap target).
rule kva_compare:
    input:
        unpack(lambda wc: kva_inputs(wc, compare=True)),
    output:
        results_path("kva/{model}/compare/shards/{shard}.h5"),
    log:
        log_path("kva_compare/{model}/{shard}.log"),
    benchmark:
        results_path("benchmarks/kva_compare/{model}/{shard}.tsv")
    conda:
        "../../envs/loki.yaml"
    threads: config["kva"]["threads"]
    resources:
        mem_mb=plan_mem_mb("kva_compare"),
        gpu=1 if config["device"] == "cuda" else 0,
    params:
        kva=lambda wc: kva_settings(wc.model, compare=True),
        device=config["device"],
        num_shards=config["kva"]["shards"],
    script:
        "../scripts/kva.py"


rule kva_compare_gather:
    input:
        lambda wc: expand(
            results_path("kva/{model}/compare/shards/{shard}.h5"),
            model=wc.model,
            shard=kva_shards(),
        ),
    output:
        results_path("kva/{model}/compare/kva.h5"),
    log:
        log_path("kva_compare_gather/{model}.log"),
    conda:
        "../../envs/loki.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    script:
        "../scripts/kva_gather.py"


rule kva_gather:
    input:
        lambda wc: expand(
            results_path("kva/{model}/shards/{shard}.h5"),
            model=wc.model,
            shard=kva_shards(),
        ),
    output:
        results_path("kva/{model}/kva.h5"),
    log:
        log_path("kva_gather/{model}.log"),
    benchmark:
        results_path("benchmarks/kva_gather/{model}.tsv")
    conda:
        "../../envs/loki.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    script:
        "../scripts/kva_gather.py"
