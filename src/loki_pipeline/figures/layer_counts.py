"""Per-layer counts of the nodes the global strategies select (the G-H / G-L ablation).

The layer-balanced strategy gives every layer ``k_l`` nodes; the global ones share one quota
``T`` over all layers, so some layers get far more than ``k_l`` and others none. The dashed line
marks ``k_l``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np


def plot_global_layer_counts(
    high: Sequence[Sequence[int]],
    low: Sequence[Sequence[int]],
    *,
    model: str,
    q: float,
    nodes_per_layer: int,
    paths: Sequence[str | os.PathLike],
    attributed: str | None = None,
) -> None:
    """Grouped bars: selected nodes per layer for ``global_high`` (red) and ``global_low``
    (blue); ``attributed`` names the prompt set of their KVA in the title."""
    import matplotlib.pyplot as plt

    from loki_pipeline.figures.common import PAPER_RC, save_figure
    from loki_pipeline.select.naming import nodes_per_layer_quota

    layers = len(high)
    x = np.arange(layers)
    with plt.rc_context(PAPER_RC):
        fig, ax = plt.subplots(figsize=(7.0, 2.8), constrained_layout=True)
        ax.bar(x - 0.2, [len(p) for p in high], 0.4, color="#c0392b", label="global high (G-H)")
        ax.bar(x + 0.2, [len(p) for p in low], 0.4, color="#2e6fb0", label="global low (G-L)")
        k = nodes_per_layer_quota(q, nodes_per_layer)
        ax.axhline(k, color="black", linestyle="--", linewidth=1,
                   label=f"layer-balanced share $k_l$ = {k}")  # fmt: skip
        ax.set_xlim(-0.7, layers - 0.3)
        ax.set_xticks(range(0, layers, max(1, round(layers / 16))))
        ax.set_xlabel("layer")
        ax.set_ylabel("selected nodes")
        title = f"{model}: nodes per layer under the global strategies (q = {q:g}%)"
        ax.set_title(title + (f"\nKVA on {attributed}" if attributed else ""))
        ax.legend(loc="upper left", frameon=False, ncols=3)
        ax.set_ylim(0, max(max(len(p) for p in high), max(len(p) for p in low), k) * 1.25)
        save_figure(fig, paths)


def draw_global_layer_counts(
    high_json: str | os.PathLike,
    low_json: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    *,
    kva_path: str | os.PathLike | None = None,
) -> None:
    """Read the ``global_high``/``global_low`` selection files and draw their per-layer counts;
    ``kva_path``: the KVA file they were selected from, named in the title."""
    from loki_pipeline.errors import LokiInputError
    from loki_pipeline.kva.kva_file import kva_attributed
    from loki_pipeline.select.selection_file import read_selection

    high, low = read_selection(high_json), read_selection(low_json)
    for doc, path in ((high, high_json), (low, low_json)):
        if "nodes_per_layer" not in doc or "q" not in doc:
            raise LokiInputError(f"{path}: needs 'q' and 'nodes_per_layer' (a pipeline selection)")
    plot_global_layer_counts(
        high["positions"], low["positions"], model=str(high.get("model", "")), q=float(high["q"]),
        nodes_per_layer=int(high["nodes_per_layer"]), paths=paths,
        attributed=None if kva_path is None else kva_attributed(kva_path),
    )  # fmt: skip
