"""The knowledge to protect: the prompt set KVA attributes (``kva.dataset``), in any format.

``format`` (the config schema's ``kva.dataset.format``):

- ``mmlu``: questions in the ``cais/mmlu`` schema (:mod:`~loki_pipeline.data.mmlu`; the paper);
- ``prompts``: the user's own prompts or chats, JSON lines (:mod:`~loki_pipeline.data.prompts`);
- ``lm_eval``: an lm-eval multiple-choice task (:mod:`~loki_pipeline.data.lm_eval_mc`).

Every format gives items with ``question_id``, ``subject``, ``chat()`` and ``fingerprint()``
(:class:`~loki_pipeline.data.kva_prompt.KVAItem`), which the KVA runner attributes alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loki_pipeline.data.kva_prompt import KVAItem
from loki_pipeline.data.records import is_hub_source
from loki_pipeline.errors import LokiInputError
from loki_pipeline.settings import schema_node

#: kva.dataset.format values (the schema's enum), the first the default.
FORMATS: tuple[str, ...] = tuple(schema_node("kva.dataset.format")["enum"])
MMLU = "mmlu"


def load_kva_set(spec: Mapping[str, Any]) -> list[KVAItem]:
    """The items of ``spec`` (``{source, format, split, max_per_subject}``, as filled from the
    schema), every row validated."""
    fmt, source = spec.get("format", MMLU), str(spec["source"])
    split, cap = spec.get("split", "test"), spec.get("max_per_subject")
    if fmt == MMLU:
        from loki_pipeline.data.mmlu import load_mmlu

        return load_mmlu(source, split=split, max_per_subject=cap)
    if fmt == "prompts":
        from loki_pipeline.data.prompts import load_prompts

        return load_prompts(source, split=split, max_per_subject=cap)
    if fmt == "lm_eval":
        from loki_pipeline.data.lm_eval_mc import load_lm_eval_mc

        return load_lm_eval_mc(source, max_per_subject=cap)
    raise LokiInputError(f"kva.dataset.format {fmt!r}: expected one of {', '.join(FORMATS)}")


def local_dataset_file(spec: Mapping[str, Any]) -> str | None:
    """The prompt set's local file (a prompts file or an lm-eval task ``.yaml``), else None (an
    mmlu file, a hub source or an lm-eval task by name): the file whose edit redoes the KVA."""
    fmt, source = spec.get("format", MMLU), str(spec["source"])
    if (fmt == "prompts" and not is_hub_source(source)) or (
        fmt == "lm_eval" and source.endswith((".yaml", ".yml"))
    ):
        return source
    return None


def attributed_set(source: str, fmt: str, num_prompts: int) -> str:
    """How figures and logs name the attributed set: ``MMLU (114 prompts)``,
    ``data/example_task/protect.jsonl (prompts, 80)``, ``local:hellaswag (lm_eval, 20)``."""
    if fmt == MMLU:
        return f"MMLU ({num_prompts} prompts)"
    return f"{source} ({fmt}, {num_prompts})"
