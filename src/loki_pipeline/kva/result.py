"""What one KVA run on one prompt yields, and helpers every backend shares."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from loki_pipeline.errors import LokiInputError
from loki_pipeline.models import get_adapter


@dataclass(frozen=True)
class KVAResult:
    """KVA of one prompt.

    ``attributions[l, j] = z_{l,j} · Σ_k w_k ∂P(ŷ | x; z_l ← α_k z_l)/∂z_{l,j}`` (float32,
    ``[num_layers, d_model]``), with ``z_l`` the last position's ``down_proj`` output of layer
    ``l`` and ``ŷ`` the token the unmodified model predicts there (``predicted_token``, with
    softmax probability ``probability``). ``baseline_probabilities[l]`` is ``P(ŷ)`` with
    ``z_l ← 0`` (layer ``l`` alone), the integral's lower end.

    Completeness (the fundamental theorem of calculus along the path) says that, per layer,
    ``Σ_j attributions[l, j] = P(x) - P(x; z_l ← 0)`` exactly when the integral is exact.
    ``layer_gaps[l]`` is the difference of the two sides (quadrature error only), and
    ``completeness_gap`` is its mean absolute value over layers: the one number stored per
    sample to show how well ``steps`` points resolved the integral.
    """

    attributions: torch.Tensor
    predicted_token: int
    probability: float
    baseline_probabilities: torch.Tensor
    prompt_length: int

    @property
    def layer_gaps(self) -> torch.Tensor:
        """``Σ_j Attr_{l,j} - (P(x) - P(x; z_l ← 0))`` per layer, float32 ``[num_layers]``."""
        total = self.attributions.double().sum(dim=-1)
        target = self.probability - self.baseline_probabilities.double()
        return (total - target).float()

    @property
    def completeness_gap(self) -> float:
        """Mean over layers of ``|layer_gaps|``."""
        return float(self.layer_gaps.abs().mean())


def as_batch_ids(model: nn.Module, input_ids) -> torch.Tensor:
    """``input_ids`` (1-D or ``[1, n]``) as a ``[1, n]`` LongTensor on the model's device."""
    ids = torch.as_tensor(input_ids)
    if ids.dim() == 1:
        ids = ids[None]
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise LokiInputError(
            f"input_ids of shape {tuple(ids.shape)}: expected one prompt, 1-D or [1, n]"
        )
    if ids.shape[1] < 1:
        raise LokiInputError("input_ids is empty: expected at least one token")
    if ids.dtype not in (torch.int64, torch.int32):
        raise LokiInputError(f"input_ids of dtype {ids.dtype}: expected integer token ids")
    return ids.long().to(next(model.parameters()).device)


def last_position_outputs(
    model: nn.Module, ids: torch.Tensor
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One plain forward: every layer's ``down_proj`` output ``z_l`` at the last position, and
    the softmax over the vocabulary there (whose argmax is the predicted token ŷ)."""
    adapter = get_adapter(model)
    z: list[torch.Tensor] = []
    handles = [
        adapter.down_proj(i).register_forward_hook(
            lambda _m, _i, out: z.append(out[0, -1].detach().clone())
        )
        for i in range(adapter.num_layers)
    ]
    try:
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False, **last_logits_kwargs(model)).logits
    finally:
        for h in handles:
            h.remove()
    return z, torch.softmax(logits[0, -1].float(), dim=-1)


def with_baseline(alphas: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Append ``α = 0`` with weight 0 unless the rule has it, so ``P(x; z_l ← 0)`` comes for free.

    Returns ``(alphas, weights, index of α = 0)``.
    """
    zero = np.flatnonzero(alphas == 0.0)
    if zero.size:
        return alphas, weights, int(zero[0])
    return np.append(alphas, 0.0), np.append(weights, 0.0), len(alphas)


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """No parameter needs a gradient during attribution: skip that work, restore afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def last_logits_kwargs(model: nn.Module) -> dict:
    """Ask for the last position's logits only (the LM head over every position is waste)."""
    params = inspect.signature(model.forward).parameters
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return {name: 1}
    return {}


def layer_output(output):
    """A decoder layer returns a tensor (transformers >= 5) or a tuple starting with one."""
    return output[0] if isinstance(output, (tuple, list)) else output
