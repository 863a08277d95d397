"""Peak memory of one KVA, training or evaluation job, from the model's shapes and the settings.

Every estimate is the peak of one device (a GPU; the host itself on CPU), split into parts,
plus the host RAM the job's process needs (what Snakemake's ``mem_mb`` asks for). Bytes
throughout; ``b`` is the bytes of the compute dtype (2 for bfloat16/float16, 4 for float32),
``F = 4``, ``N`` the model's parameters, ``P`` its trainable parameters, ``V`` the vocabulary,
``L`` the layers, ``h`` the hidden size; activations per token and layer come from
:mod:`loki_pipeline.plan.activations`. The formulas follow what this package's code keeps
alive (trainer, KVA exact backend, generation), not a generic rule of thumb. Light: no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loki_pipeline.plan.activations import F32, block_bytes, first_layer_savings, layer_bytes
from loki_pipeline.plan.dims import LINEARS, ModelDims
from loki_pipeline.select.naming import global_quota, nodes_per_layer_quota

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
#: Host RAM of a job's process before it loads anything: 0.40 GB resident with torch,
#: transformers and peft imported (benchmarks/memory_plan.py); lm-eval, tokenizers and data
#: add to it, so 1 GB (our rounding).
HOST_BASE = 1.0e9
#: What CUDA adds to the host side (driver, kernels, context): our assumption, unmeasured here.
HOST_CUDA = 3.0e9


@dataclass
class Estimate:
    """Peak bytes of one job: ``parts`` on each device (GPU, or the host on CPU), ``host`` the
    RAM of its processes, ``gpus`` the devices it uses (0 on CPU)."""

    parts: dict[str, float]
    host: float
    gpus: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def device(self) -> float:
        return sum(self.parts.values())


def dtype_bytes(dtype: str, dims: ModelDims) -> int:
    """Bytes per element of ``dtype`` ('auto': the checkpoint's own)."""
    return DTYPE_BYTES[dims.dtype if dtype == "auto" else dtype]


def host_bytes(device_bytes: float, load_bytes: float, on_gpu: bool, extra: float = 0.0) -> float:
    """Host RAM of one process over the imports (and CUDA's share): on CPU the device peak
    itself; on a GPU the larger of the weights as ``from_pretrained`` reads them into RAM
    before ``.to('cuda')`` and ``extra`` (copies the job makes on the host later)."""
    if not on_gpu:
        return HOST_BASE + device_bytes
    return HOST_BASE + HOST_CUDA + max(load_bytes, extra)


# --------------------------------------------------------------------------- training
def lora_targets(setting: str | list[str]) -> tuple[str, ...]:
    """The block linears a PEFT baseline adapts ('all-linear': all seven)."""
    if setting == "all-linear":
        return LINEARS
    return tuple(t for t in LINEARS if t in set(setting))


def trained_rows(dims: ModelDims, method: Any) -> tuple[int, float]:
    """(rows trained in all, mean per layer) of a LoKI selection: ``L x floor(q h / 100)``
    layer-balanced, ``floor(q/100 L h)`` for the global strategies (select.naming)."""
    if method.strategy.startswith("global"):
        total = global_quota(method.q, dims.num_layers, dims.hidden_size)
        return total, total / dims.num_layers
    per_layer = nodes_per_layer_quota(method.q, dims.hidden_size)
    return per_layer * dims.num_layers, float(per_layer)


def trainable_params(dims: ModelDims, method: Any, settings: Any) -> int:
    """Parameters a method trains (what ``trainable_params.json`` reports):

    - LoKI ``|S| f`` (the selected rows of down_proj), LoKI* ``|S| r + L r f``;
    - LoRA family ``L sum_t r (in_t + out_t)`` over the targets, DoRA ``+ L sum_t out_t``;
    - full: ``N``.
    """
    if method.kind == "full":
        return dims.num_params()
    if method.kind in ("loki", "loki*"):
        rows, _ = trained_rows(dims, method)
        if method.rank is None:
            return rows * dims.intermediate_size
        return rows * method.rank + dims.num_layers * method.rank * dims.intermediate_size
    shapes = dims.linear_shapes()
    targets = lora_targets(settings.peft_target_modules)
    per_layer = sum(method.rank * (shapes[t][0] + shapes[t][1]) for t in targets)
    if method.kind == "dora":
        per_layer += sum(shapes[t][1] for t in targets)
    return dims.num_layers * per_layer


def root_params(dims: ModelDims) -> int:
    """Parameters outside the blocks: embeddings, final norm and an untied LM head."""
    return dims.num_params() - dims.num_layers * dims.layer_params()


def activation_kind(method: Any) -> str:
    return {"loki": "loki", "loki*": "loki", "full": "full"}.get(method.kind, "lora")


def training_activations(
    dims: ModelDims, method: Any, settings: Any, *, tokens: int, seq: int, mask: bool,
    checkpointing: bool,
) -> float:  # fmt: skip
    """Saved activations of the blocks for ``tokens = batch x seq`` tokens.

    Without checkpointing ``tokens (L a - s)``, ``a`` per block (:func:`activations.layer_bytes`),
    ``s`` what the first block saves less with frozen embeddings. With checkpointing each block
    keeps its input (``L h b_r`` per token, ``b_r`` the residual stream's bytes: float32 for
    full fine-tuning, whose embeddings train in float32) and one block's ``a`` is recomputed
    during the backward pass.
    """
    b = DTYPE_BYTES[settings.dtype]
    kind = activation_kind(method)
    _, rows = trained_rows(dims, method) if kind == "loki" else (0, 0.0)
    per_layer = layer_bytes(
        dims,
        kind,
        act_bytes=b,
        mask=mask,
        seq=seq,
        rows=rows,
        rank=method.rank,
        targets=lora_targets(settings.peft_target_modules),
        dora=method.kind == "dora",
        dropout=settings.lora_dropout > 0,
    )
    if checkpointing:
        residual = F32 if kind == "full" else b
        return tokens * (dims.num_layers * dims.hidden_size * residual + per_layer)
    saving = first_layer_savings(dims, kind, per_layer, act_bytes=b, rows=rows, rank=method.rank)
    return tokens * (dims.num_layers * per_layer - saving)


def loss_head_bytes(
    dims: ModelDims, *, tokens: int, supervised: float, act_bytes: int, chunk_tokens: int = 0,
    head_trained: bool = False,
) -> float:  # fmt: skip
    """The loss at its peak (``trainer.sft_loss``: the LM head on supervised positions only).

    Per token the final norm's float32 input and 1/rms (``F h + F``). The plain loss
    (``chunk_tokens`` 0), per supervised token: the logits in ``b``, their float32 copy and
    log-softmax (saved) and, at the start of the backward pass, the log-softmax's and logits'
    float32 gradients: ``V (3 F + b)`` (``3 F V`` in float32, where the copy is the logits
    themselves). The chunked loss (``train.loss``, torch's ``linear_cross_entropy``) holds one
    chunk's float32 logits and softmax and their cast to ``b``, ``C V (2 F + b)`` for
    ``C = min(chunk_tokens, supervised)``, and the input's gradient it computes in the forward
    pass (``h (F + b)`` per supervised token: float32 accumulator and result), plus a float32
    scratch for the head's own gradient (``V h F``) when the head trains (full fine-tuning).
    Measured on the CPU (benchmarks/loss_chunk.py) it stays under this bound.
    """
    extra = act_bytes if act_bytes != F32 else 0
    norm = tokens * (F32 * dims.hidden_size + F32)
    if chunk_tokens <= 0:
        return norm + supervised * dims.vocab_size * (3 * F32 + extra)
    rows = min(float(chunk_tokens), supervised)
    held = rows * dims.vocab_size * (2 * F32 + extra)
    held += supervised * dims.hidden_size * (F32 + act_bytes)
    scratch = dims.vocab_size * dims.hidden_size * F32 if head_trained else 0
    return norm + held + scratch


def training_memory(
    dims: ModelDims,
    method: Any,
    settings: Any,
    *,
    supervised_fraction: float,
    on_gpu: bool,
) -> Estimate:
    """Peak of one training process (one GPU of a data-parallel run).

    ``settings`` is the run's resolved ``TrainSettings``; ``gradient_checkpointing``,
    ``processes`` and ``distributed`` are read when it has them (defaults off, 1, 'ddp').

    - weights ``(N - P_base) b_w + 4 P``: frozen weights in the training dtype, trained ones
      upcast to float32 (``run.py``), plus ``b P`` for autocast's cached copies of the trained
      weights when training in bf16/fp16 (``P_base``: the trained base weights, ``N`` for full,
      else 0: LoKI and the LoRA family train new tensors beside the frozen base);
    - gradients ``4 P`` (DDP: ``+ 4 P`` for its gradient buckets);
    - optimizer ``8 P``: AdamW's two float32 moments;
    - FSDP (``distributed: fsdp`` with ``processes = n``, full fine-tuning; FSDP2 per decoder
      layer, ``train.distributed``): those three parts ``/ n``, plus, gathered unsharded, one
      block's parameters and the root unit's (embeddings, final norm, LM head), which stay
      gathered from the forward to the backward pass: ``(4 + b) (block + root)``;
    - activations (:func:`training_activations`) for ``batch_size x seq`` tokens per process,
      ``seq = cutoff_len`` (capped at the model's context); a batch of several sequences is
      padded, so the padding mask's terms apply whenever ``batch_size > 1``;
    - logits (:func:`loss_head_bytes`) over ``supervised_fraction`` of the tokens, whole or
      ``loss_chunk_tokens`` at a time.

    The optimizer step needs a further ``4 P`` of temporaries (foreach AdamW) after the
    activations are freed; when that is larger it replaces them in the peak.
    """
    b = DTYPE_BYTES[settings.dtype]
    checkpointing = bool(getattr(settings, "gradient_checkpointing", False))
    processes = int(getattr(settings, "processes", 1) or 1)
    distributed = str(getattr(settings, "distributed", "ddp") or "ddp")
    seq = min(int(settings.cutoff_len), dims.context or int(settings.cutoff_len))
    tokens = int(settings.batch_size) * seq
    trained = trainable_params(dims, method, settings)
    n = dims.num_params()
    frozen = 0 if method.kind == "full" else n
    autocast_copies = b * trained if b != F32 else 0
    weights = frozen * b + F32 * trained + autocast_copies
    gradients = F32 * trained
    optimizer = 2 * F32 * trained
    notes = []
    shards = 1
    if processes > 1 and distributed == "fsdp" and method.kind == "full":
        shards = processes
        weights = weights / shards + (F32 + b) * (dims.layer_params() + root_params(dims))
        gradients /= shards
        optimizer /= shards
        notes.append(f"FSDP over {shards} GPUs: weights, gradients, optimizer state / {shards}")
    elif processes > 1:
        gradients += F32 * trained  # DDP's gradient buckets
    activations = training_activations(
        dims, method, settings, tokens=tokens, seq=seq, mask=settings.batch_size > 1,
        checkpointing=checkpointing,
    )  # fmt: skip
    logits = loss_head_bytes(
        dims, tokens=tokens, supervised=supervised_fraction * tokens, act_bytes=b,
        chunk_tokens=int(getattr(settings, "loss_chunk_tokens", 0) or 0),
        head_trained=method.kind == "full",
    )  # fmt: skip
    if F32 * trained / shards > activations + logits:
        activations, logits = F32 * trained / shards, 0.0
        notes.append("peak at the optimizer step (AdamW temporaries)")
    parts = {
        "weights": weights,
        "gradients": gradients,
        "optimizer": optimizer,
        "activations": activations,
        "logits": logits,
    }
    # the host, per process: the checkpoint read in the training dtype; a training checkpoint
    # copies the trained weights and AdamW state to the host (12 P) and serializes them (x 2)
    per_process = host_bytes(sum(parts.values()), n * b, on_gpu, extra=2 * 3 * F32 * trained)
    host = processes * per_process
    return Estimate(parts, host, gpus=processes if on_gpu else 0, notes=notes)


# --------------------------------------------------------------------------- KVA
def kva_rows(steps: int, quadrature: str) -> int:
    """Rows per layer of the exact backend: the quadrature's points, plus ``α = 0`` (the
    baseline probability) when the rule lacks it (``kva.result.with_baseline``)."""
    from loki_pipeline.kva.quadrature import quadrature_rule

    alphas, _ = quadrature_rule(quadrature, steps)
    return len(alphas) + (0 if (alphas == 0).any() else 1)


def kva_memory(dims: ModelDims, settings: Any, *, prompt_tokens: int, on_gpu: bool) -> Estimate:
    """Peak of one KVA shard (the ``exact`` backend, all layers in one pass).

    ``P = batch_prompts`` prompts of ``n = prompt_tokens`` share each pass, ``m`` rows per layer
    (:func:`kva_rows`). The prefix pass leaves the keys/values of every layer,
    ``P n L 2 kvd b``. Then rows of layers ``< j`` (``m j`` per prompt) run through block ``j``
    for ``j = 1 .. L-1`` with their gradient, so block ``j`` saves for ``P m j`` row tokens the
    block terms of frozen weights (:func:`activations.block_bytes` without keys/values), its
    keys/values over the prefix and the rows, ``P (n + m j) 2 kv b`` (``kv = qd``: the rows'
    4-D mask makes transformers repeat GQA heads), and that mask, ``P m j (n + m j) b``. The
    rows' logits: ``P m L V`` in ``b``, the float32 probabilities (their gradient in place)
    and its cast back to ``b``.

    The ``reference`` and ``captum`` backends run ``m`` copies of the prompt forward and
    backward: their activations are estimated as ``m n`` tokens through all ``L`` blocks.
    """
    b = DTYPE_BYTES[settings.dtype]
    P, n, L = int(settings.batch_prompts), int(prompt_tokens), dims.num_layers
    m = kva_rows(int(settings.steps), settings.quadrature)
    weights = dims.num_params() * b
    kv_cache = P * n * L * 2 * dims.kv_dim * b
    if settings.method == "exact":
        kv = dims.q_dim if dims.num_kv_heads < dims.num_heads else dims.kv_dim
        per_row = block_bytes(dims, act_bytes=b, mask=False, seq=0, product=False)
        per_row -= 2 * dims.kv_dim * b  # keys/values are counted over positions below
        rows_total = m * L * (L - 1) / 2  # sum over j = 1 .. L-1 of m j
        activations = P * rows_total * per_row
        activations += sum(P * (n + m * j) * 2 * kv * b for j in range(1, L))
        activations += sum(P * m * j * (n + m * j) * b for j in range(1, L))
        logits = P * m * L * dims.vocab_size * (b + F32 + (b if b != F32 else 0))
    else:
        per_token = block_bytes(dims, act_bytes=b, mask=False, seq=0, product=False)
        activations = m * n * L * per_token
        logits = m * n * dims.vocab_size * (b + 2 * F32)
    parts = {"weights": weights, "kv_cache": kv_cache, "activations": activations, "logits": logits}
    device = sum(parts.values())
    return Estimate(parts, host_bytes(device, weights, on_gpu), gpus=1 if on_gpu else 0)


# --------------------------------------------------------------------------- evaluation
def prefill_bytes(dims: ModelDims, b: int, batch: int, prompt: int) -> float:
    """One block's working set while a left-padded batch of prompts runs forward (no gradient):
    the residual and its norm's output, then the larger of attention (float32 norm temporaries,
    q/k/v before and after RoPE, GQA keys/values repeated for the padding mask, output) and the
    MLP (SiLU output, up output, product), plus the padding mask as bool and as a float copy."""
    h, f, qd, kvd = dims.hidden_size, dims.intermediate_size, dims.q_dim, dims.kv_dim
    kv = qd if batch > 1 and dims.num_kv_heads < dims.num_heads else kvd
    attention = 2 * F32 * h + b * (3 * qd + 3 * kvd + 2 * kv)
    mask = batch * prompt * prompt * (b + 1) if batch > 1 else 0
    return batch * prompt * (2 * b * h + max(attention, 3 * b * f)) + mask


def generation_parts(
    dims: ModelDims, b: int, *, batch: int, prompt: int, new_tokens: int, full_logits: bool = False
) -> dict[str, float]:
    """Greedy generation of ``new_tokens`` after ``batch`` prompts of ``prompt`` tokens.

    KV cache ``batch (prompt + new) L 2 kvd b``; the prefill's block working set
    (:func:`prefill_bytes`); logits of the last position only (transformers' generate asks for
    ``logits_to_keep=1``) in float32 with the processed scores, ``2 batch V F``, or with
    ``full_logits`` (a plain forward: reranking, log-likelihood scoring) every position's
    logits and their log-softmax, ``2 batch prompt V b``.
    """
    context = prompt + new_tokens
    if dims.context:
        context = min(context, dims.context)
    kv_cache = batch * context * dims.num_layers * 2 * dims.kv_dim * b
    logits = 2 * batch * dims.vocab_size * F32
    if full_logits:
        logits = 2 * batch * prompt * dims.vocab_size * b
    return {
        "kv_cache": kv_cache,
        "activations": prefill_bytes(dims, b, batch, prompt),
        "logits": logits,
    }


def largest(parts: list[dict[str, float]]) -> dict[str, float]:
    """The calls' parts with the largest sum (the job's peak call)."""
    return max(parts, key=lambda p: sum(p.values()))


def eval_memory(
    dims: ModelDims, dtype: str, calls: list[Mapping[str, Any]], *, on_gpu: bool
) -> Estimate:
    """Peak of an evaluation job: the weights in ``dtype`` plus its largest call
    (:func:`generation_parts` of each ``{batch, prompt, new_tokens, full_logits}``)."""
    b = dtype_bytes(dtype, dims)
    weights = dims.num_params() * b
    parts = {"weights": weights, **largest([generation_parts(dims, b, **c) for c in calls])}
    device = sum(parts.values())
    return Estimate(parts, host_bytes(device, weights, on_gpu), gpus=1 if on_gpu else 0)


def ceil_mb(nbytes: float) -> int:
    """Bytes as whole MiB, rounded up (Snakemake's ``mem_mb``; MiB, so never less than asked)."""
    return int(math.ceil(nbytes / 2**20))
