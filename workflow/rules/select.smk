# Selecting: attributions -> trainable nodes (any strategy, any q), and the paper's figures.

from loki_pipeline.select.naming import Q_PATTERN, STRATEGIES, format_q

SELECT = config.get("select", {})


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


rule select:
    input:
        "results/kva/{model}/kva.h5",
    output:
        "results/select/{model}/{strategy}_q{q}.json",
    log:
        "logs/select/{model}/{strategy}_q{q}.log",
    benchmark:
        "results/benchmarks/select/{model}/{strategy}_q{q}.tsv"
    params:
        q=lambda wc: float(wc.q),
        chunk_size=SELECT.get("chunk_size", 128),
    threads: 1
    resources:
        mem_mb=2000,
    script:
        "../scripts/select.py"


rule heatmap:
    input:
        "results/kva/{model}/kva.h5",
    output:
        png=report(
            "results/figures/{model}/kva_heatmap_q{q}.png",
            caption="../report/select_heatmap.rst",
            category="Selecting",
            subcategory="{model}",
        ),
        pdf="results/figures/{model}/kva_heatmap_q{q}.pdf",
    log:
        "logs/heatmap/{model}/q{q}.log",
    benchmark:
        "results/benchmarks/heatmap/{model}/q{q}.tsv"
    params:
        q=lambda wc: float(wc.q),
        bins=SELECT.get("heatmap_bins", 64),
        chunk_size=SELECT.get("chunk_size", 128),
    threads: 1
    resources:
        mem_mb=2000,
    script:
        "../scripts/heatmap.py"


rule global_layer_counts:
    input:
        high="results/select/{model}/global_high_q{q}.json",
        low="results/select/{model}/global_low_q{q}.json",
    output:
        png=report(
            "results/figures/{model}/global_layer_counts_q{q}.png",
            caption="../report/select_layer_counts.rst",
            category="Selecting",
            subcategory="{model}",
        ),
        pdf="results/figures/{model}/global_layer_counts_q{q}.pdf",
    log:
        "logs/global_layer_counts/{model}/q{q}.log",
    benchmark:
        "results/benchmarks/global_layer_counts/{model}/q{q}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    script:
        "../scripts/select_layer_counts.py"


rule stability:
    input:
        "results/kva/{model}/kva.h5",
    output:
        csv=report(
            "results/select/{model}/stability.csv",
            caption="../report/select_stability_table.rst",
            category="Selecting",
            subcategory="{model}",
        ),
        png=report(
            "results/figures/{model}/stability.png",
            caption="../report/select_stability.rst",
            category="Selecting",
            subcategory="{model}",
        ),
        pdf="results/figures/{model}/stability.pdf",
    log:
        "logs/stability/{model}.log",
    benchmark:
        "results/benchmarks/stability/{model}.tsv"
    params:
        q=lambda wc: SELECT.get("stability", {}).get("q", heatmap_q(wc.model)),
        seeds=SELECT.get("stability", {}).get("seeds", [0, 1, 2]),
        q_list=SELECT.get("stability", {}).get("q_list", [1, 5, 20]),
        chunk_size=SELECT.get("chunk_size", 128),
    threads: 1
    resources:
        mem_mb=2000,
    script:
        "../scripts/stability.py"


rule figures:
    input:
        figure_targets(),
