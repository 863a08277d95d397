"""The paper's tables as CSV, Markdown, LaTeX and HTML, one row per run.

``forgetting`` table: the six general scores in percent, ``Avg`` forgetting against ``base``
(``forgetting.forgetting_avg``) and the trainable parameters. ``task`` table: every task metric
in percent, and for the reranker the change relative to the full fine-tune, as the paper's Table 3
reports it: ``Δ = 100 · (x − x_full) / x_full``.

Uncertainty: a column whose format is ``"ci"`` (``"ci+"``: signed; ``"ci:.3f"``: with its own
number format, for a score that is not in percent, such as a loss) is a score with companions
``<key>_n``, ``<key>_lo`` and ``<key>_hi`` in each row (item count and 95% interval, see
``report.intervals``). The CSV gets them as columns ``<header>_n``, ``<header>_lo`` and
``<header>_hi``; Markdown and LaTeX cells read ``45.0 [25.8, 65.8]``, with ``(n=20)`` in the
header when every row of the column has the same n and in the cell otherwise. Notes (what a
marker means, the differences that are within noise) go under the Markdown, LaTeX and HTML
tables. The HTML file is a standalone page (caption, table, notes, no script or external
resource): it is what `snakemake --report` shows, since the report displays HTML in place but
offers a CSV only as a download.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loki_pipeline.errors import LokiInputError
from loki_pipeline.io import write_text
from loki_pipeline.report.intervals import Estimate, put_estimate
from loki_pipeline.report.learning import LearningCheck

#: (key, header, format) of a column; format is applied to numbers, None/NaN shows as "–";
#: "ci"/"ci+" marks a score with an interval (see the module docstring).
Column = tuple[str, str, str]

#: Row key of a marker (e.g. "†" for a run that did not learn) shown after the run's name in
#: Markdown and LaTeX; the CSV says the same in a column of its own.
MARKER = "marker"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _cell(value: Any, fmt: str) -> str:
    if _missing(value):
        return "–"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, fmt)
    return str(value)


def _is_ci(fmt: str) -> bool:
    return fmt.startswith("ci")


def _has_interval(rows: Sequence[Mapping[str, Any]], key: str) -> bool:
    return any(not _missing(r.get(f"{key}_lo")) for r in rows)


def common_n(rows: Sequence[Mapping[str, Any]], key: str) -> int | None:
    """The item count shared by every row that has a value in column ``key`` (else None)."""
    counts = {r.get(f"{key}_n") for r in rows if not _missing(r.get(key))}
    return counts.pop() if len(counts) == 1 and None not in counts else None


def _ci_cell(row: Mapping[str, Any], key: str, fmt: str, *, decimals: str, cell_n: bool) -> str:
    value = row.get(key)
    if _missing(value):
        return "–"
    sign = "+" if fmt.startswith("ci+") else ""
    text = format(value, sign + decimals)
    lo, hi, n = row.get(f"{key}_lo"), row.get(f"{key}_hi"), row.get(f"{key}_n")
    if not (_missing(lo) or _missing(hi)):
        text += f" [{format(lo, sign + decimals)}, {format(hi, sign + decimals)}]"
    if cell_n and n is not None:
        text += f" (n={n})"
    return text


def _display(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]):
    """(headers, cell rows) as Markdown and LaTeX show them."""
    headers, cells = [], [[] for _ in rows]
    for key, header, fmt in columns:
        if not _is_ci(fmt):
            headers.append(header)
            for out, row in zip(cells, rows, strict=True):
                out.append(_cell(row.get(key), fmt))
            continue
        n = common_n(rows, key)
        headers.append(header if n is None else f"{header} (n={n})")
        decimals = fmt.partition(":")[2] or (".1f" if _has_interval(rows, key) else ".2f")
        for out, row in zip(cells, rows, strict=True):
            out.append(_ci_cell(row, key, fmt, decimals=decimals, cell_n=n is None))
    for out, row in zip(cells, rows, strict=True):
        if row.get(MARKER):
            out[0] = f"{out[0]} {row[MARKER]}"
    return headers, cells


def _tex_escape(text: str) -> str:
    for char, repl in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                       ("#", r"\#"), ("$", r"\$"), ("@", "@"), ("–", "--"), ("−", "-"),
                       ("Δ", r"$\Delta$"), ("Σ", r"$\Sigma$"), ("·", r"$\cdot$"),
                       ("×", r"$\times$"), ("†", r"$^\dagger$"),
                       ("‡", r"$^\ddagger$")):  # fmt: skip
        text = text.replace(char, repl)
    return text


def render_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """CSV with full-precision numbers (for re-use), empty cells for missing values; an interval
    column adds ``<header>_n``, ``<header>_lo`` and ``<header>_hi``."""
    keys, headers = [], []
    for key, header, fmt in columns:
        keys.append(key)
        headers.append(header)
        if _is_ci(fmt):
            keys += [f"{key}_n", f"{key}_lo", f"{key}_hi"]
            headers += [f"{header}_n", f"{header}_lo", f"{header}_hi"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(headers)
    for row in rows:
        writer.writerow(["" if row.get(k) is None else row.get(k) for k in keys])
    return out.getvalue()


def render_markdown(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], notes: Sequence[str] = ()
) -> str:
    headers, cells = _display(rows, columns)
    lines = ["| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    text = "\n".join(lines) + "\n"
    if notes:
        text += "\n" + "\n\n".join(notes) + "\n"
    return text


def render_latex(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    caption: str,
    notes: Sequence[str] = (),
) -> str:
    headers, cells = _display(rows, columns)
    spec = "l" + "r" * (len(columns) - 1)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{_tex_escape(caption)}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(_tex_escape(h) for h in headers) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(_tex_escape(c) for c in row) + r" \\" for row in cells]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if notes:
        lines.append(
            r"\par\smallskip{\footnotesize " + r"\par ".join(map(_tex_escape, notes)) + "}"
        )
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


_HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.2em;
       color: #1f2328; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 0.6em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { padding: 0.3em 0.7em; border-bottom: 1px solid #d0d7de; white-space: nowrap; }
th { background: #f6f8fa; text-align: right; }
td { text-align: right; font-variant-numeric: tabular-nums; }
th:first-child, td:first-child { text-align: left; }
tbody tr:nth-child(even) { background: #fafbfc; }
p.note { max-width: 60em; font-size: 0.85em; color: #444; }
"""


