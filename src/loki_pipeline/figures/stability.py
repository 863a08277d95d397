"""Stability figure: overlap of each partial selection with the all-prompt LoKI selection.

The table is computed by ``select.stability`` (which draws nothing); ``stability_report`` runs
the whole step: the table, its CSV and this figure.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

KIND_COLOURS = {"random_half": "#4c72b0", "subject_group": "#55a868", "q": "#8172b2"}
KIND_NAMES = {
    "random_half": "random half of the prompts",
    "subject_group": "one subject group only",
    "q": "another q (nestedness)",
}


def plot_stability(
    rows: Sequence[dict[str, Any]],
    *,
    model: str,
    paths: Sequence[str | os.PathLike],
    attributed: str | None = None,
) -> None:
    """Horizontal bars of ``overlap`` (%) per comparison; ticks mark the chance level;
    ``attributed`` names the prompt set in the title."""
    import matplotlib.pyplot as plt

    from loki_pipeline.figures.common import PAPER_RC, save_figure

    rows = list(rows)
    q = rows[0]["reference_q"] if rows else float("nan")
    with plt.rc_context(PAPER_RC):
        fig, ax = plt.subplots(
            figsize=(7.0, 1.3 + 0.28 * max(len(rows), 1)), constrained_layout=True
        )
        y = list(range(len(rows)))[::-1]
        for yi, row in zip(y, rows, strict=True):
            ax.barh(yi, 100 * row["overlap"], color=KIND_COLOURS.get(row["kind"], "grey"))
            ax.text(100 * row["overlap"] + 0.8, yi, f"{100 * row['overlap']:.1f}%", va="center",
                    fontsize=8)  # fmt: skip
            ax.plot([100 * row["chance_overlap"]] * 2, [yi - 0.4, yi + 0.4], color="black",
                    linewidth=1.2)  # fmt: skip
        ax.set_yticks(y, [f"{r['label']} (n={r['samples']})" for r in rows])
        ax.set_xlim(0, 110)
        ax.set_xlabel("share of selected nodes in common with the all-prompt selection (%)")
        title = f"{model}: stability of the LoKI selection (q = {q:g}%); black tick = chance"
        ax.set_title(title + (f"\nKVA on {attributed}" if attributed else ""))
        handles = [
            plt.Rectangle((0, 0), 1, 1, color=KIND_COLOURS[k]) for k in KIND_NAMES
            if any(r["kind"] == k for r in rows)
        ]  # fmt: skip
        names = [KIND_NAMES[k] for k in KIND_NAMES if any(r["kind"] == k for r in rows)]
        # below the axes: bars run up to 100% and a legend inside would hide their labels
        ax.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=3,
                  frameon=False)  # fmt: skip
        save_figure(fig, paths)


def stability_report(
    kva_path: str | os.PathLike,
    q: float,
    csv_path: str | os.PathLike,
    figure_paths: Sequence[str | os.PathLike],
    *,
    seeds: Sequence[int] | None = None,
    q_list: Sequence[float] = (),
    chunk_size: int | None = None,
) -> list[dict[str, Any]]:
    """Compute the stability table, write its CSV and draw its figure (rule stability)."""
    from loki_pipeline.kva.kva_file import inspect_kva
    from loki_pipeline.select.stability import stability_table, write_stability_csv
    from loki_pipeline.select.strategies import DEFAULT_CHUNK_SIZE

    defaults = {} if seeds is None else {"seeds": seeds}  # None: the schema's seeds
    rows = stability_table(
        kva_path,
        q,
        q_list=q_list,
        chunk_size=DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size,
        progress=True,
        **defaults,
    )
    write_stability_csv(csv_path, rows)
    info = inspect_kva(kva_path)
    plot_stability(rows, model=info.model, paths=figure_paths, attributed=info.attributed())
    return rows
