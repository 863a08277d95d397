"""The paper's tables as CSV, Markdown and LaTeX, one row per run.

``forgetting`` table: the six general scores in percent, ``Avg`` forgetting against ``base``
(``forgetting.forgetting_avg``) and the trainable parameters. ``task`` table: every task metric
in percent, and for the reranker the change relative to the full fine-tune, as the paper's Table 3
reports it: ``Δ = 100 · (x − x_full) / x_full``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loki_pipeline.errors import LokiInputError
from loki_pipeline.io import write_text

#: (key, header, format) of a column; format is applied to numbers, None/NaN shows as "–".
Column = tuple[str, str, str]


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, fmt)
    return str(value)


def _tex_escape(text: str) -> str:
    for char, repl in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                       ("#", r"\#"), ("$", r"\$"), ("@", "@"), ("–", "--")):  # fmt: skip
        text = text.replace(char, repl)
    return text


def render_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """CSV with full-precision numbers (for re-use), empty cells for missing values."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([header for _, header, _ in columns])
    for row in rows:
        writer.writerow(["" if row.get(k) is None else row.get(k) for k, _, _ in columns])
    return out.getvalue()


def render_markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |"]
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|")
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(k), f) for k, _, f in columns) + " |")
    return "\n".join(lines) + "\n"


def render_latex(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], caption: str) -> str:
    spec = "l" + "r" * (len(columns) - 1)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{_tex_escape(caption)}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(_tex_escape(h) for _, h, _ in columns) + r" \\",
        r"\midrule",
    ]
    for row in rows:
        lines.append(" & ".join(_tex_escape(_cell(row.get(k), f)) for k, _, f in columns) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    prefix: str | os.PathLike,
    *,
    caption: str = "",
) -> list[Path]:
    """Write ``prefix.csv``, ``prefix.md`` and ``prefix.tex`` (each atomically)."""
    prefix = Path(prefix)
    outputs = []
    for suffix, text in (
        (".csv", render_csv(rows, columns)),
        (".md", render_markdown(rows, columns)),
        (".tex", render_latex(rows, columns, caption)),
    ):
        path = prefix.with_name(prefix.name + suffix)
        write_text(path, text)
        outputs.append(path)
    return outputs


def forgetting_columns(tasks: Sequence[str]) -> list[Column]:
    from loki_pipeline.report.forgetting import BENCHMARKS

    return [
        ("run", "run", ""),
        ("params", "#params", ","),
        *[(t, BENCHMARKS.get(t, t), ".2f") for t in tasks],
        ("Avg", "Avg", ".2f"),
    ]


def task_rows(
    task: str,
    results: Mapping[str, Mapping[str, Any]],
    *,
    reference: str | None = None,
) -> tuple[list[dict[str, Any]], list[Column]]:
    """Rows and columns of the task table from each run's ``task.json`` dict.

    With ``reference`` (the full fine-tune's run name, reranker), each metric also gets its
    change relative to that run, ``Δ = 100·(x − x_ref)/x_ref``.
    """
    if not results:
        raise LokiInputError(f"no task results for {task!r}")
    first = next(iter(results.values()))
    primary = first.get("primary_metric")
    metric_names = list(first["metrics"])
    if primary in metric_names:  # primary metric first, then the rest in their own order
        metric_names.remove(primary)
        metric_names.insert(0, primary)
    columns: list[Column] = [("run", "run", "")]
    columns += [(m, m, ".2f") for m in metric_names]
    ref = results.get(reference) if reference else None
    if reference and ref is None:
        raise LokiInputError(f"reference run {reference!r} is not among {sorted(results)}")
    if ref is not None:
        columns += [(f"delta:{m}", f"Δ{m} vs {reference} (%)", "+.1f") for m in metric_names]
    rows = []
    for name, result in results.items():
        metrics = result.get("metrics") or {}
        missing = [m for m in metric_names if m not in metrics]
        if missing:
            raise LokiInputError(f"task result of run {name!r} lacks metrics {missing}")
        row: dict[str, Any] = {"run": name, **{m: 100 * metrics[m] for m in metric_names}}
        if ref is not None:
            for m in metric_names:
                base = ref["metrics"][m]
                row[f"delta:{m}"] = 100 * (metrics[m] - base) / base if base else None
        rows.append(row)
    return rows, columns


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise LokiInputError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise LokiInputError(f"{path}: not JSON ({err})") from None