def render_html(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    caption: str,
    notes: Sequence[str] = (),
) -> str:
    """A standalone HTML page of the table: the cells as Markdown shows them, caption above,
    notes below; every text is escaped."""
    headers, cells = _display(rows, columns)
    esc = html.escape
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(caption)}</title>",
        f"<style>{_HTML_STYLE}</style></head><body>",
        "<table>",
        f"<caption>{esc(caption)}</caption>",
        "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr></thead>",
        "<tbody>",
    ]
    lines += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in cells]
    lines += ["</tbody></table>"]
    lines += [f'<p class="note">{esc(note)}</p>' for note in notes]
    lines.append("</body></html>")
    return "\n".join(lines) + "\n"


def noise_note(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], keys: Sequence[str]
) -> str | None:
    """The differences within noise in each of the interval columns ``keys``.

    Two rows of a column whose 95% intervals have half-width h each differ beyond noise only by
    more than about sqrt(2)·h (the half-width of the difference of two independent estimates);
    the note gives sqrt(2) × the column's median half-width, in points.
    """
    parts = []
    for key, header, _ in columns:
        if key not in keys:
            continue
        halves = [
            (r[f"{key}_hi"] - r[f"{key}_lo"]) / 2
            for r in rows
            if not (_missing(r.get(f"{key}_lo")) or _missing(r.get(f"{key}_hi")))
        ]
        if halves:
            parts.append(f"{header} {math.sqrt(2) * statistics.median(halves):.0f}")
    if not parts:
        return None
    return (
        "Within noise at these n: a difference between two rows of a column smaller than about "
        "these many points (1.41 × the column's median 95% half-width) means nothing: "
        + ", ".join(parts)
        + "."
    )


def write_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[Column],
    prefix: str | os.PathLike,
    *,
    caption: str = "",
    notes: Sequence[str] = (),
) -> list[Path]:
    """Write ``prefix.csv``, ``prefix.md``, ``prefix.tex`` and ``prefix.html`` (each
    atomically); ``notes`` go under the Markdown, LaTeX and HTML tables."""
    prefix = Path(prefix)
    outputs = []
    for suffix, text in (
        (".csv", render_csv(rows, columns)),
        (".md", render_markdown(rows, columns, notes)),
        (".tex", render_latex(rows, columns, caption, notes)),
        (".html", render_html(rows, columns, caption, notes)),
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
        *[(t, BENCHMARKS.get(t, t), "ci") for t in tasks],
        ("Avg", "Avg", "ci"),
        ("Avg_drop", "Avg drop (points)", "ci"),
    ]


