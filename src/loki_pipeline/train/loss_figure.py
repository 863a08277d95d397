"""The loss figure of a training run (``loss.png``): the per-step loss under its moving average,
and the validation loss where examples were held out."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any


def smoothing_span(steps: int) -> int:
    """EMA span of the loss curve: a tenth of the steps, from 1 (no smoothing) to 50. Our
    choice (the paper shows no loss curves): short runs keep their shape, long runs lose the
    per-batch noise that hides the trend."""
    return max(1, min(50, round(steps / 10)))


def smooth_loss(values: Sequence[float], span: int) -> list[float]:
    """Exponential moving average with weight ``2 / (span + 1)`` on the newest value, debiased
    (each point divides by the sum of its weights), so the curve starts at the first loss
    rather than at 0; NaN losses are skipped."""
    alpha = 2.0 / (span + 1)
    out, num, den = [], 0.0, 0.0
    for value in values:
        if not math.isnan(value):
            num = (1 - alpha) * num + alpha * value
            den = (1 - alpha) * den + alpha
        out.append(num / den if den else math.nan)
    return out


def loss_figure(rows: Sequence[dict[str, Any]], title: str):
    """The loss curve: the raw per-step loss, faint, under its EMA (span in the legend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    losses = [float(r["loss"]) for r in rows]
    span = smoothing_span(len(losses))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(steps, losses, lw=0.9, color="tab:blue", alpha=0.35, label="per step")
    if span > 1:
        ax.plot(steps, smooth_loss(losses, span), lw=1.6, color="tab:blue",
                label=f"EMA, span {span} steps")  # fmt: skip
    val = [(r["step"], r["val_loss"]) for r in rows if r.get("val_loss") not in (None, "")]
    if val:
        ax.plot(*zip(*val, strict=True), "o-", ms=3, lw=1, color="tab:orange",
                label="validation (held out)")  # fmt: skip
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (assistant tokens)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def plot_loss(rows: Sequence[dict[str, Any]], path: str | os.PathLike, title: str) -> None:
    fig = loss_figure(rows, title)  # selects the Agg backend before pyplot is imported
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=120)
    plt.close(fig)
