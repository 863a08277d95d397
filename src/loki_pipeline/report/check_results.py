"""Numbers the documentation quotes come from a run of the shipping commit, and stay so.

A *snapshot* is the tables of one run, committed: ``docs/results/<name>/`` holds
``snapshot.json`` (the config and its fingerprint, the command, the commit it ran at and whether
the working tree had changes) and a copy of every CSV under the run's ``results/tables/`` (``tables/<model>/<task>/
<table>.csv``). Extra runs of the same config with other seeds go under ``seeds/<label>/tables/``
of the same folder, so the spread of a number that varies can be quoted beside it.

A *quote* is a number in README.md or docs/*.md wrapped in a marker naming its cell:

    <!-- result default smollm2-135m/toolace/task.csv toolace-loki_q10 overall -->37.5 [28.9, 46.9]<!-- /result -->

(snapshot, table under ``tables/``, row, column; a name with spaces in double quotes,
``"Avg drop (points)"``). The numbers inside are compared, in order,
with the cell, its ``_lo`` and its ``_hi`` (``lo`` and ``hi`` for the comparison table's
``delta``), each rounded to the decimals it is quoted with (a
quoted ``(n=25)`` is compared with ``_n``). A row of a table keyed by several columns (the
comparison table) is named by them joined with ``|``: ``toolace-loki_q10|toolace-lora_r16|Avg``.
An optional fifth word ``min``, ``max``, ``mean`` or ``sd`` quotes that statistic of the cell
over the snapshot's run and its seeds. Every document that quotes a snapshot must also name the
commit it was made at (its first 7 characters).

Commands (``python -m loki_pipeline.report.check_results``):

- ``update --results results --snapshot docs/results/default --config config/config.yaml
  --command "snakemake --cores 1 all"`` fills a snapshot from a finished run (``--seed LABEL=DIR``
  adds another seed's results folder);
- ``compare --results results --snapshot docs/results/default`` lists every cell of a fresh
  run's tables that differs from the snapshot (exit 1 if any);
- ``quotes [FILES...]`` checks every quoted number of README.md and docs/*.md, and that no
  snapshot's config has changed since its run (``stale_snapshots``; exit 1 if any differs).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from loki_pipeline.errors import LokiInputError
from loki_pipeline.io import config_hash, write_json, write_text

#: Where snapshots live, relative to the repository root.
SNAPSHOTS = Path("docs") / "results"
META = "snapshot.json"
#: Columns that together name a row, the first set a table has (else its first column).
KEY_COLUMNS = (("run",), ("run_a", "run_b", "metric"))
#: The statistics a quote may take over a snapshot's seeds.
AGGREGATES = {
    "min": min,
    "max": max,
    "mean": statistics.fmean,
    "sd": lambda v: statistics.stdev(v) if len(v) > 1 else 0.0,
}

_MARKER = re.compile(
    r"<!--\s*result\s+(?P<args>[^>]*?)\s*-->(?P<text>.*?)<!--\s*/result\s*-->", re.S
)
_NUMBER = re.compile(r"[-+−]?\d[\d,]*(?:\.\d+)?")

Table = dict[str, dict[str, str]]  # row key -> column -> cell


def _row_key(header: Sequence[str], row: Mapping[str, str]) -> str:
    for columns in KEY_COLUMNS:
        if all(c in header for c in columns):
            return "|".join(row[c] for c in columns)
    return row[header[0]]


def read_table(path: Path) -> Table:
    """A table CSV as row key -> column -> cell."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            return {_row_key(header, row): dict(row) for row in reader}
    except (OSError, KeyError, csv.Error) as exc:
        raise LokiInputError(f"{path}: not a table CSV ({exc})") from exc


def table_files(root: Path) -> dict[str, Path]:
    """``<model>/<task>/<table>.csv`` -> path, of every CSV under ``root``."""
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*.csv"))}


def config_fingerprint(path: str | Path) -> str:
    """A hash of the config as a run reads it: parsed, with what it ``extends`` merged in (so a
    change to the default moves the fingerprint of a config that extends it), comments and
    layout ignored."""
    from loki_pipeline.config import resolve_extends
    from loki_pipeline.safe_yaml import load_yaml

    path = Path(path)
    config = load_yaml(path, "snapshot config")  # the workflow's own strict reader
    if not isinstance(config, dict):
        raise LokiInputError(f"{path}: expected a mapping of keys")
    resolved = resolve_extends(config, [path.parent, Path(".")])
    resolved.pop("extends", None)  # an absolute path: differs between checkouts
    return config_hash(resolved)


