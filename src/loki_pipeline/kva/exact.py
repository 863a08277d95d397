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

Several prompts share each pass (:func:`exact_attribute_many`), one per batch element: the
prompts are right-padded, so causality alone keeps the padding out of every real position,
and the rows' mask hides each prompt's padding from its rows. On a GPU this reads the weights
once for all of them, which is what makes KVA at 8B fast; the results equal one-at-a-time
runs up to float rounding.

Cost: ``~m·L²/2`` token-layer evaluations instead of the reference's ``m·L²·n``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from loki_pipeline.kva.result import (
    KVAResult,
    as_batch_ids,
    frozen_parameters,
    last_logits_kwargs,
    layer_output,
    with_baseline,
)
from loki_pipeline.models import get_adapter
from loki_pipeline.models.architecture import cache_kwarg

#: Attention implementations that honour an arbitrary 4-D additive mask.
MASKED_ATTENTION = ("eager", "sdpa")


class PrefixCache:
    """Read-only stand-in for a KV cache: serves the prompts' prefix keys/values.

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


def _full_cache():
    """A cache that keeps every position (no config: no sliding-window layers dropping any)."""
    from transformers import DynamicCache

    return DynamicCache()


def _prefix_kv(cache, num_layers: int, prefix_len: int):
    """Per-layer prefix keys/values ``[P, kv_heads, prefix_len, head_dim]`` from a HF cache."""
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


def _prefix_visible(last: torch.Tensor, width: int, window: int | None) -> torch.Tensor:
    """``[P, width]``: which padded prefix positions each prompt's last position attends to.

    ``last[p]`` is prompt ``p``'s last position (its prefix length); positions from there on
    are padding. A sliding window keeps HF's rule (keys ``> last - window``).
    """
    pos = torch.arange(width, device=last.device)[None]
    visible = pos < last[:, None]
    if window is not None:
        visible &= pos > last[:, None] - window
    return visible


def _row_mask(visible: torch.Tensor, rows: int, dtype) -> torch.Tensor:
    """``[P, 1, rows, width+rows]`` additive mask: each row sees its visible prefix and itself."""
    prompts, width = visible.shape
    allowed = torch.cat(
        [
            visible[:, None].expand(prompts, rows, width),
            torch.eye(rows, dtype=torch.bool, device=visible.device).expand(prompts, -1, -1),
        ],
        dim=2,
    )
    mask = torch.zeros(allowed.shape, dtype=dtype, device=visible.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


@dataclass
class _Prefix:
    """What the one plain forward of a batch of prompts leaves for the row passes."""

    z: list[torch.Tensor]  # per layer [P, d_model]: down_proj output at each last position
    resid: list[torch.Tensor]  # per layer [P, d_model]: the residual z_l is added to
    tokens: torch.Tensor  # [P] predicted token ŷ
    probabilities: torch.Tensor  # [P] P(ŷ), float32
    last: torch.Tensor  # [P] position of each prompt's last token
    cache: PrefixCache  # keys/values [P, kv_heads, max_n - 1, head_dim]


def _prefix_pass(model: nn.Module, prompts: list[torch.Tensor]) -> _Prefix:
    """One forward of the right-padded prompts, capturing each prompt's last position."""
    adapter = get_adapter(model)
    device = prompts[0].device
    lengths = torch.tensor([len(ids) for ids in prompts], device=device)
    padded = torch.zeros(len(prompts), int(lengths.max()), dtype=torch.long, device=device)
    for p, ids in enumerate(prompts):
        padded[p, : len(ids)] = ids
    last = lengths - 1
    batch = torch.arange(len(prompts), device=device)
    z: dict[int, torch.Tensor] = {}
    resid: dict[int, torch.Tensor] = {}
    final: dict[int, torch.Tensor] = {}

    def keep(store, i, value):
        store[i] = value[batch, last].detach().clone()

    handles = [adapter.final_norm.register_forward_hook(lambda _m, _a, out: keep(final, 0, out))]
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
            # Right padding needs no attention mask: causality keeps every real position
            # from seeing the padding after it.
            model(
                input_ids=padded,
                use_cache=True,
                **{cache_kwarg(model): kv_cache},
                **last_logits_kwargs(model),
            )
            logits = adapter.lm_head(final[0]).float()
    finally:
        for h in handles:
            h.remove()
    probs = torch.softmax(logits, dim=-1)
    probabilities, tokens = probs.max(dim=-1)
    num_layers = adapter.num_layers
    cache = PrefixCache(*_prefix_kv(kv_cache, num_layers, padded.shape[1] - 1))
    return _Prefix(
        z=[z[i] for i in range(num_layers)],
        resid=[resid[i] for i in range(num_layers)],
        tokens=tokens,
        probabilities=probabilities,
        last=last,
        cache=cache,
    )


def exact_attribute_many(
    model: nn.Module,
    prompts: Sequence,
    alphas: np.ndarray,
    weights: np.ndarray,
    *,
    layers_per_batch: int | None = None,
    masked_rows: bool | None = None,
) -> list[KVAResult]:
    """KVA of several prompts in shared passes: one :class:`KVAResult` per prompt, in order.

    ``layers_per_batch``: how many layers' rows share one forward/backward (default: all,
    ``m x L`` rows per prompt; lower it to bound memory). ``masked_rows``: lay rows along the
    sequence axis with a 4-D mask (default where the attention backend honours one) or, if
    False, one layer at a time with rows along the batch axis; that path takes the prompts
    one at a time.
    """
    ids = [as_batch_ids(model, p)[0] for p in prompts]
    if not ids:
        return []
    config = get_adapter(model).config
    if masked_rows is None:
        masked_rows = getattr(config, "_attn_implementation", "eager") in MASKED_ATTENTION
    if not masked_rows:
        return [_attribute_batch(model, [one], alphas, weights, 1, False)[0] for one in ids]
    return _attribute_batch(model, ids, alphas, weights, layers_per_batch, True)


