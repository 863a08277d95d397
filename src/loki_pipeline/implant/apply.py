"""Model-level injection: wrap every ``down_proj`` in a ``LokiLinear`` and freeze the rest."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from loki_pipeline.errors import LokiInputError
from loki_pipeline.implant.layer import LokiLinear
from loki_pipeline.models.architecture import get_adapter
from loki_pipeline.select.selection_file import Selection, check_fits


def _positions(positions: Sequence[Sequence[int]] | Selection) -> list[list[int]]:
    if isinstance(positions, Selection):
        return positions.positions
    return [sorted({int(i) for i in layer}) for layer in positions]


def apply_loki(
    model: nn.Module, positions: Sequence[Sequence[int]] | Selection, rank: int | None = None
) -> nn.Module:
    """Wrap the model's ``down_proj`` layers in place (LoKI, or LoKI* with ``rank``).

    ``positions[l]`` are the trainable rows of layer ``l``. Every parameter outside the LoKI
    updates is frozen, so the trainable count is ``sum_l |S_l| * d_ff`` (LoKI) or
    ``sum_l (|S_l| + d_ff) * r`` (LoKI*). Returns the same model object.
    """
    adapter = get_adapter(model)
    pos = _positions(positions)
    sel = positions if isinstance(positions, Selection) else Selection(positions=pos)
    check_fits(sel, adapter.num_layers, adapter.d_model, model_name=type(model).__name__)
    if rank is not None and (int(rank) != rank or rank < 1):
        raise LokiInputError(f"LoKI* rank must be a positive integer, got {rank!r}")
    if any(isinstance(m, LokiLinear) for m in model.modules()):
        raise LokiInputError("model already has LoKI layers; merge_loki() it first")
    for p in model.parameters():
        p.requires_grad_(False)
    for layer, rows in enumerate(pos):
        adapter.set_down_proj(layer, LokiLinear(adapter.down_proj(layer), rows, rank=rank))
    return model


def loki_layers(model: nn.Module) -> dict[int, LokiLinear]:
    """Layer index -> its ``LokiLinear`` (empty when the model has none)."""
    adapter = get_adapter(model)
    return {i: m for i, m in enumerate(adapter.down_projs()) if isinstance(m, LokiLinear)}


def merge_loki(model: nn.Module) -> nn.Module:
    """Fold every LoKI update into its weight and put plain ``nn.Linear`` layers back.

    The result is a stock Hugging Face model: ``save_pretrained`` writes a checkpoint that
    differs from the base only in the selected rows of ``down_proj``.
    """
    adapter = get_adapter(model)
    for layer, module in loki_layers(model).items():
        adapter.set_down_proj(layer, module.merge())
    return model
