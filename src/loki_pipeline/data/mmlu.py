"""MMLU in the ``cais/mmlu`` schema, and the KVA prompt built from it.

One loader serves the hub data set (paper config: test split, all 57 subjects, at most 50 per
subject) and the project's own MMLU-style file (``data/mmlu/mmlu_mini.jsonl``, the default).
Rows have ``question`` (str), ``subject`` (one of ``MMLU_SUBJECTS``), ``choices`` (4 str) and
``answer`` (int 0-3); an optional ``question_id`` is kept, else ``<subject>/<n>`` is assigned
(``n`` counts that subject's rows in file order, from 0).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loki_pipeline.data.records import read_records
from loki_pipeline.errors import LokiInputError

#: The 57 official MMLU subjects (``cais/mmlu`` config names).
MMLU_SUBJECTS: tuple[str, ...] = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge",
    "college_biology", "college_chemistry", "college_computer_science", "college_mathematics",
    "college_medicine", "college_physics", "computer_security", "conceptual_physics",
    "econometrics", "electrical_engineering", "elementary_mathematics", "formal_logic",
    "global_facts", "high_school_biology", "high_school_chemistry",
    "high_school_computer_science", "high_school_european_history", "high_school_geography",
    "high_school_government_and_politics", "high_school_macroeconomics",
    "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history",
    "high_school_world_history", "human_aging", "human_sexuality", "international_law",
    "jurisprudence", "logical_fallacies", "machine_learning", "management", "marketing",
    "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law",
    "professional_medicine", "professional_psychology", "public_relations",
    "security_studies", "sociology", "us_foreign_policy", "virology", "world_religions",
)  # fmt: skip

NUM_CHOICES = 4
LETTERS = "ABCD"
REQUIRED_FIELDS = ("question", "subject", "choices", "answer")
HUB_SPLITS = ("test", "validation", "dev", "auxiliary_train")
#: The default local data set shipped with the project (path relative to the repository root).
DEFAULT_MMLU_FILE = "data/mmlu/mmlu_mini.jsonl"

#: The LoKI paper's prompt, sent as one user turn through the model's chat template.
PROMPT_TEMPLATE = (
    "There is a single choice question about {subject}. "
    "Answer the question by replying A, B, C or D.\n"
    "Question: {question}\n"
    "Choices:\n"
    "{choices}\n"
    "Answer: \n"
)


@dataclass(frozen=True)
class MMLUItem:
    """One multiple-choice question; ``answer`` indexes ``choices`` (0 = A)."""

    question_id: str
    subject: str
    question: str
    choices: tuple[str, ...]
    answer: int


def subject_title(subject: str) -> str:
    """``high_school_us_history`` -> ``High School Us History``.

    The LoKI paper writes ``{Subject}``; the upstream LoKI analysis script builds it as
    ``subject.replace("_", " ").title()``, so the prompts (and the KVA) match theirs.
    """
    return subject.replace("_", " ").title()


def format_prompt(item: MMLUItem) -> str:
    """The user-turn text of the LoKI paper's KVA prompt for ``item`` (no chat template applied)."""
    choices = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(item.choices))
    return PROMPT_TEMPLATE.format(
        subject=subject_title(item.subject), question=item.question, choices=choices
    )


#: kva.prompt_format values: a chat user turn (the paper), or the text as it is
PROMPT_FORMATS = ("chat", "plain")


def encode_prompt(tokenizer: Any, item: MMLUItem, prompt_format: str = "chat"):
    """Token ids ``LongTensor [n]`` of ``format_prompt(item)`` as a single chat user turn,
    followed by the assistant generation prompt (the last position predicts the answer);
    ``prompt_format="plain"``: the text tokenized as it is, with the tokenizer's special tokens
    (BOS), for a model without a chat template."""
    import torch

    if prompt_format not in PROMPT_FORMATS:
        raise LokiInputError(
            f"kva.prompt_format={prompt_format!r}: expected one of {', '.join(PROMPT_FORMATS)}"
        )
    if prompt_format == "plain":
        ids = torch.as_tensor(
            list(tokenizer(format_prompt(item), add_special_tokens=True)["input_ids"]),
            dtype=torch.long,
        )
        if ids.numel() == 0:
            raise RuntimeError("the tokenizer gave no ids for a prompt")
        return ids
    if not getattr(tokenizer, "chat_template", None):
        raise LokiInputError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__} "
            "has no chat template; LoKI's prompts are chat turns (set kva.prompt_format: plain "
            "for a model without one)"
        )
    out = tokenizer.apply_chat_template(
        [{"role": "user", "content": format_prompt(item)}],
        add_generation_prompt=True,
        tokenize=True,
    )
    # transformers 5 returns a BatchEncoding (dict-like); 4.x a list of ids.
    if isinstance(out, Mapping) or hasattr(out, "input_ids"):
        out = out["input_ids"]
    ids = torch.as_tensor(out, dtype=torch.long)
    if ids.dim() == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.dim() != 1 or ids.numel() == 0:
        raise RuntimeError(f"apply_chat_template gave ids of shape {tuple(ids.shape)}")
    return ids


