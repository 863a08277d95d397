"""Settings of the Analysing stage (KVA): the config's ``kva`` block and ``device``, defaults
from the schema. Light (no torch), so the memory plan builds it at planning time."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from loki_pipeline.settings import StageSettings, from_schema, schema_default


@dataclasses.dataclass
class KVASettings(StageSettings):
    """How a shard is attributed: the config's ``kva`` block and ``device``, defaults from the
    schema. ``dataset`` is ``{source, format, split, max_per_subject}`` or a bare source."""

    dataset: str | os.PathLike | Mapping[str, Any] = from_schema("kva.dataset")
    #: read by the workflow (a second KVA run and the dataset_overlap target), not by a shard
    compare_dataset: Mapping[str, Any] | None = from_schema("kva.compare_dataset")
    steps: int = from_schema("kva.steps")
    method: str = from_schema("kva.method")
    quadrature: str = from_schema("kva.quadrature")
    dtype: str = from_schema("kva.dtype")
    num_shards: int = from_schema("kva.shards")
    threads: int = from_schema("kva.threads")
    batch_prompts: int = from_schema("kva.batch_prompts")
    prompt_format: str | dict[str, str] = from_schema("kva.prompt_format")
    device: str = from_schema("device")

    @classmethod
    def from_cli(cls, args: argparse.Namespace, **extra: Any) -> KVASettings:
        """``--dataset`` (dest ``source``), ``--dataset-format`` (dest ``format``), ``--split``,
        ``--max-per-subject`` make ``dataset``."""
        dataset = schema_default("kva.dataset")
        for key in dataset:
            if (value := getattr(args, key, None)) is not None:
                dataset[key] = value
        return super().from_cli(args, **{"dataset": dataset, **extra})

    def format_for(self, model: str) -> str:
        """The prompt format of ``model`` (a checkpoint folder's name, the config's model
        name): ``prompt_format`` itself, or its entry for ``model`` ('chat' when absent)."""
        value = self.prompt_format
        return value.get(model, "chat") if isinstance(value, Mapping) else value
