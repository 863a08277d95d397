# Implanting: train every (task, method) the config's `experiments` asks for, and the
# suppression ablations (the paper's Table 5). Methods are parsed by the package's one registry.


rule train:
    input:
        unpack(train_inputs),
    output:
        adapter=directory(results_path("train/{model}/{task}/{method}/adapter")),
        merged=directory(results_path("train/{model}/{task}/{method}/merged")),
        train_log=results_path("train/{model}/{task}/{method}/train_log.csv"),
        loss=report(
            results_path("train/{model}/{task}/{method}/loss.png"),
            caption="../report/train_loss.rst",
            category="Implanting",
            subcategory="{model} {task}",
        ),
        params=results_path("train/{model}/{task}/{method}/trainable_params.json"),
    log:
        log_path("train/{model}/{task}/{method}.log"),
    benchmark:
        results_path("benchmarks/train/{model}/{task}/{method}.tsv")
    conda:
        "../../envs/loki.yaml"
    threads: config["training"]["threads"]
    resources:
        mem_mb=plan_mem_mb("train"),
        # training.processes GPUs: one per data-parallel process (each claims its own)
        gpu=lambda wc: train_processes(wc) if config["device"] == "cuda" else 0,
    params:
        run_dir=results_path("train/{model}/{task}/{method}"),
        # outside the rule's outputs: Snakemake never deletes it, so a killed job resumes
        checkpoint_dir=results_path("train/.checkpoints/{model}/{task}/{method}"),
        # the script's TrainSettings.from_config; a changed value reruns the job
        training=config["training"],
        # tasks.<task>.train (+ the held-out split of a task of the user's); common.smk
        data=lambda wc: task_train_data(wc.task),
        device=config["device"],
        # > 1: the script runs itself under torchrun as that many processes
        processes=train_processes,
    message:
        "Training {wildcards.method} on {wildcards.task} ({wildcards.model}) -> {output.merged}; progress and loss: tail -f {log}"
    script:
        "../scripts/train.py"


rule suppress:
    input:
        model="resources/models/{model}",
        selection=results_path("select/{model}/{strategy}_q{q}.json"),
    output:
        directory(results_path("suppress/{model}/{strategy}_q{q}")),
    log:
        log_path("suppress/{model}/{strategy}_q{q}.log"),
    benchmark:
        results_path("benchmarks/suppress/{model}/{strategy}_q{q}.tsv")
    conda:
        "../../envs/loki.yaml"
    threads: 1
    resources:
        mem_mb=4000,
    script:
        "../scripts/suppress.py"
