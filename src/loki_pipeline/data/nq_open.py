"""NQ-Open questions as calibration prompts for CorDA's knowledge-preserved mode (KPM).

The LoKI paper's CorDA baseline "uses the KPM setting on the NQ-Open dataset": CorDA orients
its adapter by the covariance of each layer's inputs on knowledge the model should keep, so
it runs the model over NQ-Open question-answer pairs instead of the task's training data
(IPM). Rows are in NQ-Open's schema, ``{"question": str, "answer": [str, ...]}``: a local
``.jsonl`` / ``.json`` / ``.parquet`` file (the project ships 16 project-written rows in
``data/nq_open/calibration.jsonl`` for tests and small runs) or ``hf:<repo>[@revision]``
(the paper config: ``hf:google-research-datasets/nq_open``, split ``train``).

Each row becomes the plain prompt ``Question: {question}?\\nAnswer: {first answer}`` (no chat
template: the question-answer text itself is the knowledge whose activations CorDA keeps; the
paper prints no format, so this is the project's choice), tokenized with the model's
tokenizer, special tokens included, cut to ``cutoff_len``.
"""

from __future__ import annotations

import os
from typing import Any

from loki_pipeline.data.records import read_records
from loki_pipeline.errors import LokiInputError


def nq_open_text(row: dict[str, Any], where: str) -> str:
    """The calibration prompt of one NQ-Open row; ``LokiInputError`` naming ``where``."""
    question, answers = row.get("question"), row.get("answer")
    if not isinstance(question, str) or not question.strip():
        raise LokiInputError(f"{where}: NQ-Open row needs a non-empty 'question' string")
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
        raise LokiInputError(f"{where}: NQ-Open row needs 'answer': a non-empty list of strings")
    return f"Question: {question.strip().rstrip('?')}?\nAnswer: {answers[0]}"


def nq_open_examples(
    source: str | os.PathLike, tokenizer: Any, *, max_rows: int, cutoff_len: int
) -> list[dict[str, Any]]:
    """The first ``max_rows`` rows of ``source`` as ``{"input_ids"}`` examples (CorDA's
    calibration input)."""
    examples = []
    for where, row in read_records(source, max_rows=max_rows, split="train"):
        ids = tokenizer(nq_open_text(row, where), add_special_tokens=True)["input_ids"]
        examples.append({"input_ids": list(ids)[:cutoff_len]})
    if not examples:
        raise LokiInputError(f"{source}: no NQ-Open rows for CorDA's calibration")
    return examples
