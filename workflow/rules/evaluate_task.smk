# Evaluating, task performance of one run's checkpoint: BFCL AST accuracy (toolace), reranking
# (reranker), the held-out split and lm-eval tasks of a task of the user's (loki_pipeline.tasks.registry).
# A training run "{task}-{method}" is evaluated on its own task; "base" (and any other run) on
# every task the config trains for the model, loading the model once.


rule eval_task:
    input:
        model=lambda wc: run_model_dir(wc.model, wc.run),
    output:
        results_path("eval/{model}/{run}/task.json"),
    log:
        log_path("eval_task/{model}/{run}.log"),
    benchmark:
        results_path("benchmarks/eval_task/{model}/{run}.tsv")
    conda:
        "../../envs/loki.yaml"
    threads: config["evaluate"]["task"]["threads"]
    resources:
        mem_mb=plan_mem_mb("eval_task"),
        gpu=1 if config["device"] == "cuda" else 0,
    params:  # the script's TaskEvalSettings; a changed value reruns the job
        tasks=lambda wc: run_tasks(wc.model, wc.run),
        eval_configs=lambda wc: task_eval_configs(wc.model, wc.run),
        run_config=config["evaluate"]["task"],
        device=config["device"],
    message:
        "Task evaluation of {input.model} -> {output}; progress: tail -f {log}"
    script:
        "../scripts/eval_task.py"
