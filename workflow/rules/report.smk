# Reporting: forgetting and task tables per (model, task), the trade-off figure, and the
# suppression ablations' forgetting table. Suppression runs are not trained on a task, so they
# get their own table (results/tables/{model}/suppress/) and appear in every task's trade-off
# figure as vertical lines at their Avg.


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
    if not any(r.name == "train" for r in workflow.rules):
        return targets  # the tables need the training runs; nothing to tabulate without them
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


rule tables:
    input:
        unpack(table_inputs),
    output:
        forgetting=report(
            "results/tables/{model}/{task}/forgetting.csv",
            caption="../report/forgetting_table.rst",
            category="Tables",
            subcategory="{model} {task}",
        ),
        forgetting_md="results/tables/{model}/{task}/forgetting.md",
        forgetting_tex="results/tables/{model}/{task}/forgetting.tex",
        task=report(
            "results/tables/{model}/{task}/task.csv",
            caption="../report/task_table.rst",
            category="Tables",
            subcategory="{model} {task}",
        ),
        task_md="results/tables/{model}/{task}/task.md",
        task_tex="results/tables/{model}/{task}/task.tex",
    log:
        "logs/tables/{model}/{task}.log",
    benchmark:
        "results/benchmarks/tables/{model}/{task}.tsv"
    conda:
        "../../envs/loki.yaml"
    wildcard_constraints:
        task="toolace|reranker",
    threads: 1
    resources:
        mem_mb=1000,
    params:
        runs=lambda wc: task_runs(wc.model, wc.task),
    script:
        "../scripts/tables.py"


rule tradeoff:
    input:
        unpack(table_inputs),
        suppress=lambda wc: [
            f"results/eval/{wc.model}/{r}/general.json"
            for r in suppress_runs(wc.model)
        ],
    output:
        report(
            "results/figures/{model}/{task}/tradeoff.png",
            caption="../report/tradeoff.rst",
            category="Trade-off",
            subcategory="{model}",
        ),
    log:
        "logs/tradeoff/{model}/{task}.log",
    benchmark:
        "results/benchmarks/tradeoff/{model}/{task}.tsv"
    conda:
        "../../envs/loki.yaml"
    wildcard_constraints:
        task="toolace|reranker",
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
        base="results/eval/{model}/base/general.json",
        general=lambda wc: [
            f"results/eval/{wc.model}/{r}/general.json"
            for r in suppress_runs(wc.model)
        ],
    output:
        csv=report(
            "results/tables/{model}/suppress/forgetting.csv",
            caption="../report/suppress_table.rst",
            category="Tables",
            subcategory="{model} suppression",
        ),
        md="results/tables/{model}/suppress/forgetting.md",
        tex="results/tables/{model}/suppress/forgetting.tex",
    log:
        "logs/suppress_table/{model}.log",
    benchmark:
        "results/benchmarks/suppress_table/{model}.tsv"
    conda:
        "../../envs/loki.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    params:
        runs=lambda wc: suppress_runs(wc.model),
    script:
        "../scripts/suppress_table.py"
