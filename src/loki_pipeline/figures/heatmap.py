"""Figures 2-5: where the high- and low-contribution nodes sit, layer by node index.

For every prompt the ``q``% of all ``L x D`` nodes with the largest (smallest) attribution are
taken, as in the global strategies' counting step; a cell's colour is the share of those
(prompt, node) picks that fall in it, per node: ``density = picks in bin / (prompts * bin
width)``, on a log scale. The upper map (red) shows high-contribution nodes, the lower (blue)
low-contribution ones; the paper's finding is that both concentrate in the same layers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from loki_pipeline.select.strategies import DEFAULT_CHUNK_SIZE
from loki_pipeline.settings import schema_default

#: density bins per layer (the config schema's ``select.heatmap_bins``)
HEATMAP_BINS: int = schema_default("select.heatmap_bins")


def heatmap_density(counts: np.ndarray, num_samples: int, bins: int) -> np.ndarray:
    """``[bins, L]`` mean pick rate per node of each node-index bin (rows: node bins)."""
    layers, nodes = counts.shape
    width = math.ceil(nodes / bins)
    padded = np.zeros((layers, width * math.ceil(nodes / width)), dtype=np.float64)
    padded[:, :nodes] = counts
    sizes = np.full(padded.shape[1] // width, width, dtype=np.float64)
    sizes[-1] = nodes - width * (len(sizes) - 1)  # the last bin may be narrower
    per_bin = padded.reshape(layers, -1, width).sum(-1) / sizes
    return (per_bin / num_samples).T


#: What a reader takes from the two panels, printed under the figure (the report's caption,
#: workflow/report/select_heatmap.rst, says the same): that they look alike is the finding.
HEATMAP_CAPTION = (
    "Two panels alike is the LoKI paper's finding: the nodes that matter most (red) and least\n"
    "(blue) to the model's knowledge concentrate in the same layers. Compare the columns\n"
    "(layers): where the same layers are dark in both, this model shows it too. A global pick\n"
    "would take most nodes from those layers, so LoKI takes a quota from every layer."
)


def plot_kva_heatmap(
    high_counts: np.ndarray,
    low_counts: np.ndarray,
    *,
    num_samples: int,
    model: str,
    q: float,
    paths: Sequence[str | os.PathLike],
    bins: int = HEATMAP_BINS,
    attributed: str | None = None,
) -> None:
    """Draw the stacked red (high) / blue (low) heatmaps and save them to ``paths``;
    ``attributed`` names the prompt set in the title (``MMLU (114 prompts)``)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    from loki_pipeline.figures.common import PAPER_RC, save_figure

    layers, nodes = high_counts.shape
    bins = max(1, min(bins, nodes))
    width = math.ceil(nodes / bins)
    with plt.rc_context(PAPER_RC):
        fig, axes = plt.subplots(2, 1, figsize=(7.0, 7.0), sharex=True, constrained_layout=True)
        panels = (
            (high_counts, "Reds", "high-contribution nodes", "largest"),
            (low_counts, "Blues", "low-contribution nodes", "smallest"),
        )
        for ax, (counts, cmap, what, end) in zip(axes, panels, strict=True):
            density = heatmap_density(counts, num_samples, bins)
            positive = density[density > 0]
            shown = np.ma.masked_less_equal(density, 0)
            norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if positive.size else None
            image = ax.imshow(
                shown, aspect="auto", origin="lower", cmap=cmap, norm=norm,
                extent=(-0.5, layers - 0.5, 0, density.shape[0] * width), interpolation="nearest",
            )  # fmt: skip
            ax.set_facecolor("white")
            ax.set_ylim(0, nodes)
            ax.set_ylabel(f"node index (bins of {width})")
            ax.set_title(f"{model}: {what} ({q:g}% {end} attributions per prompt)")
            bar = fig.colorbar(image, ax=ax, pad=0.01)
            bar.set_label("pick rate per node (log)")
        step = max(1, round(layers / 16))
        axes[-1].set_xticks(range(0, layers, step))
        axes[-1].set_xlabel("layer")
        on = attributed or f"{num_samples} prompts"
        fig.suptitle(f"KVA of {model} on {on}, q = {q:g}%", fontsize=10)
        fig.supxlabel(HEATMAP_CAPTION, fontsize=8, ha="left", x=0.02, multialignment="left")
        save_figure(fig, paths)


def draw_kva_heatmap(
    kva_path: str | os.PathLike,
    q: float,
    paths: Sequence[str | os.PathLike],
    *,
    bins: int = HEATMAP_BINS,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    model: str | None = None,
) -> None:
    """Count the per-prompt top/bottom ``q``% over all nodes in one pass of ``kva.h5`` and draw."""
    from loki_pipeline.kva.kva_file import inspect_kva
    from loki_pipeline.select.strategies import count_nodes

    info = inspect_kva(kva_path)
    counts = count_nodes(
        kva_path, q, ("global_high", "global_low"), chunk_size=chunk_size, progress=True
    )
    plot_kva_heatmap(
        counts["global_high"], counts["global_low"], num_samples=info.num_samples,
        model=model or info.model, q=q, paths=paths, bins=bins, attributed=info.attributed(),
    )  # fmt: skip
