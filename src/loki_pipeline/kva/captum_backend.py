"""KVA through Captum's ``IntegratedGradients``: an independent cross-check of the formula.

For layer ``l`` the attributed input is ``z_l`` itself (``[1, d_model]``, zero baseline). The
forward function takes a batch of candidate values, injects each one as the last position's
``down_proj`` output of layer ``l`` of its own copy of the prompt (a forward hook), and
returns ``P(ŷ)`` per copy. Captum builds the scaled inputs, the gradients and the weighted sum.
"""

from __future__ import annotations

import torch
from torch import nn

from loki_pipeline.errors import LokiInputError
from loki_pipeline.kva.quadrature import check_quadrature, check_steps
from loki_pipeline.kva.result import (
    KVAResult,
    as_batch_ids,
    frozen_parameters,
    last_logits_kwargs,
    last_position_outputs,
)
from loki_pipeline.models import get_adapter

#: our quadrature name -> Captum's ``method``.
CAPTUM_METHODS = {
    "left": "riemann_left",
    "right": "riemann_right",
    "midpoint": "riemann_middle",
    "trapezoid": "riemann_trapezoid",
    "gauss_legendre": "gausslegendre",
}


def captum_attribute(
    model: nn.Module, input_ids, *, steps: int, quadrature: str = "left"
) -> KVAResult:
    """KVA of one prompt with Captum (needs ``steps >= 2``: Captum's own limit)."""
    from captum.attr import IntegratedGradients

    steps = check_steps(steps)
    quadrature = check_quadrature(quadrature)
    if steps < 2:
        raise LokiInputError(f"steps={steps}: the captum backend needs steps >= 2")
    adapter = get_adapter(model)
    ids = as_batch_ids(model, input_ids)
    n = ids.shape[1]

    z, probs = last_position_outputs(model, ids)
    token = int(probs.argmax())

    # Captum's trapezoid takes n points and weights 1/n (ends halved), which sums to 1 - 1/n;
    # with m intervals we ask for m+1 points and rescale its weights to 1/m.
    n_steps, rescale = (
        (steps + 1, (steps + 1) / steps) if quadrature == "trapezoid" else (steps, 1.0)
    )

    last_logits = last_logits_kwargs(model)
    attributions = torch.zeros(adapter.num_layers, adapter.d_model)
    baseline = torch.zeros(adapter.num_layers)
    with frozen_parameters(model):
        for layer in range(adapter.num_layers):

            def prob_of_prediction(values: torch.Tensor, layer: int = layer) -> torch.Tensor:
                def hook(_module, _inputs, output):
                    output = output.clone()
                    output[:, -1, :] = values.to(output.dtype)
                    return output

                handle = adapter.down_proj(layer).register_forward_hook(hook)
                try:
                    batch = ids.expand(values.shape[0], n)
                    out = (
                        model(input_ids=batch, use_cache=False, **last_logits).logits[:, -1].float()
                    )
                finally:
                    handle.remove()
                return torch.softmax(out, dim=-1)[:, token]

            ig = IntegratedGradients(prob_of_prediction)
            attr = ig.attribute(
                z[layer][None],
                baselines=torch.zeros_like(z[layer][None]),
                n_steps=n_steps,
                method=CAPTUM_METHODS[quadrature],
            )
            attributions[layer] = attr[0].float().cpu() * rescale
            with torch.no_grad():
                baseline[layer] = prob_of_prediction(torch.zeros_like(z[layer][None]))[0].cpu()
    return KVAResult(
        attributions=attributions,
        predicted_token=token,
        probability=float(probs[token]),
        baseline_probabilities=baseline,
        prompt_length=n,
    )
