"""Writing a plain safetensors checkpoint (with its tokenizer), atomically: what ``merge``,
``suppress`` and training's merged copy all leave."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from loki_pipeline.io import atomic_path


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
