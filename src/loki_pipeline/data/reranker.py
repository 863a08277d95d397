"""LB Reranker loader: query/text pairs with a 1-7 relevance score, as a three-turn chat.

The real set (``lightblue/reranker_continuous_filt_max7_train``, from its dataset card) keeps the
query in ``question``, the passage in ``context`` and the integer score in
``mean_exp_val_max7_round``; those are the default column names, and any other file can name its
own. The chat is exactly the paper's (``reranker_messages``); evaluation reuses it so
the prompt at inference is the prompt the model was trained on.
"""

from __future__ import annotations

import os

from loki_pipeline.data.records import read_records
from loki_pipeline.errors import LokiInputError

DEFAULT_SOURCE = "data/reranker/train.jsonl"
HUB_SOURCE = "hf:lightblue/reranker_continuous_filt_max7_train"

RERANKER_SYSTEM_PROMPT = (
    "Given a query and a piece of text, output a score of 1-7 based on how related the query is "
    "to the text. 1 means least related and 7 is most related."
)
SCORES = range(1, 8)

#: the real set's column names for query, text and score
DEFAULT_COLUMNS = {"query": "question", "text": "context", "score": "mean_exp_val_max7_round"}


def reranker_user_prompt(query: str, text: str) -> str:
    return f"<<<Query>>>\n{query}\n\n<<<Context>>>\n{text}"


def reranker_messages(query: str, text: str, score: int | None = None) -> list[dict[str, str]]:
    """System + user turns; with ``score`` also the assistant turn (the digit) for training."""
    messages = [
        {"role": "system", "content": RERANKER_SYSTEM_PROMPT},
        {"role": "user", "content": reranker_user_prompt(query, text)},
    ]
    if score is not None:
        messages.append({"role": "assistant", "content": str(score)})
    return messages


def load_reranker(
    source: str | os.PathLike = DEFAULT_SOURCE,
    *,
    max_samples: int | None = None,
    split: str = "train",
    columns: dict[str, str] | None = None,
) -> list[list[dict[str, str]]]:
    """Read query/text/score rows into system/user/assistant chats.

    ``columns`` maps ``query``/``text``/``score`` to the file's column names (defaults:
    ``DEFAULT_COLUMNS``). Raises ``LokiInputError`` naming file and row for a missing column, a
    non-string query or text, a score that is not an integer in 1-7, or an empty data set.
    """
    cols = {**DEFAULT_COLUMNS, **(columns or {})}
    if set(cols) != set(DEFAULT_COLUMNS):
        unknown = sorted(set(cols) - set(DEFAULT_COLUMNS))
        raise LokiInputError(f"reranker columns: unknown keys {unknown}, expected query/text/score")
    conversations = []
    for where, row in read_records(source, max_rows=max_samples, split=split):
        missing = [c for c in cols.values() if c not in row]
        if missing:
            raise LokiInputError(
                f"{where}: missing column(s) {missing} (expected query/text/score columns "
                f"{list(cols.values())}; set tasks.reranker.train.columns for other names)"
            )
        query, text = row[cols["query"]], row[cols["text"]]
        for name, value in (("query", query), ("text", text)):
            if not isinstance(value, str) or not value.strip():
                raise LokiInputError(
                    f"{where}: {name} column {cols[name]!r} must be a non-empty string"
                )
        conversations.append(reranker_messages(query, text, _score(row[cols["score"]], where)))
    if not conversations:
        raise LokiInputError(f"reranker data {source} is empty: no rows to train on")
    return conversations


def _score(value: object, where: str) -> int:
    # Integral floats (3.0) come out of some parquet writers; anything else is a data error.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value not in SCORES:
        raise LokiInputError(f"{where}: score {value!r} is not an integer from 1 to 7")
    return value
