"""Settings of the general evaluation: the config's ``evaluate.general`` block and ``device``,
defaults from the schema. Light (no lm-eval, no torch), so the memory plan builds it."""

from __future__ import annotations

import dataclasses
import os

from loki_pipeline.settings import StageSettings, from_schema


@dataclasses.dataclass
class GeneralEvalSettings(StageSettings):
    """How general abilities are measured: the config's ``evaluate.general`` block and
    ``device``, defaults from the schema (whose descriptions say what each one does)."""

    tasks: list[str] = from_schema("evaluate.general.tasks")
    protocol: str = from_schema("evaluate.general.protocol")
    source: str = from_schema("evaluate.general.source")
    data_dir: str | os.PathLike = from_schema("evaluate.general.data_dir")
    limit: int | None = from_schema("evaluate.general.limit")
    batch_size: int = from_schema("evaluate.general.batch_size")
    dtype: str = from_schema("evaluate.general.dtype")
    max_gen_toks: int | None = from_schema("evaluate.general.max_gen_toks")
    num_fewshot: int | None = from_schema("evaluate.general.num_fewshot")
    apply_chat_template: bool = from_schema("evaluate.general.apply_chat_template")
    allow_code_execution: bool = from_schema("evaluate.general.allow_code_execution")
    code_timeout: float = from_schema("evaluate.general.code_timeout")
    metrics: dict[str, str] = from_schema("evaluate.general.metrics")
    threads: int = from_schema("evaluate.general.threads")
    device: str = from_schema("device")
