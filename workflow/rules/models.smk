# Turn a model spec from the config into a plain Hugging Face checkpoint on disk.


rule prepare_model:
    output:
        directory("resources/models/{model}"),
    log:
        log_path("prepare_model/{model}.log"),
    benchmark:
        results_path("benchmarks/prepare_model/{model}.tsv")
    conda:
        "../../envs/loki.yaml"
    threads: 1
    resources:
        mem_mb=8000,
    params:
        source=lambda wc: config["models"][wc.model]["source"],
        trust_remote_code=lambda wc: config["models"][wc.model]["trust_remote_code"],
        # a local checkpoint changed in place is prepared again (and so is all that uses it)
        content=lambda wc: source_fingerprint(config["models"][wc.model]["source"]),
    message:
        "Preparing {output} (download, conversion); progress: tail -f {log}"
    script:
        "../scripts/prepare_model.py"


# A released model evaluated as a row of a task's tables (config `external_runs`), prepared
# exactly like a base model.
rule prepare_external:
    output:
        directory("resources/external/{model}/{run}"),
    log:
        log_path("prepare_external/{model}/{run}.log"),
    benchmark:
        results_path("benchmarks/prepare_external/{model}/{run}.tsv")
    conda:
        "../../envs/loki.yaml"
    threads: 1
    resources:
        mem_mb=8000,
    params:
        source=lambda wc: external_runs(config, wc.model)[wc.run],
        trust_remote_code=False,
        content=lambda wc: source_fingerprint(external_runs(config, wc.model)[wc.run]),
    script:
        "../scripts/prepare_model.py"


# A target under a model folder of a model the config does not define: an error naming the
# defined models, where Snakemake alone would say "No rule to produce" (common.smk).
rule undefined_model:
    input:
        refuse_undefined_model,
    output:
        "{folder}/{name}/{rest}",
    wildcard_constraints:
        folder="|".join(
            [re.escape(results_path(f)) for f in STAGE_FOLDERS] + ["resources/models"]
        ),
        name=NOT_A_MODEL,
        rest=".+",
