"""Merge an adapter directory into its base checkpoint (the file-level ``merge`` operation)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from loki_pipeline.errors import LokiInputError
from loki_pipeline.implant.adapter import is_loki_adapter, load_loki_adapter
from loki_pipeline.implant.apply import merge_loki
from loki_pipeline.implant.loading import load_checkpoint, save_checkpoint
from loki_pipeline.io import atomic_path

log = logging.getLogger(__name__)


def merge_adapter(
    model_dir: str | os.PathLike,
    adapter_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    dtype: str = "float32",
) -> Path:
    """LoKI: ``W[S] += Delta``; PEFT (LoRA, DoRA, ...): ``merge_and_unload``. Written atomically."""
    adapter_dir = Path(adapter_dir)
    is_peft = (adapter_dir / "adapter_config.json").is_file()
    if not is_loki_adapter(adapter_dir) and not is_peft:
        raise LokiInputError(
            f"{adapter_dir} is neither a LoKI adapter (loki_config.json) nor a PEFT adapter "
            "(adapter_config.json)"
        )
    model, tokenizer = load_checkpoint(model_dir, dtype=dtype)
    if is_loki_adapter(adapter_dir):
        merged = merge_loki(load_loki_adapter(model, adapter_dir))
    else:
        from peft import PeftModel

        peft_type = json.loads((adapter_dir / "adapter_config.json").read_text()).get("peft_type")
        log.info("merging PEFT adapter (%s)", peft_type)
        merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    with atomic_path(out_dir, is_dir=True) as tmp:
        save_checkpoint(merged, tokenizer, tmp)
    return Path(out_dir)