def stale_snapshots(root: Path = Path(".")) -> list[str]:
    """Each snapshot under ``docs/results`` whose config no longer reads as it did when the
    run was made (``config_fingerprint``: its numbers are not what the config now produces),
    or that was made from a checkout with uncommitted changes."""
    problems = []
    for meta_path in sorted((root / SNAPSHOTS).glob(f"*/{META}")):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        config = root / meta.get("config", "")
        if not config.is_file():
            problems.append(f"{meta_path}: its config {meta.get('config')!r} does not exist")
            continue
        cwd = Path.cwd()
        try:
            os.chdir(root)  # extends: relative to the config's folder, else the repository
            found = config_fingerprint(meta["config"])
        finally:
            os.chdir(cwd)
        if meta.get("dirty") is not False:
            problems.append(
                f"{meta_path.parent}: made from a checkout with uncommitted changes (or not "
                "known to be clean): the numbers are not those of a commit; commit, rerun and "
                "fill it again"
            )
        if found != meta.get("config_fingerprint"):
            problems.append(
                f"{meta_path.parent}: {meta['config']} (with what it extends) changed since the "
                f"run at {str(meta.get('commit'))[:7]}; rerun `{meta.get('command')}` and fill "
                "the snapshot again (update)"
            )
    return problems


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""


def update_snapshot(
    results: Path,
    snapshot: Path,
    *,
    config: str,
    command: str,
    seeds: Mapping[str, Path] | None = None,
    commit: str | None = None,
    dirty: bool | None = None,
) -> list[Path]:
    """Copy ``results/tables/**/*.csv`` (and each seed's) into ``snapshot`` and record where
    they came from; the old snapshot's tables are replaced whole."""
    if commit is None:
        commit = _git("rev-parse", "HEAD").strip() or "unknown"
    if dirty is None and commit != "unknown":  # tracked files changed, snapshots aside
        status = _git("status", "--porcelain", "--untracked-files=no", "--", ".",
                      f":(exclude){SNAPSHOTS.as_posix()}")  # fmt: skip
        dirty = bool(status.strip())
    sources = {"": results, **{f"seeds/{k}/": v for k, v in (seeds or {}).items()}}
    found = {prefix: table_files(Path(r) / "tables") for prefix, r in sources.items()}
    for prefix, files in found.items():
        if not files:
            raise LokiInputError(f"{sources[prefix]}/tables: no table CSV (has the run finished?)")
    if snapshot.exists():
        for old in sorted(snapshot.rglob("*.csv")):
            old.unlink()
    written = []
    for prefix, files in found.items():
        for rel, path in files.items():
            out = snapshot / f"{prefix}tables" / rel
            write_text(out, path.read_text(encoding="utf-8"))
            written.append(out)
    meta = {"config": config, "config_fingerprint": config_fingerprint(config),
            "command": command, "commit": commit, "dirty": dirty,
            "seeds": sorted(seeds or {})}  # fmt: skip
    write_json(snapshot / META, meta)
    return [*written, snapshot / META]


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def compare_tables(results: Path, snapshot: Path, *, tolerance: float = 1e-6) -> list[str]:
    """Every difference between a fresh run's ``results/tables`` and the snapshot's tables: a
    table, row or column only one has, and each cell that differs (numbers by more than
    ``tolerance``, other text at all)."""
    fresh, kept = table_files(Path(results) / "tables"), table_files(snapshot / "tables")
    diffs = [f"{rel}: in the snapshot, not in the run" for rel in kept if rel not in fresh]
    diffs += [f"{rel}: in the run, not in the snapshot" for rel in fresh if rel not in kept]
    for rel in sorted(set(fresh) & set(kept)):
        new, old = read_table(fresh[rel]), read_table(kept[rel])
        diffs += [f"{rel}: row {k!r} in the snapshot, not in the run" for k in old if k not in new]
        diffs += [f"{rel}: row {k!r} in the run, not in the snapshot" for k in new if k not in old]
        for key in (k for k in old if k in new):
            for column in dict.fromkeys([*old[key], *new[key]]):
                a, b = old[key].get(column), new[key].get(column)
                if a is None or b is None:
                    side = "run" if a is None else "snapshot"
                    diffs.append(f"{rel}: column {column!r} only in the {side}")
                    continue
                x, y = _number(a), _number(b)
                same = (
                    abs(x - y) <= tolerance if x is not None and y is not None else a == b
                )  # fmt: skip
                if not same:
                    diffs.append(f"{rel} [{key}, {column}]: snapshot {a!r}, run {b!r}")
    return diffs


