"""Implanting, LoKI's third stage: train only the selected ``down_proj`` rows, then merge.

PEFT-shaped: ``layer.LokiLinear`` wraps one ``nn.Linear``; ``apply_loki`` injects it into every
block; ``merge_loki`` folds it back; ``adapter`` saves/loads only the trained rows and records
the base they belong to. Selections are read by the Selecting stage's one strict reader
(``loki_pipeline.select.selection_file``).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LokiLinear": "loki_pipeline.implant.layer",
    "apply_loki": "loki_pipeline.implant.apply",
    "load_loki_adapter": "loki_pipeline.implant.adapter",
    "loki_layers": "loki_pipeline.implant.apply",
    "merge_loki": "loki_pipeline.implant.apply",
    "record_base_fingerprint": "loki_pipeline.implant.adapter",
    "save_loki_adapter": "loki_pipeline.implant.adapter",
    "suppress_nodes": "loki_pipeline.implant.suppress",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    # lazy, like kva/: `loki merge --help` must not import torch
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'loki_pipeline.implant' has no attribute {name!r}")
