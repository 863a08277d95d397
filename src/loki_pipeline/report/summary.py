"""The end-of-run summary: where the tables are and, per run, Avg and the primary task score.

Snakemake's ``onsuccess:`` prints it so that a finished ``snakemake all`` tells the user what
happened without opening a file. It reads the CSV tables the run wrote
(``results/tables/{model}/{task}/{forgetting,task,comparison}.csv`` and
``results/tables/{model}/suppress/forgetting.csv``), whose score columns ``<c>`` have
companions ``<c>_n``, ``<c>_lo`` and ``<c>_hi`` (``report.tables``). The primary task metric is
the task table's first column after ``run`` (``tables.task_rows`` puts it there).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path

from loki_pipeline.errors import LokiInputError

PathLike = str | os.PathLike

#: Formats a table is written in beside its CSV (``tables.write_table``).
FORMATS = ("csv", "md", "tex", "html")
#: The tables of one (model, task) folder; ``comparison`` holds the LoKI-vs-baseline verdicts.
STEMS = ("forgetting", "task", "comparison")
#: The forgetting table's column of the average drop in points (``tables.forgetting_columns``).
DROP = "Avg drop (points)"


def _read(path: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    """(header, rows by run name) of a table CSV."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            rows = {row["run"]: row for row in reader}
    except (OSError, KeyError, csv.Error) as exc:
        raise LokiInputError(f"{path}: not a table CSV with a 'run' column ({exc})") from exc
    return header, rows


def _score(row: dict[str, str] | None, column: str) -> str:
    """``45.0 [25.8, 65.8] n=20`` (two decimals and "no interval" where the table has none, as
    the Markdown table shows it); ``–`` where the run has no value."""
    if row is None or not row.get(column):
        return "–"
    lo, hi, n = row.get(f"{column}_lo"), row.get(f"{column}_hi"), row.get(f"{column}_n")
    if lo and hi:
        text = f"{float(row[column]):.1f} [{float(lo):.1f}, {float(hi):.1f}]"
    else:
        text = f"{float(row[column]):.2f} (no interval)"
    return text + (f" n={n}" if n else "")


def _table_block(folder: Path) -> list[str]:
    """Lines for one table folder: its files, then one aligned line per run."""
    forgetting, task = folder / "forgetting.csv", folder / "task.csv"
    lines = [f"  {folder / stem}.{{{','.join(FORMATS)}}}"
             for stem in STEMS if (folder / f"{stem}.csv").exists()]  # fmt: skip
    f_header, f_rows = _read(forgetting) if forgetting.exists() else ([], {})
    drop = DROP in f_header  # tables written before Avg drop existed have no such column
    primary, t_rows = None, {}
    if task.exists():
        header, t_rows = _read(task)
        primary = header[1] if len(header) > 1 else None
    table = [["run", "Avg forgetting %"] + ([DROP] if drop else [])
             + ([f"{primary} %"] if primary else [])]  # fmt: skip
    for run in dict.fromkeys([*f_rows, *t_rows]):
        cells = [run, _score(f_rows.get(run), "Avg")]
        if drop:
            cells.append(_score(f_rows.get(run), DROP))
        if primary:
            cells.append(_score(t_rows.get(run), primary))
            if t_rows.get(run, {}).get("learned") == "no":
                cells[-1] += "  † no learning beyond noise"
        table.append(cells)
    return lines + _aligned(table, "    ") + _verdicts(folder / "comparison.csv")


def _aligned(table: list[list[str]], indent: str) -> list[str]:
    """``table``'s rows as lines, each column but the last padded to its widest cell."""
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    lines = []
    for cells in table:
        padded = [c.ljust(w) for c, w in zip(cells[:-1], widths, strict=True)] + [cells[-1]]
        lines.append(indent + "  ".join(padded).rstrip())
    return lines


def _verdicts(path: Path) -> list[str]:
    """Lines of the comparison table: run_a vs run_b, each metric's a − b with its 95% paired
    interval and the verdict."""
    if not path.exists():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, csv.Error) as exc:
        raise LokiInputError(f"{path}: not a comparison table CSV ({exc})") from exc
    if not rows:
        return []
    lines = ["    LoKI vs baseline (a − b, 95% paired bootstrap interval):"]
    table = []
    for row in rows:
        try:
            delta = f"{float(row['delta']):+.1f}"
            if row.get("lo") and row.get("hi"):
                delta += f" [{float(row['lo']):+.1f}, {float(row['hi']):+.1f}]"
            table.append([f"{row['run_a']} vs {row['run_b']}", row["metric"], delta,
                          row["verdict"]])  # fmt: skip
        except (KeyError, ValueError) as exc:
            raise LokiInputError(f"{path}: a row lacks a number or a column ({exc})") from exc
    return lines + _aligned(table, "      ")


def summarize(
    paths: Iterable[PathLike], report_command: str = "snakemake --report results/report.html"
) -> str:
    """A short text naming each table and giving, per run, Avg forgetting and the primary task
    score with their 95% intervals. ``paths`` are the pipeline's targets (any files); the tables'
    CSVs among them that exist are read, the rest ignored. Empty when there is no table.
    ``report_command`` makes the HTML report of the same config (its last line)."""
    folders = sorted({Path(p).parent for p in map(Path, paths)
                      if p.suffix == ".csv" and p.stem in STEMS and p.exists()})  # fmt: skip
    if not folders:
        return ""
    lines = [
        "LoKI pipeline: results (Avg: the paper's forgetting, lower is better; Avg drop: the "
        "average drop in points; task score: primary metric; 95% intervals in brackets, "
        "n = items; verdicts: LoKI against each baseline on the same items)"
    ]
    for folder in folders:
        lines.append(f"{folder.parent.name} / {folder.name}:")
        lines += _table_block(folder)
    lines.append(f"All of it, with figures and loss curves: {report_command}")
    return "\n".join(lines) + "\n"