@dataclass(frozen=True)
class Quote:
    """One marked number span of a document."""

    where: str  # file:line
    snapshot: str
    table: str
    row: str
    column: str
    aggregate: str | None
    text: str


_CODE = re.compile(r"^ {0,3}```.*?^ {0,3}```[^\n]*$|`[^`\n]+`", re.S | re.M)


def _without_code(text: str) -> str:
    """``text`` with Markdown code (fenced blocks, inline spans) blanked, new lines kept: a
    marker shown as an example is not a quote. Indented lines are not skipped: in a list they
    are the item's text, and a quote there must not go unchecked."""
    return _CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def find_quotes(path: Path, text: str) -> list[Quote]:
    """Every ``<!-- result ... -->...<!-- /result -->`` span of the document ``path`` (its
    ``text``), outside code."""
    text = _without_code(text)
    quotes = []
    for match in _MARKER.finditer(text):
        where = f"{path}:{text.count(chr(10), 0, match.start()) + 1}"
        try:  # a column named with spaces is quoted: "Avg drop (points)"
            args = shlex.split(match["args"])
        except ValueError:
            args = []
        if len(args) not in (4, 5) or (len(args) == 5 and args[4] not in AGGREGATES):
            raise LokiInputError(
                f"{where}: a result marker takes SNAPSHOT TABLE ROW COLUMN [{'|'.join(AGGREGATES)}]"
                f", got {match['args']!r}"
            )
        quotes.append(Quote(where, *args[:4], args[4] if len(args) == 5 else None, match["text"]))
    return quotes


def _rounded(value: float, places: int) -> str:
    """``value`` at ``places`` decimals, "-0.0" written "0.0"."""
    text = f"{value:.{places}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _decimals(number: str) -> int:
    return len(number.partition(".")[2])


def _quoted_numbers(text: str) -> tuple[list[str], str | None]:
    """(the numbers of a quote, in order, without the n), its quoted n if any."""
    n = re.search(r"\(?n\s*=\s*(\d[\d,]*)\)?", text)
    rest = text.replace(n.group(0), " ") if n else text
    numbers = [m.group(0).replace("−", "-").replace(",", "") for m in _NUMBER.finditer(rest)]
    return numbers, n.group(1).replace(",", "") if n else None


def _cell(snapshot_dir: Path, quote: Quote, column: str, tables: dict) -> float | None | str:
    """The cell's number (or the aggregate over the snapshot's seeds); a string says why not."""
    folders = [snapshot_dir / "tables"] + sorted((snapshot_dir / "seeds").glob("*/tables"))
    if quote.aggregate is None:
        folders = folders[:1]
    values = []
    for folder in folders:
        path = folder / quote.table
        if path not in tables:
            if not path.is_file():
                return f"no table {path}"
            tables[path] = read_table(path)
        row = tables[path].get(quote.row)
        if row is None:
            return f"{path}: no row {quote.row!r} (has {sorted(tables[path])})"
        if column not in row and column.removesuffix("_lo").removesuffix("_hi") == "delta":
            column = column.rpartition("_")[2]  # the comparison table's delta, lo, hi
        if column not in row:
            return f"{path}: no column {column!r}"
        value = _number(row[column])
        if value is None:
            return f"{path} [{quote.row}, {column}]: {row[column]!r} is not a number"
        values.append(value)
    return values[0] if quote.aggregate is None else AGGREGATES[quote.aggregate](values)


