"""A small, resumable SFT loop shared by every method (LoKI, LoKI*, full, PEFT baselines).

Why not ``transformers.Trainer``: the loop needs three things it makes awkward: the loss on
supervised positions only (the LM head over a 49k vocabulary is then applied to the assistant
tokens, not to every prompt token), checkpoints of the *trainable* tensors only (a LoKI
checkpoint is a few MB) kept outside the final output directory, and a bit-exact resume.

Contract: micro-batch ``m`` of the run is fixed by ``(seed, m)`` alone (each epoch is a
``randperm`` seeded with ``seed + epoch``), the optimizer, scheduler and RNG state are saved
every ``save_every`` optimizer steps, so a killed run resumed from its last checkpoint ends
with the same weights as an uninterrupted one.

Data parallel (N processes under torchrun, see :mod:`loki_pipeline.train.distributed`): step
``s`` takes the global batch of micro-batches ``[s*A*N, (s+1)*A*N)`` of that one order (``A`` =
``grad_accum``), rank ``r`` the ``A`` micro-batches from ``s*A*N + r*A``; each rank scales its
loss by ``1/A`` and DDP averages the gradients over the ranks, so a step's gradient is the mean
over the ``A*N`` micro-batches, as one process with ``grad_accum = A*N`` computes it. The data
order, the step count, the schedule and the logged loss and tokens (summed over the ranks) are
those of the global batch, so N processes give the weights and log of one process with
``grad_accum`` x N (to float tolerance), and a checkpoint resumes under any process count.

Checkpoints (one directory, safetensors and JSON, never a pickle) are
:mod:`loki_pipeline.train.checkpoint`'s; the loss figure is :mod:`loki_pipeline.train.loss_figure`'s.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from loki_pipeline.errors import LokiInputError
from loki_pipeline.models.architecture import get_adapter
from loki_pipeline.select.selection_file import Selection
from loki_pipeline.train import distributed
from loki_pipeline.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from loki_pipeline.train.loss import chunked_cross_entropy
from loki_pipeline.train.methods import Method
from loki_pipeline.train.settings import TrainSettings

log = logging.getLogger(__name__)

#: settings that do not change the trained weights: changing them keeps a checkpoint usable.
#: grad_accum and processes only split the global batch (batch_size x processes x grad_accum,
#: fingerprinted as such), distributed only where its parts are held; gradient checkpointing
#: recomputes the same activations (tests/test_train_checkpointing.py), the chunked loss the
#: same loss (tests/test_train_loss.py).
NOT_FINGERPRINTED = (
    "save_every",
    "keep_checkpoints",
    "grad_accum",
    "processes",
    "distributed",
    "gradient_checkpointing",
    "loss_chunk_tokens",
)
LOG_FIELDS = (
    "step", "epoch", "loss", "learning_rate", "grad_norm", "tokens", "elapsed_s", "val_loss",
)  # fmt: skip


# --------------------------------------------------------------------------- batches and loss
def pad_collate(examples: Sequence[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad ``input_ids`` / ``labels`` (-100) into a batch with its attention mask."""
    from loki_pipeline.data.sft import collate_sft

    return collate_sft(examples, pad_id)


