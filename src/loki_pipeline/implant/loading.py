"""Load and save plain checkpoints for the Implanting stage.

Uses the models stage's ``load_model`` when it is installed (one place that knows about dtypes,
devices and architecture checks); otherwise stock ``from_pretrained`` on a local directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from loki_pipeline.errors import LokiInputError


def load_checkpoint(model_dir: str | os.PathLike, *, dtype: str = "float32", device: str = "cpu"):
    """``(model, tokenizer)`` from a local Hugging Face checkpoint directory."""
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise LokiInputError(
            f"model directory {path} has no config.json (expected a HF checkpoint)"
        )
    try:
        from loki_pipeline.models import load_model  # type: ignore[attr-defined]
    except ImportError:
        load_model = None
    if load_model is not None:
        return load_model(str(path), dtype=dtype, device=device)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loki_pipeline.models.architecture import get_adapter

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype))
    get_adapter(model)
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return model.to(device), tokenizer


def save_checkpoint(model: Any, tokenizer: Any, out_dir: str | os.PathLike) -> None:
    """A plain safetensors checkpoint with its tokenizer (callers pass a temporary dir)."""
    model.save_pretrained(str(out_dir), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out_dir))
