"""Analysing: Knowledge Vector Attribution (KVA, the LoKI paper's Analysing stage).

``attribute(model, input_ids)`` gives one prompt's ``[num_layers, d_model]`` attributions;
``attribute_prompt`` also returns the prediction and the completeness gap, and
``attribute_prompts`` does that for several prompts in shared passes. The backends live
in ``exact`` (fast), ``reference`` (oracle) and ``captum_backend``; ``storage`` writes the HDF5
file and ``runner`` attributes one shard of a dataset.

Names are resolved lazily so that ``loki --help`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "attribute": "loki_pipeline.kva.attribution",
    "attribute_prompt": "loki_pipeline.kva.attribution",
    "attribute_prompts": "loki_pipeline.kva.attribution",
    "METHODS": "loki_pipeline.kva.attribution",
    "KVAResult": "loki_pipeline.kva.result",
    "QUADRATURES": "loki_pipeline.kva.quadrature",
    "quadrature_rule": "loki_pipeline.kva.quadrature",
    "run_kva_shard": "loki_pipeline.kva.runner",
    "gather_shards": "loki_pipeline.kva.storage",
    "load_kva": "loki_pipeline.kva.storage",
    "verify_kva_file": "loki_pipeline.kva.storage",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'loki_pipeline.kva' has no attribute {name!r}")
