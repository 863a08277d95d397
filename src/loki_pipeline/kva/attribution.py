"""One entry point over the three KVA backends (PAPER.md section 1)."""

from __future__ import annotations

import torch
from torch import nn

from loki_pipeline.errors import LokiInputError
from loki_pipeline.kva.quadrature import check_quadrature, check_steps, quadrature_rule
from loki_pipeline.kva.result import KVAResult

#: ``exact`` (default, fast), ``reference`` (the oracle), ``captum`` (independent cross-check).
METHODS: tuple[str, ...] = ("exact", "reference", "captum")


def check_method(method: str) -> str:
    if method not in METHODS:
        raise LokiInputError(f"method={method!r}: expected one of {', '.join(METHODS)}")
    return method


def attribute_prompt(
    model: nn.Module,
    input_ids,
    *,
    steps: int = 7,
    method: str = "exact",
    quadrature: str = "left",
    **options,
) -> KVAResult:
    """KVA of one chat-formatted prompt, with its prediction and completeness gap.

    ``Attr_{l,j} = z_{l,j} · Σ_k w_k ∂P(ŷ | x; z_l ← α_k z_l)/∂z_{l,j}`` for every layer
    ``l`` (scaled alone) and node ``j``; ``(α_k, w_k)`` from :func:`quadrature_rule`.
    ``options`` go to the backend (``layers_per_batch``/``masked_rows`` for exact,
    ``batch_steps`` for reference).
    """
    steps = check_steps(steps)
    quadrature = check_quadrature(quadrature)
    method = check_method(method)
    if next(model.parameters()).device.type == "cpu":
        # Denormal floats in the backward pass slow CPU kernels up to 10x; flushing them to
        # zero changes nothing measurable. Every backend gets it, so timings compare fairly.
        # (Process-wide: torch has no getter to restore the previous setting.)
        torch.set_flush_denormal(True)
    if method == "captum":
        from loki_pipeline.kva.captum_backend import captum_attribute

        return captum_attribute(model, input_ids, steps=steps, quadrature=quadrature, **options)
    alphas, weights = quadrature_rule(quadrature, steps)
    if method == "reference":
        from loki_pipeline.kva.reference import reference_attribute

        return reference_attribute(model, input_ids, alphas, weights, **options)
    from loki_pipeline.kva.exact import exact_attribute

    return exact_attribute(model, input_ids, alphas, weights, **options)


def attribute(
    model: nn.Module,
    input_ids,
    *,
    steps: int = 7,
    method: str = "exact",
    quadrature: str = "left",
) -> torch.Tensor:
    """KVA of one prompt: float32 ``[num_layers, d_model]`` (see :func:`attribute_prompt`)."""
    return attribute_prompt(
        model, input_ids, steps=steps, method=method, quadrature=quadrature
    ).attributions
