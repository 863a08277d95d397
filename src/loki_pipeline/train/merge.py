"""Merge an adapter directory into its base checkpoint (the file-level ``merge`` operation).

It sits with training's method registry: every method kind brings its own ``merge`` hook."""

from __future__ import annotations

import os
from pathlib import Path

from loki_pipeline.implant.adapter import check_base
from loki_pipeline.models.loading import load_model
from loki_pipeline.models.saving import write_checkpoint
from loki_pipeline.train.methods import adapter_kind


def merge_adapter(
    model_dir: str | os.PathLike,
    adapter_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    dtype: str = "float32",
) -> Path:
    """Fold an adapter into its base by its method kind's ``merge`` hook (LoKI: ``W[S] +=
    Delta``; PEFT: ``merge_and_unload``) and write the result atomically.

    The adapter's recorded base (``loki_base.json``) must be ``model_dir``'s weights; an adapter
    without a record is merged with a warning.
    """
    adapter_dir = Path(adapter_dir)
    kind = adapter_kind(adapter_dir)
    check_base(adapter_dir, model_dir)
    model, tokenizer = load_model(model_dir, dtype=dtype)
    return write_checkpoint(kind.merge(model, adapter_dir), tokenizer, out_dir)
