"""The fast, exact KVA backend: one prompt forward, then only the last position re-run.

Causality makes KVA cheap. Scaling ``z_l`` (layer ``l``'s ``down_proj`` output at the last
position ``n-1``) changes nothing at positions ``< n-1``, so their keys and values are the same
at every layer for every step. One normal forward therefore captures everything needed:

- ``z_l`` and the residual stream ``r_l`` that ``z_l`` is added to (input of
  ``post_attention_layernorm``), so layer ``l``'s scaled output is ``r_l + α z_l`` and layer
  ``l`` itself is never re-run;
- the prefix keys/values of every layer (served read-only by :class:`PrefixCache`);
- the predicted token ``ŷ`` and ``P(ŷ)``.

Then, for every layer ``l`` and step ``α_k``, one *row* (a single token at position ``n-1``)
enters layer ``l+1`` and runs to the LM head. All ``m x L`` rows run together laid along the
sequence axis of one batch element, with a 4-D mask that lets each row see the prefix and
itself only; rows of layer ``l`` join the batch just before layer ``l+1``. One backward of the
summed probabilities gives every row's gradient, because rows never interact. Attention
backends that ignore 4-D masks (flash attention) take the fallback: one layer at a time, its
``m`` rows along the batch axis with a query length of 1, which needs no mask at all.

Cost: ``~m·L²/2`` token-layer evaluations instead of the reference's ``m·L²·n``.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
from torch import nn

from loki_pipeline.errors import LokiInputError
from loki_pipeline.kva.result import (
    KVAResult,
    as_batch_ids,
    frozen_parameters,
    last_logits_kwargs,
    layer_output,
    with_baseline,
)
from loki_pipeline.models import get_adapter

#: Attention implementations that honour an arbitrary 4-D additive mask.
MASKED_ATTENTION = ("eager", "sdpa")


class PrefixCache:
    """Read-only stand-in for a KV cache: serves the prompt's prefix keys/values.

    ``update`` returns ``prefix ++ new`` along the sequence axis and stores nothing, so the
    same prefix serves every row and every layer group.
    """

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor]):
        self.keys = keys
        self.values = values

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        k, v = self.keys[layer_idx], self.values[layer_idx]
        batch = key_states.shape[0]
        if k.shape[0] != batch:
            k = k.expand(batch, *k.shape[1:])
            v = v.expand(batch, *v.shape[1:])
        return torch.cat([k, key_states], dim=-2), torch.cat([v, value_states], dim=-2)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return int(self.keys[layer_idx].shape[-2])


def _cache_kwarg(module: nn.Module) -> str:
    """Name of a layer's/model's cache argument (it changed across transformers versions)."""
    params = inspect.signature(module.forward).parameters
    for name in ("cache", "past_key_values", "past_key_value"):
        if name in params:
            return name
    raise LokiInputError(f"{type(module).__name__}.forward takes no KV cache argument")


def _full_cache():
    """A cache that keeps every position (no config: no sliding-window layers dropping any)."""
    from transformers import DynamicCache

    return DynamicCache()


def _prefix_kv(cache, num_layers: int, prefix_len: int):
    """Per-layer prefix keys/values ``[1, kv_heads, prefix_len, head_dim]`` from a HF cache."""
    keys, values = [], []
    for i in range(num_layers):
        if hasattr(cache, "layers"):
            k, v = cache.layers[i].keys, cache.layers[i].values
        else:  # transformers < 4.56
            k, v = cache.key_cache[i], cache.value_cache[i]
        if k.shape[-2] != prefix_len + 1:
            raise RuntimeError(f"KV cache of layer {i} holds {k.shape[-2]} positions, not all")
        keys.append(k[..., :prefix_len, :].detach())
        values.append(v[..., :prefix_len, :].detach())
    return keys, values


def _sliding_window(layer: nn.Module, config) -> int | None:
    attn = layer.self_attn
    if hasattr(attn, "sliding_window"):
        return attn.sliding_window
    if getattr(config, "model_type", "") == "mistral":
        return getattr(config, "sliding_window", None)
    return None


def _prefix_visible(prefix_len: int, window: int | None, device) -> torch.Tensor:
    """Which prefix positions the last position (``prefix_len``) attends to (HF's window rule)."""
    pos = torch.arange(prefix_len, device=device)
    if window is None:
        return torch.ones(prefix_len, dtype=torch.bool, device=device)
    return pos > prefix_len - window


def _sequence_mask(rows: int, visible: torch.Tensor, dtype) -> torch.Tensor:
    """``[1, 1, rows, prefix+rows]`` additive mask: each row sees the visible prefix and itself."""
    allowed = torch.cat(
        [
            visible[None].expand(rows, -1),
            torch.eye(rows, dtype=torch.bool, device=visible.device),
        ],
        dim=1,
    )
    mask = torch.zeros(allowed.shape, dtype=dtype, device=visible.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


def exact_attribute(
    model: nn.Module,
    input_ids,
    alphas: np.ndarray,
    weights: np.ndarray,
    *,
    layers_per_batch: int | None = None,
    masked_rows: bool | None = None,
) -> KVAResult:
    """KVA of one prompt, exactly as the reference computes it, re-running only the last row.

    ``layers_per_batch``: how many layers' rows share one forward/backward (default: all,
    ``m x L`` rows; lower it to bound memory). ``masked_rows``: lay rows along the sequence axis
    with a 4-D mask (default where the attention backend honours one) or, if False, one layer
    at a time with rows along the batch axis.
    """
    adapter = get_adapter(model)
    config = adapter.config
    ids = as_batch_ids(model, input_ids)
    n = ids.shape[1]
    num_layers = adapter.num_layers
    alphas, weights, zero_idx = with_baseline(np.asarray(alphas), np.asarray(weights))
    if masked_rows is None:
        masked_rows = getattr(config, "_attn_implementation", "eager") in MASKED_ATTENTION
    if not masked_rows:
        layers_per_batch = 1
    group_size = num_layers if layers_per_batch is None else max(1, int(layers_per_batch))

    # 1. One normal forward: z_l, the residual r_l it is added to, prefix keys/values, ŷ.
    z: dict[int, torch.Tensor] = {}
    resid: dict[int, torch.Tensor] = {}

    def keep(store, i, value):
        store[i] = value[0, -1].detach().clone()

    handles = []
    for i, layer in enumerate(adapter.layers):
        handles.append(
            adapter.down_proj(i).register_forward_hook(lambda _m, _a, out, i=i: keep(z, i, out))
        )
        handles.append(
            layer.post_attention_layernorm.register_forward_pre_hook(
                lambda _m, args, i=i: keep(resid, i, args[0])
            )
        )
    kv_cache = _full_cache()
    try:
        with torch.no_grad():
            out = model(
                input_ids=ids,
                use_cache=True,
                **{_cache_kwarg(model): kv_cache},
                **last_logits_kwargs(model),
            )
    finally:
        for h in handles:
            h.remove()
    logits = out.logits[0, -1].float()
    probs = torch.softmax(logits, dim=-1)
    token = int(probs.argmax())
    probability = float(probs[token])
    prefix_len = n - 1
    prefix = PrefixCache(*_prefix_kv(kv_cache, num_layers, prefix_len))
    del out, kv_cache

    dtype = z[0].dtype
    device = ids.device
    cache_kw = _cache_kwarg(adapter.layers[0])
    alpha_t = torch.tensor(alphas, dtype=torch.float32, device=device)
    weight_t = torch.tensor(weights, dtype=torch.float64)
    m = len(alphas)
    pos = torch.full((1, 1), n - 1, dtype=torch.long, device=device)
    cos, sin = adapter.rotary_emb(z[0][None, None], position_ids=pos)
    visible = [
        _prefix_visible(prefix_len, _sliding_window(layer, config), device)
        for layer in adapter.layers
    ]
    backend_masks = getattr(config, "_attn_implementation", "eager") in MASKED_ATTENTION

    attributions = torch.zeros(num_layers, adapter.d_model, dtype=torch.float64)
    baseline = torch.zeros(num_layers, dtype=torch.float32)

    with frozen_parameters(model):
        for start in range(0, num_layers, group_size):
            group = list(range(start, min(start + group_size, num_layers)))
            leaves = {
                src: (alpha_t[:, None] * z[src].float()).to(dtype).requires_grad_() for src in group
            }
            hidden = None  # [rows, d_model]; rows of layer `src` join just before `src + 1`
            for j in range(group[0] + 1, num_layers + 1):
                if j - 1 in group:
                    new = resid[j - 1][None] + leaves[j - 1]
                    hidden = new if hidden is None else torch.cat([hidden, new], dim=0)
                if j == num_layers:
                    break
                rows = hidden.shape[0]
                layer = adapter.layers[j]
                if masked_rows:
                    x = hidden[None]
                    emb = (cos.expand(1, rows, -1), sin.expand(1, rows, -1))
                    mask = _sequence_mask(rows, visible[j], dtype)
                    position_ids = pos.expand(1, rows)
                else:
                    x = hidden[:, None]
                    emb = (cos.expand(rows, 1, -1), sin.expand(rows, 1, -1))
                    # A query of length 1 needs no causal mask; only a sliding window that cuts
                    # the prefix does (flash attention applies the window itself).
                    mask = None
                    if backend_masks and not bool(visible[j].all()):
                        mask = _sequence_mask(1, visible[j], dtype)
                    position_ids = pos.expand(rows, 1)
                y = layer(
                    x,
                    attention_mask=mask,
                    position_ids=position_ids,
                    position_embeddings=emb,
                    use_cache=False,
                    **{cache_kw: prefix},
                )
                y = layer_output(y)
                hidden = y[0] if masked_rows else y[:, 0]

            row_logits = adapter.lm_head(adapter.final_norm(hidden))
            with torch.no_grad():
                probs = torch.softmax(row_logits.float(), dim=-1)
                p = probs[:, token].clone()  # rows in group order, m per layer
                # ∂P(ŷ)/∂logits = P(ŷ)·(onehot(ŷ) - softmax), applied directly: autograd's
                # softmax + indexing backward would add two more [rows, vocab] passes.
                grad_logits = probs.mul_(-p[:, None])
                grad_logits[:, token] += p
            grads = torch.autograd.grad(
                row_logits,
                [leaves[src] for src in group],
                grad_outputs=grad_logits.to(row_logits.dtype),
            )
            p = p.cpu()
            for g, (src, grad) in enumerate(zip(group, grads, strict=True)):
                integral = (weight_t[:, None] * grad.double().cpu()).sum(0)
                attributions[src] = z[src].double().cpu() * integral
                baseline[src] = p[g * m + zero_idx]
    return KVAResult(
        attributions=attributions.float(),
        predicted_token=token,
        probability=probability,
        baseline_probabilities=baseline,
        prompt_length=n,
    )
