"""The trade-off figure: forgetting ``Avg`` (x, lower is better) against task score (y).

One labelled point per run, coloured by family (base, LoKI, LoKI ablations on another selection
such as the global ones, PEFT/full baselines, external runs), so the low-forgetting, high-score
corner is read at a glance. Families come from the parsed run names (``loki_pipeline.runs``).
Runs without a task score (the suppression ablations S-H/S-L, which are not trained on the task)
are drawn as dashed vertical lines at their ``Avg``, with a shaded band over its interval.

Each point has 95% error bars both ways where they are known (``Avg``: bootstrap over items;
score: Wilson or bootstrap, see ``report.intervals``); the x-axis caption (``bars_caption``)
names every run without one, so it never promises a bar the figure lacks. A run that shows no
learning on its task (``report.learning``) is drawn hollow and labelled "(no learning)". Labels
are placed by ``place_labels`` so that none overlaps another label or a marker.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from loki_pipeline.runs import Run, parse_run
from loki_pipeline.train.methods import DEFAULT_STRATEGY

#: (x interval, y interval) of a point; either may be None (no bar in that direction).
Interval = tuple[float, float] | None

#: Label offsets tried around a point, in points (dx, dy, horizontal alignment), nearest first;
#: each ring is tried again further out.
_OFFSETS = [
    (5, 4, "left"), (5, -11, "left"), (-5, 4, "right"), (-5, -11, "right"),
    (0, 8, "center"), (0, -16, "center"),
]  # fmt: skip

FAMILY_COLOURS = {
    "base": "#555555",
    "loki": "#1f77b4",
    "ablation": "#9467bd",
    "baseline": "#d62728",
    "suppress": "#ff7f0e",
    "external": "#2ca02c",
}


def run_family(run: Run) -> str:
    """``base``, ``suppress``, ``external``, or for a training run ``loki`` (LoKI and LoKI* on
    LoKI's selection), ``ablation`` (LoKI on another selection) or ``baseline`` (full, PEFT)."""
    if run.method is None:
        return run.kind
    if not run.method.needs_selection:
        return "baseline"
    return "loki" if run.method.strategy == DEFAULT_STRATEGY else "ablation"


def _bar(centre: float, interval: Interval) -> list[list[float]] | None:
    if interval is None:
        return None
    lo, hi = interval
    return [[max(centre - lo, 0.0)], [max(hi - centre, 0.0)]]


def _drawn_boxes(ax: Any, renderer: Any) -> list[Any]:
    """Display boxes of what a label should rather not cover: error bars (segment by segment),
    drawn lines (the suppressions' Avg) and texts already on the axes."""
    from matplotlib.collections import LineCollection
    from matplotlib.transforms import Bbox

    boxes = []
    for coll in ax.collections:
        if isinstance(coll, LineCollection):
            for seg in coll.get_segments():
                (x0, y0), (x1, y1) = coll.get_transform().transform(seg[[0, -1]])
                boxes.append(Bbox.from_extents(min(x0, x1) - 1, min(y0, y1) - 1,
                                               max(x0, x1) + 1, max(y0, y1) + 1))  # fmt: skip
    boxes += [ln.get_window_extent(renderer) for ln in ax.lines if ln.get_linestyle() != "None"]
    boxes += [t.get_window_extent(renderer) for t in ax.texts]
    return boxes


def place_labels(
    ax: Any, anchors: Sequence[tuple[float, float]], texts: Sequence[str], *, fontsize: float = 7
) -> list[Any]:
    """Annotate each anchor (data coordinates) with its text where the label overlaps no label
    placed before it and no anchor's marker, trying ``_OFFSETS`` at growing distance: first
    where it also covers no error bar, line or text, then anywhere else free; a label that fits
    nowhere goes further out with a leader line. Call it after the axes' limits and layout are
    final (it measures the labels as drawn)."""
    from matplotlib.transforms import Bbox

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    pad = 4 * fig.dpi / 72  # half a marker, in pixels
    taken = [
        Bbox.from_extents(x - pad, y - pad, x + pad, y + pad)
        for x, y in ax.transData.transform(anchors)
    ]
    soft = _drawn_boxes(ax, renderer)
    placed = []
    for (x, y), text in zip(anchors, texts, strict=True):
        chosen = None
        for avoid in (taken + soft, taken):
            for ring in (1, 2, 3, 4, 6):
                for dx, dy, ha in _OFFSETS:
                    label = ax.annotate(text, (x, y), xytext=(dx * ring, dy * ring), ha=ha,
                                        textcoords="offset points", fontsize=fontsize)  # fmt: skip
                    box = label.get_window_extent(renderer).expanded(1.04, 1.15)
                    inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
                    if inside and not any(box.overlaps(other) for other in avoid):
                        chosen = (label, box)
                        break
                    label.remove()
                if chosen:
                    break
            if chosen:
                break
        if chosen is None:  # crowded: further out, with a leader line
            label = ax.annotate(text, (x, y), xytext=(12, 14 + 10 * len(placed)), ha="left",
                                textcoords="offset points", fontsize=fontsize,
                                arrowprops={"arrowstyle": "-", "linewidth": 0.5})  # fmt: skip
            chosen = (label, label.get_window_extent(renderer))
        placed.append(chosen[0])
        taken.append(chosen[1])
    return placed


def draw_tradeoff(
    ax: Any,
    points: Mapping[str, tuple[float, float]],
    *,
    task: str,
    score_label: str,
    title: str = "",
    vlines: Mapping[str, float] | None = None,
    intervals: Mapping[str, tuple[Interval, Interval]] | None = None,
    no_learning: Collection[str] = (),
    vline_intervals: Mapping[str, Interval] | None = None,
    x_label: str = "forgetting Avg (%)",
) -> None:
    """Draw the figure on ``ax`` (see ``plot_tradeoff``); labels are placed by the caller."""
    intervals = intervals or {}
    seen: set[str] = set()
    for run, (avg, score) in points.items():
        family = run_family(parse_run(run, [task]))
        colour = FAMILY_COLOURS[family]
        x_int, y_int = intervals.get(run, (None, None))
        hollow = run in no_learning
        ax.errorbar(avg, score, xerr=_bar(avg, x_int), yerr=_bar(score, y_int), fmt="o",
                    markersize=6, color=colour, markerfacecolor="white" if hollow else colour,
                    markeredgewidth=1.4, ecolor=colour, elinewidth=0.9, capsize=2, alpha=0.9,
                    zorder=3, label=None if family in seen else family)  # fmt: skip
        seen.add(family)
    if no_learning:
        ax.scatter([], [], s=36, facecolors="white", edgecolors="#333333",
                   label="no learning (hollow)")  # fmt: skip
    for run, avg in (vlines or {}).items():
        ax.axvline(avg, color=FAMILY_COLOURS["suppress"], linestyle="--", linewidth=1,
                   label=None if "suppress" in seen else "suppress (no task score)")  # fmt: skip
        band = (vline_intervals or {}).get(run)
        if band is not None:
            ax.axvspan(*band, color=FAMILY_COLOURS["suppress"], alpha=0.08, linewidth=0)
        seen.add("suppress")
        ax.annotate(run, (avg, 0.02), xycoords=("data", "axes fraction"), rotation=90, fontsize=7)
    ax.axvline(0, color="#bbbbbb", linewidth=0.8, zorder=1)
    ax.set_xlabel(
        f"{x_label}  ← less forgetting\n"
        + bars_caption(points, intervals, task=task, vline_intervals=vline_intervals)
    )
    ax.set_ylabel(score_label)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.margins(x=0.15, y=0.12)
    # outside the axes, right: inside, "best" weighs only lines and points, and the legend
    # covered the vertical suppression lines' labels
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def bars_caption(
    points: Mapping[str, tuple[float, float]],
    intervals: Mapping[str, tuple[Interval, Interval]] | None,
    *,
    task: str,
    vline_intervals: Mapping[str, Interval] | None = None,
) -> str:
    """What the error bars are, naming every run that has none in a direction (base has no x
    bar: its Avg is 0 by definition), so the caption never promises a bar the figure lacks."""
    intervals = intervals or {}
    no_x = [r for r in points if run_family(parse_run(r, [task])) != "base"
            and intervals.get(r, (None, None))[0] is None]  # fmt: skip
    no_x += [r for r, band in (vline_intervals or {}).items() if band is None]
    no_y = [r for r in points if intervals.get(r, (None, None))[1] is None]
    if not any(v for pair in intervals.values() for v in pair) and not any(
        (vline_intervals or {}).values()
    ):
        return "no 95% intervals: no per-item scores"
    text = "bars: 95% intervals"
    if no_x:
        text += "; no x interval: " + ", ".join(no_x)
    if no_y:
        text += "; no y interval: " + ", ".join(no_y)
    return text


def point_label(run: Run, no_learning: Collection[str]) -> str:
    """A point's label: the method (the figure is one task's), "(no learning)" if flagged."""
    return f"{run.label} (no learning)" if run.name in no_learning else run.label


def plot_tradeoff(
    points: Mapping[str, tuple[float, float]],
    out_path: str | os.PathLike,
    *,
    task: str,
    no_learning: Collection[str] = (),
    **drawing: Any,
) -> Path:
    """Save the figure of one task's runs (PNG or PDF by suffix) atomically; ``points``: run ->
    (Avg, score in %); ``no_learning``: runs drawn hollow and labelled "(no learning)";
    ``drawing``: the rest of :func:`draw_tradeoff`'s keywords (``score_label``, ``title``,
    ``vlines``, ``intervals``: run -> ((Avg lo, hi), (score lo, hi)), each None for no bar,
    ``vline_intervals``)."""
    from loki_pipeline.figures.common import plt, save_figure  # the headless backend first

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=150)
    draw_tradeoff(ax, points, task=task, no_learning=no_learning, **drawing)
    fig.tight_layout()
    ax.set_xlim(ax.get_xlim())  # freeze the limits: labels are placed in the final frame
    ax.set_ylim(ax.get_ylim())
    labels = [point_label(parse_run(r, [task]), no_learning) for r in points]
    place_labels(ax, list(points.values()), labels)
    save_figure(fig, [out_path])
    return Path(out_path)
