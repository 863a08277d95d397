"""Implanting, LoKI's third stage: train only the selected ``down_proj`` rows, then merge.

PEFT-shaped: ``layer.LokiLinear`` wraps one ``nn.Linear``; ``apply_loki`` injects it into every
block; ``merge_loki`` folds it back; ``adapter`` saves/loads only the trained rows and records
the base they belong to. Selections are read by the Selecting stage's one strict reader.
"""

from loki_pipeline.implant.adapter import (
    load_loki_adapter,
    record_base_fingerprint,
    save_loki_adapter,
)
from loki_pipeline.implant.apply import apply_loki, loki_layers, merge_loki
from loki_pipeline.implant.layer import LokiLinear
from loki_pipeline.implant.selection import (
    Selection,
    check_fits,
    check_fits_checkpoint,
    read_selection,
)
from loki_pipeline.implant.suppress import suppress_nodes

__all__ = [
    "LokiLinear",
    "Selection",
    "apply_loki",
    "check_fits",
    "check_fits_checkpoint",
    "load_loki_adapter",
    "loki_layers",
    "merge_loki",
    "read_selection",
    "record_base_fingerprint",
    "save_loki_adapter",
    "suppress_nodes",
]
