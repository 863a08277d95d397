"""Data sets in their public schemas: MMLU (the KVA prompts), and the task data of later stages."""

from loki_pipeline.data.chat import tokenize_conversation
from loki_pipeline.data.mmlu import (
    MMLU_SUBJECTS,
    MMLUItem,
    encode_prompt,
    format_prompt,
    load_mmlu,
)
from loki_pipeline.data.reranker import load_reranker, reranker_messages
from loki_pipeline.data.sft import SFTCollator, build_sft_dataset, collate_sft
from loki_pipeline.data.toolace import load_toolace

__all__ = ["MMLU_SUBJECTS", "MMLUItem", "encode_prompt", "format_prompt", "load_mmlu"]
__all__ += [
    "SFTCollator",
    "build_sft_dataset",
    "collate_sft",
    "load_reranker",
    "load_toolace",
    "reranker_messages",
    "tokenize_conversation",
]
