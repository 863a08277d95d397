"""The paper's figures: KVA heatmaps (Figures 2-5), per-layer counts of the global strategies,
and the stability of a selection. Matplotlib with the Agg backend; PNG and PDF."""

from loki_pipeline.figures.heatmap import heatmap_density, plot_kva_heatmap
from loki_pipeline.figures.layer_counts import plot_global_layer_counts
from loki_pipeline.figures.stability import plot_stability

__all__ = ["heatmap_density", "plot_global_layer_counts", "plot_kva_heatmap", "plot_stability"]
