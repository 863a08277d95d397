# Reporting: forgetting and task tables per (model, task), the trade-off figure, and the
# suppression ablations' forgetting table. A table's rows: base, the task's training runs, then
# its external runs (released models of config `external_runs`, marked ‡). Suppression runs
# are not trained on a task, so they get their own table (results/tables/{model}/suppress/)
# and appear in every task's trade-off figure as vertical lines at their Avg.
#
# Every score carries its item count and a 95% interval (Wilson per benchmark and per share of
# items, fixed-seed bootstrap for Avg, BFCL means and ranking metrics; loki_pipeline.report).
# The per-item scores are read beside the declared inputs: lm-eval's samples_<task>.jsonl in
# each run's lm_eval/ (written with general.json by eval_general) and the items of task.json.
# A run that shows no learning on its task is flagged in the task table and the figure, and
# named by a warning in the rule's log.
#
# The report shows each table as its HTML rendering (caption, cells, notes): Snakemake's report
# displays HTML in place but offers a CSV only as a download, so the CSVs are listed under
# "Table files" for that.


rule tables:
    input:
        unpack(table_inputs),
    output:
        forgetting=report(
            results_path("tables/{model}/{task}/forgetting.csv"),
            caption="../report/forgetting_table.rst",
            category="Table files",
            subcategory="{model} {task}",
        ),
        forgetting_md=results_path("tables/{model}/{task}/forgetting.md"),
        forgetting_tex=results_path("tables/{model}/{task}/forgetting.tex"),
        forgetting_html=report(
            results_path("tables/{model}/{task}/forgetting.html"),
            caption="../report/forgetting_table.rst",
            category="Tables",
            subcategory="{model} {task}",
        ),
        task=report(
            results_path("tables/{model}/{task}/task.csv"),
            caption="../report/task_table.rst",
            category="Table files",
            subcategory="{model} {task}",
        ),
        task_md=results_path("tables/{model}/{task}/task.md"),
        task_tex=results_path("tables/{model}/{task}/task.tex"),
        task_html=report(
            results_path("tables/{model}/{task}/task.html"),
            caption="../report/task_table.rst",
            category="Tables",
            subcategory="{model} {task}",
        ),
    log:
        log_path("tables/{model}/{task}.log"),
    benchmark:
        results_path("benchmarks/tables/{model}/{task}.tsv")
    conda:
        "../../envs/loki.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        runs=lambda wc: task_runs(wc.model, wc.task),
        # the training runs, whose trainable_params.json are the `params` input, in its order
        trained=lambda wc: [
            trained_run(wc.task, m) for m in task_methods(wc.model, wc.task)
        ],
        external=lambda wc: external_runs(config, wc.model, wc.task),
        reference=lambda wc: table_reference(config, wc.model, wc.task),
    script:
        "../scripts/tables.py"


# The paper's comparison: each LoKI run against each baseline (full, PEFT) of the task, the paired
# difference in Avg, Avg drop and the primary task score with 95% intervals and a verdict
# (loki_pipeline.report.comparison); the onsuccess summary prints the verdicts.
rule comparison:
    input:
        unpack(eval_inputs),
    output:
        csv=report(
            results_path("tables/{model}/{task}/comparison.csv"),
            caption="../report/comparison_table.rst",
            category="Table files",
            subcategory="{model} {task}",
        ),
        md=results_path("tables/{model}/{task}/comparison.md"),
        tex=results_path("tables/{model}/{task}/comparison.tex"),
        html=report(
            results_path("tables/{model}/{task}/comparison.html"),
            caption="../report/comparison_table.rst",
            category="Tables",
            subcategory="{model} {task}",
        ),
    log:
        log_path("comparison/{model}/{task}.log"),
    benchmark:
        results_path("benchmarks/comparison/{model}/{task}.tsv")
    conda:
        "../../envs/loki.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        runs=lambda wc: task_runs(wc.model, wc.task),
    script:
        "../scripts/comparison.py"


rule tradeoff:
    input:
        unpack(table_inputs),
        suppress=lambda wc: [
            results_path(f"eval/{wc.model}/{r}/general.json")
            for r in suppress_runs(wc.model)
        ],
    output:
        report(
            results_path("figures/{model}/{task}/tradeoff.png"),
            caption="../report/tradeoff.rst",
            category="Trade-off",
            subcategory="{model}",
        ),
    log:
        log_path("tradeoff/{model}/{task}.log"),
    benchmark:
        results_path("benchmarks/tradeoff/{model}/{task}.tsv")
    conda:
        "../../envs/loki.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        runs=lambda wc: task_runs(wc.model, wc.task),
        suppress_runs=lambda wc: suppress_runs(wc.model),
    script:
        "../scripts/tradeoff.py"


rule suppress_table:
    input:
        base=results_path("eval/{model}/base/general.json"),
        general=lambda wc: [
            results_path(f"eval/{wc.model}/{r}/general.json")
            for r in suppress_runs(wc.model)
        ],
    output:
        csv=report(
            results_path("tables/{model}/suppress/forgetting.csv"),
            caption="../report/suppress_table.rst",
            category="Table files",
            subcategory="{model} suppression",
        ),
        md=results_path("tables/{model}/suppress/forgetting.md"),
        tex=results_path("tables/{model}/suppress/forgetting.tex"),
        html=report(
            results_path("tables/{model}/suppress/forgetting.html"),
            caption="../report/suppress_table.rst",
            category="Tables",
            subcategory="{model} suppression",
        ),
    log:
        log_path("suppress_table/{model}.log"),
    benchmark:
        results_path("benchmarks/suppress_table/{model}.tsv")
    conda:
        "../../envs/loki.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        runs=lambda wc: suppress_runs(wc.model),
    script:
        "../scripts/suppress_table.py"
