"""The trade-off figure: forgetting ``Avg`` (x, lower is better) against task score (y).

One labelled point per run, coloured by family (base, LoKI, LoKI ablations such as the global
selections, PEFT/full baselines), so the low-forgetting, high-score corner is read at a glance.
Runs without a task score (the suppression ablations S-H/S-L, which are not trained on the task)
are drawn as dashed vertical lines at their ``Avg``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

FAMILY_COLOURS = {
    "base": "#555555",
    "loki": "#1f77b4",
    "ablation": "#9467bd",
    "baseline": "#d62728",
    "suppress": "#ff7f0e",
}


def run_family(run: str) -> str:
    """``base``, ``loki`` (loki_*), ``ablation`` (global/high selections), ``suppress`` or ``baseline``."""
    method = run.split("-", 1)[1] if "-" in run else run
    if run == "base":
        return "base"
    if run.startswith("suppress-"):
        return "suppress"
    if "global" in method or "high" in method:
        return "ablation"
    if method.startswith("loki"):
        return "loki"
    return "baseline"


def plot_tradeoff(
    points: Mapping[str, tuple[float, float]],
    out_path: str | os.PathLike,
    *,
    score_label: str,
    title: str = "",
    vlines: Mapping[str, float] | None = None,
) -> Path:
    """Save the figure (PNG or PDF by suffix) atomically; ``points``: run -> (Avg, score in %)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from loki_pipeline.io import atomic_path

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=150)
    seen: set[str] = set()
    for run, (avg, score) in points.items():
        family = run_family(run)
        ax.scatter(avg, score, s=50, color=FAMILY_COLOURS[family], zorder=3,
                   label=None if family in seen else family)  # fmt: skip
        seen.add(family)
        ax.annotate(run, (avg, score), textcoords="offset points", xytext=(5, 4), fontsize=7)
    for run, avg in (vlines or {}).items():
        ax.axvline(avg, color=FAMILY_COLOURS["suppress"], linestyle="--", linewidth=1,
                   label=None if "suppress" in seen else "suppress (no task score)")  # fmt: skip
        seen.add("suppress")
        ax.annotate(run, (avg, 0.02), xycoords=("data", "axes fraction"), rotation=90, fontsize=7)
    ax.axvline(0, color="#bbbbbb", linewidth=0.8, zorder=1)
    ax.set_xlabel("forgetting Avg (%)  ← less forgetting")
    ax.set_ylabel(score_label)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format=out_path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return out_path
