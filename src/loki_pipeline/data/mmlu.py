"""MMLU in the ``cais/mmlu`` schema, and the KVA prompt built from it.

One loader serves the hub data set (paper config: test split, all 57 subjects, at most 50 per
subject) and the project's own MMLU-style file (``data/mmlu/mmlu_mini.jsonl``, the default).
Rows have ``question`` (str), ``subject`` (one of ``MMLU_SUBJECTS``), ``choices`` (4 str) and
``answer`` (int 0-3); an optional ``question_id`` is kept, else ``<subject>/<n>`` is assigned
(``n`` counts that subject's rows in file order, from 0).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loki_pipeline.data.kva_prompt import (  # noqa: F401  (encode_prompts: re-exported)
    encode_chat,
    encode_prompts,
    number_and_cap,
    optional_id,
)
from loki_pipeline.data.records import is_hub_source, read_records
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
REQUIRED_FIELDS = ("question", "subject", "choices", "answer")
HUB_SPLITS = ("test", "validation", "dev", "auxiliary_train")
#: The default local data set shipped with the project (path relative to the repository root).
DEFAULT_MMLU_FILE = "data/mmlu/mmlu_mini.jsonl"

#: The LoKI paper's prompt, sent as one user turn through the model's chat template. Its
#: first line is :data:`PROMPT_HEADER`; other multiple-choice sets (kva.dataset.format
#: lm_eval) are rendered with the same text, their letters counted from their options.
PROMPT_HEADER = (
    "There is a single choice question about {subject}. "
    "Answer the question by replying {letters}.\n"
)
PROMPT_TEMPLATE = PROMPT_HEADER + "Question: {question}\nChoices:\n{choices}\nAnswer: \n"


@dataclass(frozen=True)
class MMLUItem:
    """One multiple-choice question; ``answer`` indexes ``choices`` (0 = A)."""

    question_id: str
    subject: str
    question: str
    choices: tuple[str, ...]
    answer: int

    def chat(self) -> list[dict[str, str]]:
        """The KVA prompt as chat messages: the paper's text as one user turn."""
        return [{"role": "user", "content": format_prompt(self)}]

    def fingerprint(self) -> list[Any]:
        """What the attributions depend on (the KVA file's ``inputs.dataset`` hashes it)."""
        return [self.question_id, self.subject, self.question, list(self.choices), self.answer]


def subject_title(subject: str) -> str:
    """``high_school_us_history`` -> ``High School Us History``.

    The LoKI paper writes ``{Subject}``; the upstream LoKI analysis script builds it as
    ``subject.replace("_", " ").title()``, so the prompts (and the KVA) match theirs.
    """
    return subject.replace("_", " ").title()


def answer_letters(count: int) -> str:
    """How the prompt names the answers: 4 -> ``A, B, C or D``, 2 -> ``A or B``."""
    if not 2 <= count <= 26:
        raise LokiInputError(f"a multiple-choice prompt needs 2-26 options, got {count}")
    letters = [chr(ord("A") + i) for i in range(count)]
    return f"{', '.join(letters[:-1])} or {letters[-1]}"


def choice_prompt(subject: str, question: str, choices: Sequence[str]) -> str:
    """The paper's prompt for any lettered multiple-choice question (``subject`` as shown)."""
    lines = "\n".join(f"{chr(ord('A') + i)}. {c}" for i, c in enumerate(choices))
    return PROMPT_TEMPLATE.format(
        subject=subject, letters=answer_letters(len(choices)), question=question, choices=lines
    )


def format_prompt(item: MMLUItem) -> str:
    """The user-turn text of the LoKI paper's KVA prompt for ``item`` (no chat template applied)."""
    return choice_prompt(subject_title(item.subject), item.question, item.choices)


def encode_prompt(tokenizer: Any, item: MMLUItem, prompt_format: str = "chat"):
    """Token ids ``LongTensor [n]`` of ``format_prompt(item)`` as a single chat user turn,
    followed by the assistant generation prompt (the last position predicts the answer);
    ``prompt_format="plain"``: the text tokenized as it is, with the tokenizer's special tokens
    (BOS), for a model without a chat template."""
    return encode_chat(tokenizer, item.chat(), prompt_format)


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
    return optional_id(row, where), subject, question, choices, answer


def _entries(rows: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, str | None, str, tuple]]:
    for where, row in rows:
        qid, subject, question, choices, answer = _validate_row(row, where)
        yield where, qid, subject, (question, choices, answer)


def items_from_rows(
    rows: Iterable[tuple[str, Any]], *, name: str, max_per_subject: int | None = None
) -> list[MMLUItem]:
    """Validate ``[(where, row)]`` and keep at most ``max_per_subject`` per subject (file order).

    ``where`` names the file (or hub set) and row in errors; ``name`` names the data set.
    """
    kept = number_and_cap(_entries(rows), name=name, max_per_subject=max_per_subject)
    return [MMLUItem(qid, subject, *payload) for qid, subject, payload in kept]


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
    if is_hub_source(source_str):
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
