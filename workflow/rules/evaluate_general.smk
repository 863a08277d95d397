# Evaluating, general abilities: lm-eval's six benchmarks on one run's checkpoint (base, a
# training run or a suppression ablation; see run_model_dir in common.smk).


rule eval_general:
    input:
        model=lambda wc: run_model_dir(wc.model, wc.run),
        data=eval_general_data,
    output:
        summary=results_path("eval/{model}/{run}/general.json"),
        lm_eval=results_path("eval/{model}/{run}/lm_eval/results.json"),
    log:
        log_path("eval_general/{model}/{run}.log"),
    benchmark:
        results_path("benchmarks/eval_general/{model}/{run}.tsv")
    conda:
        "../../envs/loki.yaml"
    threads: config["evaluate"]["general"]["threads"]
    resources:
        mem_mb=plan_mem_mb("eval_general"),
        gpu=1 if config["device"] == "cuda" else 0,
    params:  # the script's GeneralEvalSettings; a changed value reruns the job
        general=config["evaluate"]["general"],
        device=config["device"],
    message:
        "General benchmarks of {input.model} -> {output.summary}; progress: tail -f {log}"
    script:
        "../scripts/eval_general.py"
