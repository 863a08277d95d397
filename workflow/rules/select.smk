# Selecting: attributions -> trainable nodes (any strategy, any q), and the paper's figures.

from loki_pipeline.select.settings import SelectSettings

SELECTING = SelectSettings.from_config(config)  # the config's select block


rule import_selection:
    input:
        selection=lambda wc: imported_selection(wc.imported)[1],
        model=lambda wc: f"resources/models/{imported_selection(wc.imported)[0]}",
    output:
        results_path("select/{imported}.json"),
    log:
        log_path("import_selection/{imported}.log"),
    wildcard_constraints:
        # only the imported "{model}/{stem}" (a pattern that matches nothing when none are)
        imported="|".join(map(re.escape, IMPORTED)) or "(?!)",
    conda:
        "../../envs/loki.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    script:
        "../scripts/import_selection.py"


ruleorder: import_selection > select


rule select:
    input:
        results_path("kva/{model}/kva.h5"),
    output:
        results_path("select/{model}/{strategy}_q{q}.json"),
    log:
        log_path("select/{model}/{strategy}_q{q}.log"),
    benchmark:
        results_path("benchmarks/select/{model}/{strategy}_q{q}.tsv")
    conda:
        "../../envs/loki.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        q=lambda wc: float(wc.q),
        chunk_size=SELECTING.chunk_size,
        # only the global strategies' selections depend on it
        tie_break=lambda wc: (
            SELECTING.tie_break if wc.strategy.startswith("global") else None
        ),
    script:
        "../scripts/select.py"


rule heatmap:
    input:
        results_path("kva/{model}/kva.h5"),
    output:
        png=report(
            results_path("figures/{model}/kva_heatmap_q{q}.png"),
            caption="../report/select_heatmap.rst",
            category="Selecting",
            subcategory="{model}",
        ),
        pdf=results_path("figures/{model}/kva_heatmap_q{q}.pdf"),
    log:
        log_path("heatmap/{model}/q{q}.log"),
    benchmark:
        results_path("benchmarks/heatmap/{model}/q{q}.tsv")
    conda:
        "../../envs/loki.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        q=lambda wc: float(wc.q),
        bins=SELECTING.heatmap_bins,
        chunk_size=SELECTING.chunk_size,
    script:
        "../scripts/heatmap.py"


rule global_layer_counts:
    input:
        high=results_path("select/{model}/global_high_q{q}.json"),
        low=results_path("select/{model}/global_low_q{q}.json"),
        kva=results_path("kva/{model}/kva.h5"),  # its prompt set is named in the title
    output:
        png=report(
            results_path("figures/{model}/global_layer_counts_q{q}.png"),
            caption="../report/select_layer_counts.rst",
            category="Selecting",
            subcategory="{model}",
        ),
        pdf=results_path("figures/{model}/global_layer_counts_q{q}.pdf"),
    log:
        log_path("global_layer_counts/{model}/q{q}.log"),
    benchmark:
        results_path("benchmarks/global_layer_counts/{model}/q{q}.tsv")
    conda:
        "../../envs/loki.yaml"
    threads: 1
    resources:
        mem_mb=1000,
    script:
        "../scripts/select_layer_counts.py"


rule stability:
    input:
        results_path("kva/{model}/kva.h5"),
    output:
        csv=report(
            results_path("select/{model}/stability.csv"),
            caption="../report/select_stability_table.rst",
            category="Selecting",
            subcategory="{model}",
        ),
        png=report(
            results_path("figures/{model}/stability.png"),
            caption="../report/select_stability.rst",
            category="Selecting",
            subcategory="{model}",
        ),
        pdf=results_path("figures/{model}/stability.pdf"),
    log:
        log_path("stability/{model}.log"),
    benchmark:
        results_path("benchmarks/stability/{model}.tsv")
    conda:
        "../../envs/loki.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        q=SELECTING.stability_q,
        seeds=SELECTING.stability_seeds,
        q_list=SELECTING.stability_q_list,
        chunk_size=SELECTING.chunk_size,
    script:
        "../scripts/stability.py"


rule dataset_overlap:
    input:
        reference=results_path("kva/{model}/kva.h5"),
        compare=results_path("kva/{model}/compare/kva.h5"),
    output:
        results_path("select/{model}/dataset_overlap.csv"),
    log:
        log_path("dataset_overlap/{model}.log"),
    conda:
        "../../envs/loki.yaml"
    threads: 1
    resources:
        mem_mb=2000,
    params:
        q=SELECTING.stability_q,
        label=lambda wc: kva_settings(wc.model, compare=True)["dataset"]["source"],
        chunk_size=SELECTING.chunk_size,
    script:
        "../scripts/dataset_overlap.py"


rule figures:
    input:
        figure_targets(),
