"""Assemble one model's tables and trade-off figure from the evaluation files the rules leave.

Run names (``loki_pipeline.runs``): ``base``, ``{task}-{method}`` (training runs),
``suppress-{strategy}_q{q}`` (suppression ablations) and external runs. Suppression runs are
task-independent (nothing is trained), so they get
their own forgetting table (``results/tables/{model}/suppress/forgetting.*``) and appear in
each task's trade-off figure as vertical lines at their ``Avg``, not in the task tables.

Every score carries its item count and 95% interval (``report.intervals``); a run that shows no
learning on its task (``report.learning.learning_check``) is marked in the task table and the
figure, and named in a warning of this module's logger (the log of the rule that builds it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loki_pipeline.errors import LokiInputError
from loki_pipeline.evaluate.sft import KIND as SFT_KIND
from loki_pipeline.report.forgetting import (
    BENCHMARKS,
    LEFT_OUT,
    ItemScores,
    forgetting_avg,
    forgetting_avg_interval,
    forgetting_drop,
    forgetting_rows,
    load_item_scores,
    load_scores,
    unstable_benchmarks,
)
from loki_pipeline.report.intervals import RESAMPLES, SEED, Estimate
from loki_pipeline.report.learning import (
    LearningCheck,
    learning_check,
    reranker_qrels,
    task_estimates,
)
from loki_pipeline.report.tables import (
    MARKER,
    forgetting_columns,
    metric_scales,
    noise_note,
    read_json,
    task_rows,
    write_table,
)
from loki_pipeline.runs import BASE, trained_run

PathLike = str | os.PathLike
log = logging.getLogger(__name__)

BOOTSTRAP = f"{RESAMPLES} resamples, seed {SEED}"

#: Marker of an external run (a released model evaluated as it is) in Markdown and LaTeX.
EXTERNAL_MARKER = "‡"


def mark_external(
    rows: list[dict[str, Any]], columns: list, external: Mapping[str, str] | None
) -> tuple[list, list[str]]:
    """Mark the rows of external runs: ``‡`` after the name, their source in an ``external``
    column (so the CSV says it too), and the footnote; (columns, notes) unchanged without any."""
    names = [r["run"] for r in rows if r["run"] in (external or {})]
    if not names:
        return columns, []
    for row in rows:
        if row["run"] in names:
            row["external"] = external[row["run"]]
            row[MARKER] = f"{row.get(MARKER) or ''} {EXTERNAL_MARKER}".strip()
    note = (
        f"{EXTERNAL_MARKER} external: a released model evaluated as it is, not trained by this "
        "pipeline (its source in column external): " + ", ".join(names) + "."
    )
    return [*columns, ("external", "external", "")], [note]


def general_scores(general: Mapping[str, PathLike]) -> tuple[dict[str, float], dict[str, dict]]:
    if BASE not in general:
        raise LokiInputError(f"the general evaluations must include the {BASE!r} run")
    base = load_scores(general[BASE])
    runs = {
        name: load_scores(path, tasks=list(base)) for name, path in general.items() if name != BASE
    }
    return base, runs


def general_items(
    general: Mapping[str, PathLike], tasks: list[str]
) -> dict[str, dict[str, ItemScores]]:
    return {name: load_item_scores(path, tasks=tasks) for name, path in general.items()}


def trainable_params(path: PathLike | None) -> int | None:
    """``trainable_params`` of a run's ``trainable_params.json`` (as ``loki train`` writes it;
    None when the run has none)."""
    if path is None:
        return None
    value = read_json(path).get("trainable_params")
    return int(value) if value is not None else None


def task_summary(path: PathLike, task: str) -> dict[str, Any]:
    """The ``task`` summary in a ``task.json`` (``{"tasks": {task: ...}}``, or one summary)."""
    obj = read_json(path)
    if "tasks" in obj:
        if task not in obj["tasks"]:
            raise LokiInputError(
                f"{path}: no results for task {task!r} (has {sorted(obj['tasks'])})"
            )
        return obj["tasks"][task]
    return obj


def _full_reference(task: str, runs: Mapping[str, Any]) -> str | None:
    name = trained_run(task, "full")
    return name if task == "reranker" and name in runs else None


def task_evidence(
    task: str, task_results: Mapping[str, PathLike]
) -> tuple[dict[str, dict], dict[str, dict[str, Estimate]], dict[str, LearningCheck]]:
    """(summaries, estimates, learning checks) of every run's task results; a warning names
    each run that shows no learning, or whose learning cannot be tested."""
    results = {name: task_summary(path, task) for name, path in task_results.items()}
    base = results.get(BASE)
    qrels = reranker_qrels(base or next(iter(results.values()))) if task == "reranker" else None
    estimates = {
        name: task_estimates(task, result, qrels=qrels, where=str(task_results[name]))
        for name, result in results.items()
    }
    checks: dict[str, LearningCheck] = {}
    if base is None:
        log.warning("no base task results for %s: learning is not tested", task)
        return results, estimates, checks
    for name, result in results.items():
        if name == BASE:
            continue
        check = learning_check(task, base, result, qrels=qrels, where=str(task_results[name]))
        checks[name] = check
        if check.learned is False:
            log.warning("run %s shows no learning on %s: %s", name, task, check.reason)
        elif check.learned is None:
            log.warning("run %s: whether it learned %s is unknown: %s", name, task, check.reason)
    return results, estimates, checks


def forgetting_notes(rows: list[dict[str, Any]], columns: list) -> list[str]:
    """Notes under a forgetting table: how the intervals are made, what is within noise."""
    benchmarks = [key for key, _, fmt in columns if fmt == "ci" and key != "Avg"]
    if not any(r.get(f"{k}_n") for r in rows for k in benchmarks):
        return ["No per-item scores or item counts were found: the scores have no n or interval."]
    notes = [
        "Scores in percent with their 95% Wilson interval over the n items. Avg and Avg drop: "
        f"95% percentile bootstrap interval ({BOOTSTRAP}), resampling the items of each "
        "benchmark with the same item indices for base and run where both scored the same "
        "items (paired); their n is the number of items over the benchmarks they average. "
        "Avg drop (points): 100/N Σ (S_o − S_t), the average drop in points over all N "
        "benchmarks, defined at any base score."
    ]
    left_out = left_out_note(rows)
    if left_out:
        notes.append(left_out)
    noise = noise_note(rows, columns, benchmarks)
    if noise:
        notes.append(noise)
    zero = [
        r["run"] for r in rows if r.get("Avg_lo") is not None and r["Avg_lo"] <= 0 <= r["Avg_hi"]
    ]
    if zero:
        notes.append(
            "Avg interval contains 0, so forgetting is not distinguishable from none at this n: "
            + ", ".join(zero)
            + "."
        )
    undefined = [
        r["run"]
        for r in rows
        if r.get("run") != BASE and r.get("Avg") is not None and r.get("Avg_lo") is None
    ]
    if undefined:
        notes.append(
            "Avg without an interval: in over half of the bootstrap resamples some benchmark's "
            "base score is 0, where the relative drop (S_o - S_t) / S_o is undefined; with so "
            "few items Avg is not evidence either way: " + ", ".join(undefined) + "."
        )
    return notes


def left_out_note(rows: list[dict[str, Any]]) -> str | None:
    """The note naming the benchmarks left out of the relative Avg, and why (``LEFT_OUT``)."""
    left_out = next((r[LEFT_OUT] for r in rows if r.get(LEFT_OUT)), None)
    if not left_out:
        return None
    reasons = "; ".join(f"{BENCHMARKS.get(t, t)}: {why}" for t, why in left_out.items())
    every = all(r.get("Avg") is None for r in rows)
    avg = (
        "so no relative Avg is given (every benchmark is left out)"
        if every
        else "so Avg averages the other benchmarks only"
    )
    return (
        "Left out of the relative Avg, whose term (S_o − S_t)/S_o is undefined at a base score "
        f"of 0 and decided by one item near it ({reasons}): {avg}. Their scores stay in the "
        "table, and Avg drop (points) includes them."
    )


#: How a task of the user's is scored, under its task table.
SFT_HOW = (
    "held-out rows of the task's own data, never trained on. exact_match (%): the share of rows "
    "whose greedy answer equals the reference (both whitespace-stripped), 95% Wilson interval "
    "over the n rows; loss: the token-weighted mean cross-entropy (nats) of the reference "
    "answers, perplexity = exp(loss), 95% percentile bootstrap interval over rows "
    f"({BOOTSTRAP}; perplexity: exp of the loss interval); lm-eval metrics "
    "<task>/<metric,filter>: Wilson over documents where each scores 0 or 1, else a bootstrap "
    "over documents"
)


def task_notes(
    task: str,
    rows: list[dict[str, Any]],
    columns: list,
    primary: str | None,
    *,
    kind: str | None = None,
    lower_is_better: bool = False,
) -> list[str]:
    """Notes under a task table: intervals, the learned flag (†) and what is within noise.
    ``kind``: the summaries' (``sft`` for a task of the user's; default the task's name)."""
    kind = kind or task
    if kind == SFT_KIND:
        how = SFT_HOW
    elif kind == "toolace":
        how = (
            "BFCL V3 scores (overall = mean of non_live, live, multi_turn): a share of items (a "
            "category, live, relevance_detection): 95% Wilson interval over the n items; a mean "
            "of category accuracies (non_live, multi_turn, irrelevance_detection, overall): "
            "Wilson at its effective n, p(1 - p)/Var"
        )
    else:
        how = (
            "ranking metrics over the n queries: 95% Wilson interval where every query scores "
            f"0 or 1, else a bootstrap over queries ({BOOTSTRAP})"
        )
    outputs = (
        "the greedy answers; for loss and perplexity every row's loss"
        if kind == SFT_KIND
        else "BFCL: the generated text; reranker: the candidate order of every query"
    )
    side = "below" if lower_is_better else "above"
    units = "Scores in percent where they are shares" if kind == SFT_KIND else "Scores in percent"
    notes = [
        f"{units}; {how}. Δ vs base: paired bootstrap ({BOOTSTRAP}).",
        f"† learned = no: the run's task outputs equal base's on every item ({outputs}), or the "
        f"paired 95% bootstrap interval of Δ{primary} vs base (the same items resampled for "
        f"both runs) does not lie {side} 0, so no learning is shown at this n. unknown: no "
        "per-item records to test.",
    ]
    metrics = [key for key, _, fmt in columns if fmt == "ci"]
    noise = noise_note(rows, columns, metrics)
    if noise:
        notes.append(noise)
    return notes


