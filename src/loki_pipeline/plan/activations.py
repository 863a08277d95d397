"""Activation memory: the bytes autograd keeps per token and layer until the backward pass.

Derived tensor by tensor from what the Hugging Face Llama/Qwen2/Qwen3/Mistral blocks (sdpa
attention), peft's LoRA layers and LoKI's layer save for backward, and checked against autograd's
own saved tensors on tiny models (``tests/test_plan_memory.py``). Notation: ``h`` hidden size,
``f`` intermediate size, ``qd = heads x head_dim``, ``kvd = kv_heads x head_dim``, ``b`` the
activation dtype's bytes (2 under bf16/fp16 autocast, 4 in float32), ``F = 4`` (float32).

Per token of a block whose input needs a gradient (frozen weights)::

    2 (F h + F)               each RMSNorm's float32 input and 1/rms
    b (2 qd + 2 kv) + F heads  attention: query, output, keys and values, log-sum-exp per head;
                               kv = qd when a padding mask makes transformers repeat the
                               GQA keys/values for sdpa, else kvd
    b T                        that mask, converted to the query dtype in every layer (T = the
                               sequence length; only when the batch is padded)
    3 b f (+ b f)              gate output, SiLU output, up output (+ their product, saved when
                               down_proj's input is needed: LoKI, full, a LoRA on down_proj)
    F (qd + kvd + heads + kvh) Qwen3 only: its per-head query/key RMSNorm inputs and 1/rms

plus the method's own tensors (see :func:`layer_bytes`).
"""

from __future__ import annotations

from loki_pipeline.plan.dims import LINEARS, ModelDims

F32 = 4


def block_bytes(
    dims: ModelDims,
    *,
    act_bytes: int,
    mask: bool,
    seq: int,
    product: bool,
) -> float:
    """Bytes per token that every block saves when its input needs a gradient (module doc)."""
    h, f, qd, kvd = dims.hidden_size, dims.intermediate_size, dims.q_dim, dims.kv_dim
    b = act_bytes
    kv = qd if mask and dims.num_kv_heads < dims.num_heads else kvd
    total = 2 * (F32 * h + F32)
    total += b * (2 * qd + 2 * kv) + F32 * dims.num_heads
    total += b * seq if mask else 0
    total += b * f * (4 if product else 3)
    if dims.qk_norm:
        total += F32 * (qd + kvd + dims.num_heads + dims.num_kv_heads)
    return total


def lora_input_bytes(
    dims: ModelDims, targets: tuple[str, ...], act_bytes: int, dropout: bool
) -> float:
    """Inputs of the LoRA ``A`` matrices, per token and block.

    In float32 the adapted linears read shared tensors: q/k/v the first norm's output, gate/up
    the second's (one copy each); o_proj and down_proj read tensors the block saves anyway.
    Under autocast peft casts each input to the adapter's float32 and autocast back to ``b``, so
    every target keeps its own copy (``b x in``, down_proj's instead of the block's product);
    so does dropout, plus its mask, counted in float32 (its dtype on CPU, where peft's float32
    cast feeds it; CUDA keeps a 1-byte mask).
    """
    shapes = dims.linear_shapes()
    if dropout or act_bytes != F32:
        mask = F32 if dropout else 0
        return sum((act_bytes + mask) * shapes[t][0] for t in targets)
    h = dims.hidden_size
    shared = 0
    if {"q_proj", "k_proj", "v_proj"} & set(targets):
        shared += F32 * h
    if {"gate_proj", "up_proj"} & set(targets):
        shared += F32 * h
    return shared


def layer_bytes(
    dims: ModelDims,
    kind: str,
    *,
    act_bytes: int,
    mask: bool,
    seq: int,
    rows: float = 0,
    rank: int | None = None,
    targets: tuple[str, ...] = LINEARS,
    dora: bool = False,
    dropout: bool = False,
) -> float:
    """Saved bytes per token of one block (not the first) while training with ``kind``.

    ``kind``: 'loki' (``rows`` trained rows of down_proj, LoKI* with ``rank``), 'lora' (peft
    LoRA family of ``rank`` on ``targets``; DoRA with ``dora``) or 'full'. On top of
    :func:`block_bytes`:

    - LoKI: ``b |S|`` (the selected rows' update), LoKI* also ``b r`` (its ``B x`` product);
    - LoRA: the A inputs (:func:`lora_input_bytes`) and ``b r`` per target (the A outputs);
      DoRA also ``2 b out`` per target (the base and LoRA results its magnitude scales);
    - full: each norm's normalised input (float32: trained embeddings are upcast, so the
      residual stream is float32) and its output as the linears read it: one float32 copy per
      norm in float32, one ``b`` copy per reading linear under autocast (3 + 2), as autocast
      casts a float32 input anew for each; Qwen3 also ``b (qd + kvd)``, its q/k norms' inputs.
    """
    h, b = dims.hidden_size, act_bytes
    # down_proj's input is kept as it is when its own reader needs it: LoKI's delta, the full
    # weight, a float32 LoRA without dropout (else the LoRA keeps a copy of its own)
    shared_lora = kind == "lora" and b == F32 and not dropout
    product = kind in ("loki", "full") or (shared_lora and "down_proj" in targets)
    total = block_bytes(dims, act_bytes=b, mask=mask, seq=seq, product=product)
    if kind == "loki":
        total += b * rows + (b * rank if rank else 0)
    elif kind == "lora":
        total += lora_input_bytes(dims, targets, b, dropout) + b * (rank or 0) * len(targets)
        if dora:
            shapes = dims.linear_shapes()
            total += 2 * b * sum(shapes[t][1] for t in targets)
    elif kind == "full":
        # trained embeddings are upcast to float32, so the residual stream and each norm's
        # normalised input are float32 in either precision
        total += 2 * F32 * h + (2 * F32 * h if b == F32 else 5 * b * h)
        if dims.qk_norm:
            total += b * (dims.q_dim + dims.kv_dim)
    else:
        raise ValueError(f"unknown training kind {kind!r}")
    return total


def first_layer_savings(dims: ModelDims, kind: str, per_layer: float, *, act_bytes: int,
                        rows: float = 0, rank: int | None = None) -> float:  # fmt: skip
    """Bytes per token the first block saves less than the others when the embeddings are
    frozen (every method but full): nothing needs a gradient before the first trained tensor.

    LoKI's first block keeps only the delta's input and output (``b f + b |S|`` and LoKI*'s
    ``b r``); a LoRA's first block all but its first norm's input (``F h + F``).
    """
    if kind == "full":
        return 0.0
    if kind == "loki":
        kept = act_bytes * (dims.intermediate_size + rows + (rank or 0))
        return per_layer - kept
    return F32 * dims.hidden_size + F32
