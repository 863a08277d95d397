"""The paper's figures: KVA heatmaps (Figures 2-5), per-layer counts of the global strategies,
the stability of a selection, and the forgetting/task trade-off of a task's runs. Matplotlib with
the Agg backend; PNG and PDF."""

from loki_pipeline.figures.heatmap import heatmap_density, plot_kva_heatmap
from loki_pipeline.figures.layer_counts import plot_global_layer_counts
from loki_pipeline.figures.stability import plot_stability
from loki_pipeline.figures.tradeoff import plot_tradeoff

__all__ = [
    "heatmap_density",
    "plot_global_layer_counts",
    "plot_kva_heatmap",
    "plot_stability",
    "plot_tradeoff",
]
