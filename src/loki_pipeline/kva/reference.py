"""The oracle: KVA computed the plain way, one hooked full forward + backward per layer.

For layer ``l`` a forward hook replaces the last position's ``down_proj`` output by
``α_k · z_l`` (a leaf tensor), the model runs on the whole prompt, and the gradient of
``P(ŷ)`` with respect to that leaf is read off. Nothing is cached or reordered, so it is slow
and obviously right. ``batch_steps=True`` runs the ``m`` steps of one layer as a batch of ``m``
copies of the prompt (one forward+backward per layer); ``False`` runs them one by one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from loki_pipeline.kva.result import (
    KVAResult,
    as_batch_ids,
    frozen_parameters,
    last_logits_kwargs,
    last_position_outputs,
    with_baseline,
)
from loki_pipeline.models import get_adapter


def _last_position_replacer(values: torch.Tensor):
    """A ``down_proj`` forward hook that sets the last position's output to ``values``."""

    def hook(_module, _inputs, output):
        output = output.clone()
        output[:, -1, :] = values.to(output.dtype)
        return output

    return hook


def reference_attribute(
    model: nn.Module,
    input_ids,
    alphas: np.ndarray,
    weights: np.ndarray,
    *,
    batch_steps: bool = True,
) -> KVAResult:
    """KVA of one prompt by brute force (see the module docstring)."""
    adapter = get_adapter(model)
    ids = as_batch_ids(model, input_ids)
    n = ids.shape[1]
    alphas, weights, zero_idx = with_baseline(np.asarray(alphas), np.asarray(weights))

    z, probs = last_position_outputs(model, ids)
    token = int(probs.argmax())
    probability = float(probs[token])

    dtype = z[0].dtype
    # Only the last position's logits enter P(ŷ); the LM head elsewhere is pure waste.
    last_logits = last_logits_kwargs(model)
    alpha_t = torch.tensor(alphas, dtype=torch.float32, device=ids.device)
    weight_t = torch.tensor(weights, dtype=torch.float64, device=ids.device)
    chunks = [list(range(len(alphas)))] if batch_steps else [[k] for k in range(len(alphas))]

    attributions = torch.zeros(adapter.num_layers, adapter.d_model, dtype=torch.float64)
    baseline = torch.zeros(adapter.num_layers, dtype=torch.float32)
    with frozen_parameters(model):
        for layer in range(adapter.num_layers):
            grads = torch.zeros(len(alphas), adapter.d_model, dtype=torch.float64)
            for chunk in chunks:
                scaled = (alpha_t[chunk, None] * z[layer].float()).to(dtype).requires_grad_()
                handle = adapter.down_proj(layer).register_forward_hook(
                    _last_position_replacer(scaled)
                )
                try:
                    batch = ids.expand(len(chunk), n)
                    out = (
                        model(input_ids=batch, use_cache=False, **last_logits).logits[:, -1].float()
                    )
                finally:
                    handle.remove()
                p = torch.softmax(out, dim=-1)[:, token]
                (grad,) = torch.autograd.grad(p.sum(), scaled)
                grads[chunk] = grad.double().cpu()
                if zero_idx in chunk:
                    baseline[layer] = p[chunk.index(zero_idx)].detach().cpu()
            attributions[layer] = z[layer].double().cpu() * (weight_t.cpu()[:, None] * grads).sum(0)
    return KVAResult(
        attributions=attributions.float(),
        predicted_token=token,
        probability=probability,
        baseline_probabilities=baseline,
        prompt_length=n,
    )
