"""The loss curve draws an exponential moving average over the raw per-step loss, with its span
in the legend."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pytest

from loki_pipeline.train.loss_figure import loss_figure, plot_loss, smooth_loss, smoothing_span


def _ema_oracle(values, span):
    """Weighted mean of all values so far, weight (1 - a)^(age) with a = 2 / (span + 1)."""
    a = 2 / (span + 1)
    out = []
    for t in range(len(values)):
        weights = [(1 - a) ** (t - i) for i in range(t + 1)]
        out.append(sum(w * v for w, v in zip(weights, values[: t + 1], strict=True)) / sum(weights))
    return out


@pytest.mark.parametrize("span", [1, 3, 10])
def test_smooth_loss_is_the_debiased_ema(span):
    values = [2.0, 1.5, 1.9, 1.2, 1.4, 0.9, 1.1, 0.8]
    assert smooth_loss(values, span) == pytest.approx(_ema_oracle(values, span))
    assert smooth_loss(values, 1) == values  # span 1: no smoothing


def test_smooth_loss_skips_nan_steps():
    out = smooth_loss([math.nan, 2.0, math.nan, 1.0], 3)
    assert math.isnan(out[0]) and out[1:] == pytest.approx([2.0, 2.0, (0.5 * 2 + 1) / 1.5])


def test_span_is_a_tenth_of_the_steps_within_1_and_50():
    assert [smoothing_span(n) for n in (1, 16, 100, 300, 5000)] == [1, 2, 10, 30, 50]


def test_loss_plot_draws_the_ema_over_the_raw_line(tmp_path):
    rows = [{"step": i + 1, "loss": 2.0 - 0.01 * i + (0.3 if i % 2 else -0.3)} for i in range(100)]
    fig = loss_figure(rows, "toolace / loki_q10")
    raw, smooth = fig.axes[0].get_lines()
    assert list(raw.get_ydata()) == [r["loss"] for r in rows]
    assert list(smooth.get_ydata()) == pytest.approx(_ema_oracle([r["loss"] for r in rows], 10))
    assert smooth.get_zorder() >= raw.get_zorder() and smooth.get_linewidth() > raw.get_linewidth()
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["per step", "EMA, span 10 steps"]
    plt.close(fig)
    plot_loss(rows, tmp_path / "loss.png", "t")
    assert (tmp_path / "loss.png").stat().st_size > 0