def build_task_tables(
    task: str,
    general: Mapping[str, PathLike],
    task_results: Mapping[str, PathLike],
    params: Mapping[str, PathLike | None],
    out_dir: PathLike,
    *,
    caption_model: str = "",
    reference: str | None = None,
    external: Mapping[str, str] | None = None,
) -> list[Path]:
    """``out_dir/forgetting.{csv,md,tex,html}`` and ``out_dir/task.{csv,md,tex,html}`` for one
    task.

    ``reference``: the run the task table is also relative to (None: the reranker's full
    fine-tune when present); ``external``: external run -> source, rows marked ‡.
    """
    base, runs = general_scores(general)
    counts = {name: trainable_params(p) for name, p in params.items()}
    items = general_items(general, list(base))
    rows = forgetting_rows(base, runs, params=counts, items=items)
    columns, external_notes = mark_external(rows, forgetting_columns(list(base)), external)
    out_dir = Path(out_dir)
    written = write_table(
        rows,
        columns,
        out_dir / "forgetting",
        caption=f"Forgetting on {caption_model} ({task}): general scores (%) with n and 95% "
        "intervals, Avg, 100/N Σ (S_o − S_t)/S_o against base, and Avg drop, 100/N Σ "
        "(S_o − S_t) in points.",
        notes=forgetting_notes(rows, columns) + external_notes,
    )
    results, estimates, checks = task_evidence(task, task_results)
    if reference is None:
        reference = _full_reference(task, results)
    t_rows, t_cols = task_rows(
        task, results, reference=reference, estimates=estimates, checks=checks
    )
    t_cols, t_external_notes = mark_external(t_rows, t_cols, external)
    first = next(iter(results.values()))
    primary = first.get("primary_metric")
    written += write_table(
        t_rows,
        t_cols,
        out_dir / "task",
        caption=f"Task performance on {caption_model} ({task}) (%), with n, 95% intervals and "
        "whether each run learned beyond noise (†: no).",
        notes=task_notes(
            task,
            t_rows,
            t_cols,
            primary,
            kind=first.get("kind"),
            lower_is_better=primary in (first.get("lower_is_better") or []),
        )  # fmt: skip
        + t_external_notes,
    )
    return written


