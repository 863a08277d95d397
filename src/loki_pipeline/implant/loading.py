"""Save plain checkpoints for the Implanting stage (loading is ``models.load_model``)."""

from __future__ import annotations

import os
from typing import Any

from loki_pipeline.models.loading import load_model as load_checkpoint

__all__ = ["load_checkpoint", "save_checkpoint"]


def save_checkpoint(model: Any, tokenizer: Any, out_dir: str | os.PathLike) -> None:
    """A plain safetensors checkpoint with its tokenizer (callers pass a temporary dir)."""
    model.save_pretrained(str(out_dir), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out_dir))