def check_quotes(documents: Iterable[Path], root: Path = Path(".")) -> list[str]:
    """Every quoted number that is not its snapshot's cell at the quoted precision, every
    marker naming a missing snapshot, table, row or column, and every document that quotes a
    snapshot without naming the commit it was made at."""
    problems, tables = [], {}
    for doc in documents:
        text = doc.read_text(encoding="utf-8")
        quotes = find_quotes(doc, text)
        named = set()
        for quote in quotes:
            snapshot_dir = root / SNAPSHOTS / quote.snapshot
            meta_path = snapshot_dir / META
            if not meta_path.is_file():
                problems.append(f"{quote.where}: no snapshot {snapshot_dir} (fill it: update)")
                continue
            named.add(quote.snapshot)
            numbers, n = _quoted_numbers(quote.text)
            if not numbers:
                problems.append(f"{quote.where}: no number inside the marker ({quote.text!r})")
                continue
            suffixes = ["", "_lo", "_hi"][: len(numbers)] if quote.aggregate is None else [""]
            if len(numbers) > len(suffixes):
                problems.append(f"{quote.where}: {len(numbers)} numbers quoted, at most "
                                f"{len(suffixes)} known ({quote.text!r})")  # fmt: skip
                continue
            pairs = list(zip(numbers, suffixes, strict=False))
            if n is not None:
                pairs.append((n, "_n"))
            for number, suffix in pairs:
                want = _cell(snapshot_dir, quote, quote.column + suffix, tables)
                if isinstance(want, str):
                    problems.append(f"{quote.where}: {want}")
                    continue
                places = _decimals(number)
                if _rounded(float(number), places) != _rounded(want, places):
                    problems.append(
                        f"{quote.where}: {quote.table} [{quote.row}, {quote.column}{suffix}]"
                        f"{' ' + quote.aggregate if quote.aggregate else ''}: quoted {number}, "
                        f"the snapshot has {_rounded(want, places)}"
                    )
        for name in sorted(named):
            commit = json.loads((root / SNAPSHOTS / name / META).read_text()).get("commit", "")
            if not commit or commit == "unknown" or commit[:7] not in text:
                problems.append(f"{doc}: quotes snapshot {name!r} but does not name its commit "
                                f"{commit[:7] or '(none recorded)'}")  # fmt: skip
    return problems


def default_documents(root: Path = Path(".")) -> list[Path]:
    """README.md and docs/*.md (docs/_incoming is not published)."""
    docs = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    return [d for d in docs if d.is_file()]


def _seeds(values: Sequence[str]) -> dict[str, Path]:
    out = {}
    for value in values:
        label, sep, folder = value.partition("=")
        if not sep or not label or not folder:
            raise LokiInputError(f"--seed {value!r}: expected LABEL=RESULTS_DIR")
        out[label] = Path(folder)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loki_pipeline.report.check_results",
        description="Keep the numbers the documentation quotes equal to a run of the shipped "
        "config: fill a snapshot of a run's tables, compare a fresh run with it, check quotes.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser("update", help="fill a snapshot from a finished run's tables")
    up.add_argument("--results", default="results", help="the run's results folder (results)")
    up.add_argument("--snapshot", required=True, help="e.g. docs/results/default")
    up.add_argument("--config", required=True, help="the config the run used")
    up.add_argument("--command", required=True, help="the command that made the run")
    up.add_argument("--seed", action="append", default=[], metavar="LABEL=RESULTS_DIR",
                    help="another run of the config with another seed (repeatable; none)")  # fmt: skip
    cmp_ = sub.add_parser("compare", help="list every cell where a run differs from a snapshot")
    cmp_.add_argument("--results", default="results", help="the run's results folder (results)")
    cmp_.add_argument("--snapshot", required=True, help="e.g. docs/results/default")
    cmp_.add_argument("--tolerance", type=float, default=1e-6,
                      help="largest difference of two numbers taken as equal (1e-6)")  # fmt: skip
    quotes = sub.add_parser("quotes", help="check every quoted number against its snapshot")
    quotes.add_argument("files", nargs="*", help="documents (README.md and docs/*.md)")
    args = parser.parse_args(argv)
    try:
        if args.action == "update":
            written = update_snapshot(Path(args.results), Path(args.snapshot), config=args.config,
                                      command=args.command, seeds=_seeds(args.seed))  # fmt: skip
            print(f"{len(written) - 1} tables written to {args.snapshot}")
            return 0
        if args.action == "compare":
            found = compare_tables(Path(args.results), Path(args.snapshot),
                                   tolerance=args.tolerance)  # fmt: skip
        else:
            found = stale_snapshots() + check_quotes(
                [Path(f) for f in args.files] or default_documents()
            )
    except LokiInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = io.StringIO()
    for line in found:
        print(line, file=out)
    sys.stdout.write(out.getvalue())
    print(f"{len(found)} difference(s)" if found else "no differences", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
