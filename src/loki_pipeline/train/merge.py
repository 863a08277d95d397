"""Merge an adapter directory into its base checkpoint (the file-level ``merge`` operation)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from loki_pipeline.implant.adapter import check_base
from loki_pipeline.io import atomic_path
from loki_pipeline.models.loading import load_model
from loki_pipeline.train.methods import adapter_kind


def save_checkpoint(model: Any, tokenizer: Any, out_dir: str | os.PathLike) -> None:
    """A plain safetensors checkpoint with its tokenizer (callers pass a temporary dir)."""
    model.save_pretrained(str(out_dir), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out_dir))


def write_checkpoint(model: Any, tokenizer: Any, out_dir: str | os.PathLike) -> Path:
    """Save a plain checkpoint atomically; a failed write (full disk) is a ``LokiWriteError``.

    Nothing appears at ``out_dir`` unless every file was written and flushed.
    """
    with atomic_path(out_dir, is_dir=True) as tmp:
        save_checkpoint(model, tokenizer, tmp)
    return Path(out_dir)


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
