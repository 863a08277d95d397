"""``loki forgetting``: a forgetting table from lm-eval result files (the LoKI paper's Avg)."""

from __future__ import annotations

import argparse

HELP = (
    "Forgetting table from lm-eval result JSON files: one row per run, the general scores in "
    "percent, Avg = 100/N Σ (S_o − S_t)/S_o against --base (leaving out a benchmark whose "
    "base score's 95% interval reaches 0, named in the table's note) and Avg drop = 100/N Σ "
    "(S_o − S_t) in points over all, each with its item count and 95% interval when lm-eval's "
    "samples_<task>.jsonl (or n-samples) are beside the results; writes PREFIX.csv/.md/.tex."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", required=True, help="lm-eval results JSON of the untuned model")
    parser.add_argument(
        "--run", action="append", required=True, metavar="NAME=FILE",
        help="a fine-tuned run's lm-eval results JSON (repeat for each run)",
    )  # fmt: skip
    parser.add_argument("--out", required=True, metavar="PREFIX", help="output path prefix")
    parser.add_argument(
        "--tasks", nargs="+",
        help="benchmarks to average (default: those of the paper's six present in --base)",
    )  # fmt: skip
    parser.add_argument(
        "--metric", action="append", default=[], metavar="TASK=KEY",
        help="lm-eval result key of a task, e.g. gsm8k=exact_match,strict-match",
    )  # fmt: skip
    parser.add_argument(
        "--params", action="append", default=[], metavar="NAME=N",
        help="trainable parameter count of a run, for the #params column",
    )  # fmt: skip


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    from loki_pipeline.errors import LokiInputError

    out = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise LokiInputError(f"{flag} {value!r}: expected NAME=VALUE")
        if name in out:
            raise LokiInputError(f"{flag}: {name!r} given twice")
        out[name] = rest
    return out


def run(args: argparse.Namespace) -> int:
    from loki_pipeline.errors import LokiInputError
    from loki_pipeline.report.build import forgetting_notes
    from loki_pipeline.report.forgetting import forgetting_rows, load_item_scores, load_scores
    from loki_pipeline.report.tables import forgetting_columns, render_markdown, write_table

    runs = _pairs(args.run, "--run")
    if "base" in runs:
        raise LokiInputError("--run: the name 'base' is reserved for --base")
    metrics = _pairs(args.metric, "--metric")
    try:
        params = {k: int(v) for k, v in _pairs(args.params, "--params").items()}
    except ValueError:
        raise LokiInputError("--params: N must be an integer") from None
    base = load_scores(args.base, metrics=metrics, tasks=args.tasks)
    tuned = {
        name: load_scores(path, metrics=metrics, tasks=list(base)) for name, path in runs.items()
    }
    files = {"base": args.base, **runs}
    items = {
        name: load_item_scores(path, metrics=metrics, tasks=list(base))
        for name, path in files.items()
    }
    rows = forgetting_rows(base, tuned, params=params, items=items)
    columns = forgetting_columns(list(base))
    notes = forgetting_notes(rows, columns)
    caption = "Forgetting (Avg against base), with n and 95% intervals"
    for path in write_table(rows, columns, args.out, caption=caption, notes=notes):
        print(path)
    print(render_markdown(rows, columns, notes), end="")
    return 0
