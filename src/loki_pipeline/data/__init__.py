"""Data sets in their public schemas: MMLU (the KVA prompts), and the task data of later stages."""

from loki_pipeline.data.mmlu import (
    MMLU_SUBJECTS,
    MMLUItem,
    encode_prompt,
    format_prompt,
    load_mmlu,
)

__all__ = ["MMLU_SUBJECTS", "MMLUItem", "encode_prompt", "format_prompt", "load_mmlu"]