def task_rows(
    task: str,
    results: Mapping[str, Mapping[str, Any]],
    *,
    reference: str | None = None,
    estimates: Mapping[str, Mapping[str, Estimate]] | None = None,
    checks: Mapping[str, LearningCheck] | None = None,
) -> tuple[list[dict[str, Any]], list[Column]]:
    """Rows and columns of the task table from each run's ``task.json`` dict.

    ``estimates`` (run -> metric -> ``Estimate`` in fractions) add each metric's n and 95%
    interval. ``checks`` (run -> ``LearningCheck``, ``report.learning``) add ``Δ<primary> vs
    base`` with its paired interval and ``learned`` (yes/no/unknown; a row that did not learn
    gets the marker †). With ``reference`` (the full fine-tune's run name, reranker), each metric
    also gets its change relative to that run, ``Δ = 100·(x − x_ref)/x_ref``.
    """
    if not results:
        raise LokiInputError(f"no task results for {task!r}")
    first = next(iter(results.values()))
    primary = first.get("primary_metric")
    metric_names = list(first["metrics"])
    if primary in metric_names:  # primary metric first, then the rest in their own order
        metric_names.remove(primary)
        metric_names.insert(0, primary)
    scale = metric_scales(first)
    metric_columns = [(m, m, "ci" if scale[m] == 100 else "ci:.3f") for m in metric_names]
    # the primary metric, then its change vs base and the learned flag, then the other metrics:
    # the verdict stays in view in a wide table (BFCL has 12 metric columns)
    columns: list[Column] = [("run", "run", ""), *metric_columns[:1]]
    if checks is not None:
        delta_fmt = "ci+" if scale.get(primary, 100) == 100 else "ci+:.3f"
        columns += [("delta_base", f"Δ{primary} vs base", delta_fmt), ("learned", "learned", "")]
    columns += metric_columns[1:]
    ref = results.get(reference) if reference else None
    if reference and ref is None:
        raise LokiInputError(f"reference run {reference!r} is not among {sorted(results)}")
    if ref is not None:
        columns += [(f"delta:{m}", f"Δ{m} vs {reference} (%)", "+.1f") for m in metric_names]
    estimates = estimates or {}
    rows = []
    for name, result in results.items():
        metrics = result.get("metrics") or {}
        missing = [m for m in metric_names if m not in metrics]
        if missing:
            raise LokiInputError(f"task result of run {name!r} lacks metrics {missing}")
        row: dict[str, Any] = {"run": name}
        for m in metric_names:
            known = estimates.get(name, {}).get(m) or Estimate(float(metrics[m]))
            put_estimate(
                row, m, Estimate(float(metrics[m]), known.n, known.lo, known.hi).scaled(scale[m])
            )
        if checks is not None:
            check = checks.get(name)
            delta = check.delta if check is not None else None
            factor = scale.get(primary, 100)
            put_estimate(row, "delta_base", delta.scaled(factor) if delta else None)
            row["learned"] = _learned_word(check)
            if check is not None and check.learned is False:
                row[MARKER] = "†"
        if ref is not None:
            for m in metric_names:
                base = ref["metrics"][m]
                row[f"delta:{m}"] = 100 * (metrics[m] - base) / base if base else None
        rows.append(row)
    return rows, columns


def metric_scales(summary: Mapping[str, Any]) -> dict[str, int]:
    """Metric -> 100 for a fraction shown in percent, 1 for a value shown as it is. A summary
    that lists its fractions (``percent``: a task of the user's, whose loss is in nats) says
    which; the paper's tasks report fractions only."""
    percent = summary.get("percent")
    return {m: 100 if percent is None or m in percent else 1 for m in summary.get("metrics", {})}


def _learned_word(check: LearningCheck | None) -> str | None:
    if check is None:
        return None
    return {True: "yes", False: "no", None: "unknown"}[check.learned]


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise LokiInputError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise LokiInputError(f"{path}: not JSON ({err})") from None