def _attribute_batch(
    model: nn.Module,
    ids: list[torch.Tensor],
    alphas: np.ndarray,
    weights: np.ndarray,
    layers_per_batch: int | None,
    masked_rows: bool,
) -> list[KVAResult]:
    adapter = get_adapter(model)
    config = adapter.config
    num_layers = adapter.num_layers
    alphas, weights, zero_idx = with_baseline(np.asarray(alphas), np.asarray(weights))
    group_size = num_layers if layers_per_batch is None else max(1, int(layers_per_batch))

    # 1. One normal forward: z_l, the residual r_l it is added to, prefix keys/values, ŷ.
    pre = _prefix_pass(model, ids)
    num_prompts = len(ids)
    dtype = pre.z[0].dtype
    device = pre.z[0].device
    alpha_t = torch.tensor(alphas, dtype=torch.float32, device=device)
    weight_t = torch.tensor(weights, dtype=torch.float64)
    m = len(alphas)
    cache_kw = cache_kwarg(adapter.layers[0])
    pos = pre.last[:, None]  # [P, 1]
    cos, sin = adapter.rotary_emb(pre.z[0][:, None], position_ids=pos)  # [P, 1, head_dim]
    width = pre.cache.get_seq_length()
    visible = [
        _prefix_visible(pre.last, width, _sliding_window(layer, config)) for layer in adapter.layers
    ]
    backend_masks = getattr(config, "_attn_implementation", "eager") in MASKED_ATTENTION
    token_idx = pre.tokens[:, None, None]  # [P, 1, 1]

    attributions = torch.zeros(num_prompts, num_layers, adapter.d_model, dtype=torch.float64)
    baseline = torch.zeros(num_prompts, num_layers, dtype=torch.float32)

    # 2. Rows: every (layer, step) pair's last position, from layer l+1 to the LM head.
    with frozen_parameters(model):
        for start in range(0, num_layers, group_size):
            group = list(range(start, min(start + group_size, num_layers)))
            leaves = {
                src: (alpha_t[None, :, None] * pre.z[src][:, None].float())
                .to(dtype)
                .requires_grad_()
                for src in group
            }  # [P, m, d_model] each
            hidden = None  # [P, rows, d_model]; rows of layer `src` join just before `src + 1`
            for j in range(group[0] + 1, num_layers + 1):
                if j - 1 in group:
                    new = pre.resid[j - 1][:, None] + leaves[j - 1]
                    hidden = new if hidden is None else torch.cat([hidden, new], dim=1)
                if j == num_layers:
                    break
                rows = hidden.shape[1]
                if masked_rows:
                    x = hidden
                    emb = (cos.expand(-1, rows, -1), sin.expand(-1, rows, -1))
                    mask = _row_mask(visible[j], rows, dtype)
                    position_ids = pos.expand(-1, rows)
                else:  # one prompt: its rows along the batch axis, a query length of 1
                    x = hidden.transpose(0, 1)
                    emb = (cos.expand(rows, -1, -1), sin.expand(rows, -1, -1))
                    # A query of length 1 needs no causal mask; only a sliding window that cuts
                    # the prefix does (flash attention applies the window itself).
                    mask = None
                    if backend_masks and not bool(visible[j].all()):
                        mask = _row_mask(visible[j], 1, dtype)
                    position_ids = pos.expand(rows, -1)
                y = adapter.layers[j](
                    x,
                    attention_mask=mask,
                    position_ids=position_ids,
                    position_embeddings=emb,
                    use_cache=False,
                    **{cache_kw: pre.cache},
                )
                y = layer_output(y)
                hidden = y if masked_rows else y.transpose(0, 1)

            row_logits = adapter.lm_head(adapter.final_norm(hidden))  # [P, rows, vocab]
            with torch.no_grad():
                probs = torch.softmax(row_logits.float(), dim=-1)
                p = probs.gather(-1, token_idx.expand(-1, probs.shape[1], 1))  # [P, rows, 1]
                # ∂P(ŷ)/∂logits = P(ŷ)·(onehot(ŷ) - softmax), applied directly: autograd's
                # softmax + gather backward would add two more [rows, vocab] passes.
                grad_logits = probs.mul_(-p)
                grad_logits.scatter_add_(-1, token_idx.expand(-1, probs.shape[1], 1), p)
            grads = torch.autograd.grad(
                row_logits,
                [leaves[src] for src in group],
                grad_outputs=grad_logits.to(row_logits.dtype),
            )
            p = p[..., 0].cpu()  # [P, rows]: m per layer, in group order
            for g, (src, grad) in enumerate(zip(group, grads, strict=True)):
                integral = (weight_t[None, :, None] * grad.double().cpu()).sum(1)  # [P, d]
                attributions[:, src] = pre.z[src].double().cpu() * integral
                baseline[:, src] = p[:, g * m + zero_idx]

    return [
        KVAResult(
            attributions=attributions[i].float(),
            predicted_token=int(pre.tokens[i]),
            probability=float(pre.probabilities[i]),
            baseline_probabilities=baseline[i],
            prompt_length=len(ids[i]),
        )
        for i in range(num_prompts)
    ]
