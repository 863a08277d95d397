"""Read raw rows of a data set (task data, MMLU) from a local file or the Hugging Face hub.

A *source* is either a local path (``.json`` holding a list of objects, as ToolACE's
``data.json``; ``.jsonl`` with one object per line; ``.parquet``) or ``hf:<repo id>[@revision]``
for a hub dataset. Each row comes with a *where* label (``"data/x.jsonl line 12"``) so that a
loader's error names the file and row a user has to fix. Every loader reads its local files
here, so a file is read, and a bad one reported, the same way everywhere.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from loki_pipeline.errors import LokiInputError
from loki_pipeline.safe_text import check_strings, iter_json_lines, read_json

LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet")


def is_hub_source(source: str | os.PathLike) -> bool:
    return isinstance(source, str) and source.startswith("hf:")


def read_records(
    source: str | os.PathLike, *, max_rows: int | None = None, split: str = "train"
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(where, row)`` for the first ``max_rows`` rows (all when ``None``) of ``source``."""
    if max_rows is not None and (not isinstance(max_rows, int) or max_rows < 1):
        raise LokiInputError(f"max_samples must be a positive integer or null, got {max_rows!r}")
    rows = _hub_rows(source[3:], split) if is_hub_source(source) else _local_rows(Path(source))
    for where, row in itertools.islice(rows, max_rows):
        if not isinstance(row, dict):
            raise LokiInputError(f"{where}: expected a JSON object, got {type(row).__name__}")
        check_strings(row, where)
        yield where, row


def _local_rows(path: Path) -> Iterator[tuple[str, Any]]:
    if not path.is_file():
        raise LokiInputError(
            f"data file {path} does not exist (expected a local .json/.jsonl/.parquet file "
            "or 'hf:<dataset repo id>')"
        )
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        for lineno, row in iter_json_lines(path, strings=False):  # rows checked one by one
            yield f"{path} line {lineno}", row
    elif suffix == ".json":
        data = read_json(path, "data file", strings=False)  # rows checked one by one
        if not isinstance(data, list):
            raise LokiInputError(
                f"{path}: expected a JSON list of rows (as ToolACE's data.json), "
                f"got {type(data).__name__}; use .jsonl for one object per line"
            )
        for i, row in enumerate(data):
            yield f"{path} row {i}", row
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist()):
            yield f"{path} row {i}", row
    else:
        raise LokiInputError(
            f"data file {path}: unsupported suffix {path.suffix!r}, expected one of "
            f"{', '.join(LOCAL_SUFFIXES)}"
        )


def _hub_rows(spec: str, split: str) -> Iterator[tuple[str, Any]]:
    """Stream a hub dataset (the reranker set has 2.28M rows; only the rows asked for are read)."""
    repo, _, revision = spec.partition("@")
    if not repo or "/" not in repo:
        raise LokiInputError(f"hub source 'hf:{spec}': expected 'hf:<owner>/<name>[@revision]'")
    from datasets import load_dataset

    from loki_pipeline.hub_access import hub_errors

    with hub_errors(f"hf:{spec}"):
        stream = load_dataset(repo, split=split, revision=revision or None, streaming=True)
        for i, row in enumerate(stream):
            yield f"hf:{spec} ({split}) row {i}", row