def _hf_model(model: nn.Module) -> nn.Module:
    """The underlying *ForCausalLM (PEFT wraps it twice)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def sft_loss(
    model: nn.Module, batch: dict[str, torch.Tensor], chunk_tokens: int = 0
) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over supervised tokens; returns (loss, #tokens).

    Equal to ``model(**batch).loss``, but the LM head only runs where ``labels != -100``,
    which for chat SFT (long prompts, short answers) removes most of the head's cost;
    ``chunk_tokens`` > 0 runs it that many tokens at a time (:mod:`loki_pipeline.train.loss`).
    """
    arch = get_adapter(_hf_model(model))
    hidden = arch.decoder(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    loss = chunked_cross_entropy(arch.lm_head, hidden[:, :-1][keep], targets[keep], chunk_tokens)
    return loss, int(keep.sum())


def hold_out(
    examples: Sequence[dict[str, Any]], val_size: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, validation): ``ceil(val_size * n)`` examples chosen by a seeded shuffle (as
    LLaMA-Factory's ``val_size`` through ``train_test_split``), the rest in their order; at
    least one example is left to train on."""
    if val_size <= 0:
        return list(examples), []
    n_val = math.ceil(val_size * len(examples))
    if n_val >= len(examples):
        raise LokiInputError(
            f"val_size={val_size} holds out all {len(examples)} examples: nothing left to train"
        )
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed))
    held = set(order[:n_val].tolist())
    train = [ex for i, ex in enumerate(examples) if i not in held]
    return train, [examples[i] for i in sorted(held)]


class SFTObjective(nn.Module):
    """:func:`sft_loss` of ``model`` as a module, so DDP and FSDP can wrap the loss computation
    (it calls the decoder and the LM head apart, which their hooks on ``model.forward`` miss)."""

    def __init__(self, model: nn.Module, chunk_tokens: int = 0):
        super().__init__()
        self.model = model
        self.chunk_tokens = chunk_tokens

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        return sft_loss(self.model, batch, self.chunk_tokens)


@torch.no_grad()
def validation_loss(
    model: nn.Module,
    examples: Sequence[dict[str, Any]],
    settings: TrainSettings,
    pad_id: int,
    objective: Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, int]] | None = None,
) -> float:
    """Token-weighted mean loss over ``examples`` (batches of ``batch_size``, no gradient),
    so it does not depend on how the examples are batched. ``objective`` computes the loss of a
    batch (default ``sft_loss(model, batch)``; a sharded model's must run through its wrapper)."""
    objective = objective or (lambda batch: sft_loss(model, batch, settings.loss_chunk_tokens))
    device = next(model.parameters()).device
    autocast = (
        torch.autocast(device.type, dtype=getattr(torch, settings.dtype))
        if settings.dtype != "float32"
        else contextlib.nullcontext()
    )
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(examples), settings.batch_size):
        batch = pad_collate(examples[start : start + settings.batch_size], pad_id)
        with autocast:
            loss, n = objective({k: v.to(device) for k, v in batch.items()})
        total += float(loss) * n
        tokens += n
    model.train(was_training)
    return total / tokens if tokens else float("nan")


# --------------------------------------------------------------------------- method set-up
def count_parameters(model: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def prepare_model(
    model: nn.Module,
    method: Method,
    settings: TrainSettings,
    *,
    selection: Selection | None = None,
    calibration: Sequence[dict[str, Any]] | None = None,
) -> nn.Module:
    """Make exactly the method's parameters trainable (its kind's ``prepare`` hook: LoKI wraps
    in place, PEFT wraps around); ``calibration`` examples feed CorDA's initialisation."""
    torch.manual_seed(settings.seed)  # LoKI*'s B and LoRA's A are random: fix them
    return method.spec.prepare(
        model, method, settings, selection=selection, calibration=calibration or []
    )


def enable_gradient_checkpointing(model: nn.Module) -> nn.Module:
    """Recompute each decoder layer's activations in the backward pass (the HF model under any
    PEFT wrapper); only training mode with gradients checkpoints, so evaluation is unchanged.

    Non-reentrant ``torch.utils.checkpoint``: the reentrant kind only lets gradients through a
    layer whose *inputs* require grad, and LoKI (like every PEFT method) freezes the embeddings,
    so no trained row would get a gradient (the loss would not even require one). The
    non-reentrant kind follows the parameters used inside the layer. Transformers also hooks
    the embeddings to make their output require grad, a workaround for the reentrant kind; it is
    removed, so the backward computes no gradient for the frozen embedding output. ``sft_loss``
    already passes ``use_cache=False`` (no KV cache while training).
    """
    hf = _hf_model(model)
    kwargs = {"use_reentrant": False}
    if hasattr(hf, "activation_checkpointing_enable"):  # transformers 5 renamed it
        hf.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    hf.disable_input_require_grads()
    return model


# --------------------------------------------------------------------------- the loop
def micro_batches_per_step(settings: TrainSettings) -> int:
    """Micro-batches of one global batch: ``grad_accum`` on each of ``processes`` ranks."""
    return settings.grad_accum * settings.processes


def total_steps(num_examples: int, settings: TrainSettings) -> int:
    """Optimizer steps (global batches) of a run: ``max_steps`` if set, else
    ``ceil(epochs * micro-batches / (grad_accum * processes))``."""
    if settings.max_steps > 0:
        return settings.max_steps
    batches = math.ceil(num_examples / settings.batch_size)
    return max(1, math.ceil(settings.epochs * batches / micro_batches_per_step(settings)))


def micro_batch(examples, m: int, settings: TrainSettings) -> tuple[list[int], int]:
    """Example indices of micro-batch ``m`` and its epoch: a pure function of (seed, m)."""
    per_epoch = math.ceil(len(examples) / settings.batch_size)
    epoch, j = divmod(m, per_epoch)
    order = torch.randperm(
        len(examples), generator=torch.Generator().manual_seed(settings.seed + epoch)
    )
    return order[j * settings.batch_size : (j + 1) * settings.batch_size].tolist(), epoch


def _fingerprint(settings: TrainSettings, run: Any) -> dict[str, Any]:
    """What the weights depend on, as JSON would give it back (so a reread compares equal)."""
    fp = {f"settings.{k}": v for k, v in settings.to_dict().items() if k not in NOT_FINGERPRINTED}
    fp["global_batch"] = settings.batch_size * micro_batches_per_step(settings)
    fp.update(run if isinstance(run, Mapping) else {"run": run})
    return json.loads(json.dumps(fp, default=str))


def _accumulate(objective, examples, step: int, settings: TrainSettings, pad_id: int, device,
                autocast) -> tuple[float, int]:  # fmt: skip
    """Forward and backward of this rank's micro-batches of global batch ``step``.

    Returns the step's loss (the mean over all its micro-batches) and supervised tokens, summed
    over the ranks. DDP averages the gradients once, after the last micro-batch.
    """
    world = distributed.current()
    per_step = micro_batches_per_step(settings)
    first = step * per_step + world.rank * settings.grad_accum
    total_loss, tokens = 0.0, 0
    for a in range(settings.grad_accum):
        idx, _ = micro_batch(examples, first + a, settings)
        batch = pad_collate([examples[i] for i in idx], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        last = a == settings.grad_accum - 1
        defer = not last and hasattr(objective, "no_sync")  # DDP: average once, at the end
        with objective.no_sync() if defer else contextlib.nullcontext():
            with autocast:
                loss, n = objective(batch)
            (loss / settings.grad_accum).backward()
        total_loss += float(loss.detach()) / per_step
        tokens += n
    if world.size == 1:
        return total_loss, tokens
    total_loss, total_tokens = distributed.all_sum([total_loss, tokens])
    return total_loss, int(total_tokens)


def train_model(
    model: nn.Module,
    examples: Sequence[dict[str, Any]],
    settings: TrainSettings,
    *,
    pad_id: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    fingerprint: Mapping[str, Any] | None = None,
    on_step: Callable[[int, dict[str, Any]], None] | None = None,
    progress: bool = True,
    val_examples: Sequence[dict[str, Any]] = (),
) -> list[dict[str, Any]]:
    """Train the model's trainable parameters in place; returns one log row per optimizer step.

    AdamW, warm-up then ``settings.scheduler``, gradient accumulation (loss averaged over the
    micro-batches of a step), gradient clipping. ``on_step(step, row)`` runs after every step.
    ``fingerprint`` names the inputs the weights depend on (with fingerprints of their
    content); with the settings it must match a checkpoint for training to resume from it.
    ``val_examples`` (held out, see :func:`hold_out`): their loss is the ``val_loss`` of every
    ``save_every``-th step's row and of the last (None in the other rows).

    In a process group (torchrun) every rank calls it with the same arguments: the loss runs
    through DDP (or FSDP, ``settings.distributed``), ``settings.processes`` is the group's size,
    rank 0 alone writes checkpoints and shows progress, and every rank returns the same rows.
    A model sharded by FSDP stays sharded (see ``distributed.gather_state_dict``).
    """
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    if not examples:
        raise LokiInputError("no training examples: the dataset is empty")
    if not any(p.requires_grad for p in model.parameters()):
        raise LokiInputError("the model has no trainable parameters")
    world = distributed.current()
    if settings.processes != world.size:  # how it was launched decides; the weights do not
        settings = dataclasses.replace(settings, processes=world.size)
    raw = SFTObjective(model, settings.loss_chunk_tokens)
    objective = raw
    if world.size > 1:
        layers = get_adapter(_hf_model(model)).layers
        objective = distributed.wrap(raw, settings.distributed, layers)
    params = [p for p in model.parameters() if p.requires_grad]  # FSDP: this rank's shards
    device = params[0].device
    steps = total_steps(len(examples), settings)
    optimizer = torch.optim.AdamW(
        params, lr=settings.effective_lr, weight_decay=settings.weight_decay
    )
    scheduler = get_scheduler(
        settings.scheduler,
        optimizer,
        num_warmup_steps=math.ceil(settings.warmup_ratio * steps),
        num_training_steps=steps,
    )
    ckpt = None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_NAME
    fingerprint = _fingerprint(settings, fingerprint or {})
    start, rows = (
        (0, [])
        if ckpt is None
        else load_checkpoint(ckpt, model, optimizer, scheduler, fingerprint)
    )
    distributed.check_same(start, "a checkpoint (another resume step)")
    sharded = distributed.is_sharded(model)  # saving gathers: every rank takes part
    autocast = (
        torch.autocast(device.type, dtype=getattr(torch, settings.dtype))
        if settings.dtype != "float32"
        else contextlib.nullcontext()
    )
    model.train()
    t0 = time.perf_counter() - (rows[-1]["elapsed_s"] if rows else 0.0)
    bar = tqdm(total=steps, initial=start, desc="train", disable=not (progress and world.main),
               unit="step")  # fmt: skip
    per_epoch = math.ceil(len(examples) / settings.batch_size)
    for step in range(start, steps):
        total_loss, tokens = _accumulate(
            objective, examples, step, settings, pad_id, device, autocast
        )
        grad_norm = torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        save = (step + 1) % settings.save_every == 0 or step + 1 == steps
        row = {
            "step": step + 1,
            # the epoch of the step's last micro-batch
            "epoch": ((step + 1) * micro_batches_per_step(settings) - 1) // per_epoch,
            "loss": round(total_loss, 6),
            "learning_rate": lr,
            "grad_norm": round(float(grad_norm), 6),
            "tokens": tokens,
            "elapsed_s": round(time.perf_counter() - t0, 3),
            "val_loss": None,
        }
        if val_examples and save:  # every rank: an FSDP forward needs them all
            loss = validation_loss(model, val_examples, settings, pad_id, objective=raw)
            row["val_loss"] = round(loss, 6)
        rows.append(row)
        bar.update(1)
        bar.set_postfix(loss=f"{total_loss:.4f}")
        if ckpt is not None and save and (world.main or sharded):
            save_checkpoint(
                ckpt, model, optimizer, scheduler, step + 1, rows, fingerprint, write=world.main
            )
        if on_step is not None:
            on_step(step + 1, row)
    bar.close()
    model.eval()
    return rows


# --------------------------------------------------------------------------- outputs
def write_train_log(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
