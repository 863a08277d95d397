"""Suppression ablation (the LoKI paper's Table 5): zero the selected knowledge vectors.

S-H zeroes the top 1% high-contribution nodes, S-L the top 1% low-contribution ones:
``W_down[l][S_l, :] = 0`` (and the bias entries, where a model has them), so node ``(l, j)``
outputs 0 for every input. The result is a plain checkpoint for evaluation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from loki_pipeline.models.architecture import get_adapter
from loki_pipeline.models.loading import load_model
from loki_pipeline.models.saving import write_checkpoint
from loki_pipeline.select.selection_file import (
    Selection,
    check_fits,
    check_fits_checkpoint,
    read_selection_file,
)


@torch.no_grad()
def suppress_nodes(model: nn.Module, positions: Sequence[Sequence[int]] | Selection) -> int:
    """Zero the selected rows of every ``down_proj`` in place; returns how many rows were zeroed."""
    adapter = get_adapter(model)
    sel = (
        positions
        if isinstance(positions, Selection)
        else Selection(positions=[sorted({int(i) for i in p}) for p in positions])
    )
    check_fits(sel, adapter.num_layers, adapter.d_model, model_name=type(model).__name__)
    count = 0
    for layer, rows in enumerate(sel.positions):
        if not rows:
            continue
        proj = adapter.down_proj(layer)
        idx = torch.tensor(rows, dtype=torch.long, device=proj.weight.device)
        proj.weight.index_fill_(0, idx, 0.0)
        if getattr(proj, "bias", None) is not None:
            proj.bias.index_fill_(0, idx, 0.0)
        count += len(rows)
    return count


def suppress_checkpoint(
    model_dir: str | os.PathLike,
    selection_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    dtype: str = "float32",
) -> int:
    """File level: read the selection first (the one strict reader, checked against config.json),
    then load, zero and save atomically (a failed write is a ``LokiWriteError``)."""
    selection = read_selection_file(selection_path)
    check_fits_checkpoint(selection, model_dir)
    model, tokenizer = load_model(model_dir, dtype=dtype)
    n = suppress_nodes(model, selection)
    write_checkpoint(model, tokenizer, out_dir)
    return n
