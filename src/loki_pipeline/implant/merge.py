"""Merge an adapter directory into its base checkpoint (the file-level ``merge`` operation)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from loki_pipeline.errors import LokiInputError
from loki_pipeline.implant.adapter import (
    check_base,
    is_loki_adapter,
    load_loki_adapter,
)
from loki_pipeline.implant.apply import merge_loki
from loki_pipeline.implant.loading import load_checkpoint, save_checkpoint
from loki_pipeline.io import atomic_path

log = logging.getLogger(__name__)


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
    """LoKI: ``W[S] += Delta``; PEFT (LoRA, DoRA, ...): ``merge_and_unload``. Written atomically.

    The adapter's recorded base (``loki_base.json``) must be ``model_dir``'s weights; an adapter
    without a record is merged with a warning.
    """
    adapter_dir = Path(adapter_dir)
    is_peft = (adapter_dir / "adapter_config.json").is_file()
    if not is_loki_adapter(adapter_dir) and not is_peft:
        raise LokiInputError(
            f"{adapter_dir} is neither a LoKI adapter (loki_config.json) nor a PEFT adapter "
            "(adapter_config.json)"
        )
    check_base(adapter_dir, model_dir)
    model, tokenizer = load_checkpoint(model_dir, dtype=dtype)
    if is_loki_adapter(adapter_dir):
        merged = merge_loki(load_loki_adapter(model, adapter_dir))
    else:
        from peft import PeftModel

        peft_type = json.loads((adapter_dir / "adapter_config.json").read_text()).get("peft_type")
        log.info("merging PEFT adapter (%s)", peft_type)
        merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    return write_checkpoint(merged, tokenizer, out_dir)
