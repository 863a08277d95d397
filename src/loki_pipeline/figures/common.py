"""Shared figure plumbing: a headless backend, paper-sized fonts, atomic PNG + PDF output."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are drawn on headless cluster nodes too

import matplotlib.pyplot as plt  # noqa: E402

from loki_pipeline.io import atomic_path  # noqa: E402

#: Sized for a two-column paper: 7 in wide at 9-10 pt stays legible when printed.
PAPER_RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.dpi": 100,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,  # editable text in the PDF
}


def save_figure(fig: plt.Figure, paths: Sequence[str | os.PathLike]) -> None:
    """Save ``fig`` to every path (format from its extension), each atomically, then close it."""
    for path in paths:
        fmt = Path(path).suffix.lstrip(".").lower()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt)
    plt.close(fig)