def build_suppress_table(general: Mapping[str, PathLike], out_dir: PathLike) -> list[Path]:
    """``out_dir/forgetting.*`` for the suppression ablations (the LoKI paper's Table 5)."""
    base, runs = general_scores(general)
    rows = forgetting_rows(base, runs, items=general_items(general, list(base)))
    columns = forgetting_columns(list(base))
    return write_table(
        rows,
        columns,
        Path(out_dir) / "forgetting",
        caption="Suppression ablations: general scores (%) with n and 95% intervals, and Avg "
        "forgetting against base.",
        notes=forgetting_notes(rows, columns),
    )


def build_tradeoff(
    task: str,
    general: Mapping[str, PathLike],
    task_results: Mapping[str, PathLike],
    out_path: PathLike,
    *,
    suppress_general: Mapping[str, PathLike] | None = None,
    title: str = "",
) -> Path:
    """The trade-off figure of one task: every run with a task score and 95% intervals both
    ways, runs that did not learn hollow; suppressions as lines with their Avg interval."""
    from loki_pipeline.figures.tradeoff import plot_tradeoff

    base, runs = general_scores(general)
    tasks = list(base)
    items = general_items(general, tasks)
    results, estimates, checks = task_evidence(task, task_results)
    first = next(iter(results.values()))
    primary = first["primary_metric"]
    scale = metric_scales(first).get(primary, 100)  # a loss is plotted as it is, not in %
    # x: the table's Avg, over the benchmarks it keeps; the drop in points when it keeps none
    left_out = unstable_benchmarks(base, items[BASE], tasks)
    kept = [t for t in tasks if t not in left_out]
    over, point = (kept, forgetting_avg) if kept else (tasks, forgetting_drop)
    x_label = "forgetting Avg (%)" if kept else "forgetting: Avg drop (points)"
    if left_out and kept:
        x_label += " without " + ", ".join(BENCHMARKS.get(t, t) for t in left_out)
    points, intervals = {}, {}
    for name, result in results.items():
        score = estimates[name].get(primary) or Estimate(float(result["metrics"][primary]))
        if name == BASE:
            avg, x_interval = 0.0, None
        else:
            avg = point(base, runs[name], over)
            x_interval = forgetting_avg_interval(
                items[BASE], items.get(name, {}), over, relative=bool(kept)
            )
        y_interval = None if score.lo is None else (scale * score.lo, scale * score.hi)
        points[name] = (avg, scale * float(result["metrics"][primary]))
        intervals[name] = (x_interval, y_interval)
    vlines, vline_intervals = {}, {}
    for name, path in (suppress_general or {}).items():
        scores = load_scores(path, tasks=tasks)
        vlines[name] = point(base, scores, over)
        vline_intervals[name] = forgetting_avg_interval(
            items[BASE], load_item_scores(path, tasks=tasks), over, relative=bool(kept)
        )
    return plot_tradeoff(
        points,
        out_path,
        task=task,
        score_label=f"{task}: {primary}"
        + (" (%)" if scale == 100 else "")
        + (", lower is better" if primary in (first.get("lower_is_better") or []) else ""),
        title=title,
        vlines=vlines,
        intervals=intervals,
        no_learning=[name for name, c in checks.items() if c.learned is False],
        vline_intervals=vline_intervals,
        x_label=x_label,
    )
