"""One entry point over the three KVA backends (the LoKI paper's Analysing stage)."""

from __future__ import annotations

from collections.abc import Sequence

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
    return attribute_prompts(
        model, [input_ids], steps=steps, method=method, quadrature=quadrature, **options
    )[0]


def attribute_prompts(
    model: nn.Module,
    prompts: Sequence,
    *,
    steps: int = 7,
    method: str = "exact",
    quadrature: str = "left",
    **options,
) -> list[KVAResult]:
    """KVA of several prompts: one :class:`KVAResult` each, in order (see :func:`attribute_prompt`).

    ``exact`` attributes them together, in shared forward and backward passes that read the
    weights once (the fast path on a GPU); the other backends take them one at a time.
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

        return [
            captum_attribute(model, ids, steps=steps, quadrature=quadrature, **options)
            for ids in prompts
        ]
    alphas, weights = quadrature_rule(quadrature, steps)
    if method == "reference":
        from loki_pipeline.kva.reference import reference_attribute

        return [reference_attribute(model, ids, alphas, weights, **options) for ids in prompts]
    from loki_pipeline.kva.exact import exact_attribute_many

    return exact_attribute_many(model, prompts, alphas, weights, **options)


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