def encode_prompts(
    tokenizer: Any,
    items: Sequence[MMLUItem],
    *,
    max_length: int | None = None,
    source: str = "",
    prompt_format: str = "chat",
) -> list:
    """:func:`encode_prompt` of every item; refuse prompts longer than ``max_length`` tokens.

    A prompt past the model's context (``max_position_embeddings``) would be attributed with
    positions the model never learned, or crash mid-run; all prompts are encoded first (only
    the tokenizer is needed) so the error counts them and comes before any weight is loaded.
    """
    encoded = [encode_prompt(tokenizer, item, prompt_format) for item in items]
    if max_length is not None:
        long = [
            (item, len(ids))
            for item, ids in zip(items, encoded, strict=True)
            if len(ids) > max_length
        ]
        if long:
            item, n = long[0]
            raise LokiInputError(
                f"{source + ': ' if source else ''}{len(long)} of {len(items)} prompts are longer "
                f"than the model's context of {max_length} tokens (the first: question_id "
                f"{item.question_id!r}, {n} tokens); shorten those questions or leave them out"
            )
    return encoded


# --------------------------------------------------------------------------------------------
# loading


def _validate_row(row: Any, where: str) -> tuple[str | None, str, str, tuple[str, ...], int]:
    if not isinstance(row, Mapping):
        raise LokiInputError(f"{where}: expected an object with {', '.join(REQUIRED_FIELDS)}")
    missing = [f for f in REQUIRED_FIELDS if f not in row]
    if missing:
        raise LokiInputError(
            f"{where}: missing field(s) {', '.join(missing)}; "
            f"the cais/mmlu schema needs {', '.join(REQUIRED_FIELDS)}"
        )
    question, subject, choices, answer = (row[f] for f in REQUIRED_FIELDS)
    if not isinstance(question, str) or not question.strip():
        raise LokiInputError(f"{where}: 'question' must be a non-empty string")
    if subject not in MMLU_SUBJECTS:
        raise LokiInputError(
            f"{where}: unknown subject {subject!r}; expected one of the 57 MMLU subjects "
            "(cais/mmlu config names such as 'abstract_algebra', 'world_religions')"
        )
    if isinstance(choices, str) or not isinstance(choices, Iterable):
        raise LokiInputError(f"{where}: 'choices' must be a list of {NUM_CHOICES} strings")
    choices = tuple(choices)  # parquet gives numpy arrays
    if len(choices) != NUM_CHOICES or not all(isinstance(c, str) for c in choices):
        raise LokiInputError(
            f"{where}: 'choices' must be {NUM_CHOICES} strings, got {len(choices)} item(s)"
        )
    if isinstance(answer, bool) or not hasattr(answer, "__index__"):
        raise LokiInputError(f"{where}: 'answer' must be an integer 0-3, got {answer!r}")
    answer = int(answer)
    if not 0 <= answer < NUM_CHOICES:
        raise LokiInputError(f"{where}: 'answer' {answer} out of range 0-{NUM_CHOICES - 1}")
    qid = row.get("question_id")
    if qid is not None and (
        not isinstance(qid, (str, int)) or isinstance(qid, bool) or str(qid) == ""
    ):
        raise LokiInputError(f"{where}: 'question_id' must be a non-empty string, got {qid!r}")
    return (None if qid is None else str(qid)), subject, question, choices, answer


def items_from_rows(
    rows: Iterable[tuple[str, Any]], *, name: str, max_per_subject: int | None = None
) -> list[MMLUItem]:
    """Validate ``[(where, row)]`` and keep at most ``max_per_subject`` per subject (file order).

    ``where`` names the file (or hub set) and row in errors; ``name`` names the data set.
    """
    if max_per_subject is not None and (
        isinstance(max_per_subject, bool)
        or not isinstance(max_per_subject, int)
        or max_per_subject < 1
    ):
        raise LokiInputError(
            f"max_per_subject {max_per_subject!r}: expected an integer >= 1 or None"
        )
    seen: Counter[str] = Counter()
    ids: dict[str, str] = {}
    items: list[MMLUItem] = []
    for where, row in rows:
        qid, subject, question, choices, answer = _validate_row(row, where)
        n = seen[subject]
        seen[subject] += 1
        qid = qid if qid is not None else f"{subject}/{n}"
        if qid in ids:
            raise LokiInputError(f"{where}: duplicate question_id {qid!r} (first at {ids[qid]})")
        ids[qid] = where
        if max_per_subject is not None and n >= max_per_subject:
            continue
        items.append(MMLUItem(qid, subject, question, choices, answer))
    if not items:
        raise LokiInputError(f"{name}: empty data set (no questions)")
    return items


def load_mmlu(
    source: str | os.PathLike,
    *,
    split: str = "test",
    max_per_subject: int | None = None,
) -> list[MMLUItem]:
    """Load MMLU-schema questions from a local file or ``hf:<repo>`` (e.g. ``hf:cais/mmlu``).

    Local ``.jsonl``/``.json``/``.parquet`` files hold one split, so ``split`` applies to the hub
    only (config ``all``); they are read by ``data.records.read_records``, as every task data
    file is. Every row is validated before anything is returned.
    """
    source_str = os.fspath(source)
    if source_str.startswith("hf:"):
        repo = source_str[3:]
        if split not in HUB_SPLITS:
            raise LokiInputError(f"MMLU split {split!r}: expected one of {', '.join(HUB_SPLITS)}")
        from datasets import load_dataset

        data = load_dataset(repo, "all", split=split)
        rows = ((f"{source_str} ({split}) row {i}", row) for i, row in enumerate(data))
        return items_from_rows(rows, name=source_str, max_per_subject=max_per_subject)
    return items_from_rows(
        read_records(source_str), name=source_str, max_per_subject=max_per_subject
    )
