"""A small, resumable SFT loop shared by every method (LoKI, LoKI*, full, PEFT baselines).

Why not ``transformers.Trainer``: the loop needs three things it makes awkward: the loss on
supervised positions only (the LM head over a 49k vocabulary is then applied to the assistant
tokens, not to every prompt token), checkpoints of the *trainable* tensors only (a LoKI
checkpoint is a few MB) kept outside the final output directory, and a bit-exact resume.

Contract: micro-batch ``m`` of the run is fixed by ``(seed, m)`` alone (each epoch is a
``randperm`` seeded with ``seed + epoch``), the optimizer, scheduler and RNG state are saved
every ``save_every`` optimizer steps, so a killed run resumed from its last checkpoint ends
with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from loki_pipeline.errors import LokiInputError
from loki_pipeline.implant.apply import apply_loki
from loki_pipeline.implant.selection import Selection
from loki_pipeline.io import config_hash
from loki_pipeline.models.architecture import get_adapter
from loki_pipeline.train.methods import PEFT_METHODS, Method
from loki_pipeline.train.settings import TrainSettings

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"
INITIAL_ADAPTER = "initial_adapter"
#: PEFT methods whose initialisation rewrites the base weights (W -> W_res = W - B0 A0)
MUTATES_BASE = ("pissa", "corda")
LOG_FIELDS = ("step", "epoch", "loss", "learning_rate", "grad_norm", "tokens", "elapsed_s")


# --------------------------------------------------------------------------- batches and loss
def pad_collate(examples: Sequence[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad ``input_ids`` / ``labels`` (-100) into a batch with its attention mask."""
    from loki_pipeline.data.sft import collate_sft

    return collate_sft(examples, pad_id)


def _hf_model(model: nn.Module) -> nn.Module:
    """The underlying *ForCausalLM (PEFT wraps it twice)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def sft_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over supervised tokens; returns (loss, #tokens).

    Equal to ``model(**batch).loss``, but the LM head only runs where ``labels != -100``,
    which for chat SFT (long prompts, short answers) removes most of the head's cost.
    """
    arch = get_adapter(_hf_model(model))
    hidden = arch.decoder(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False
    ).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    n = int(keep.sum())
    if n == 0:
        return hidden.sum() * 0.0, 0
    logits = arch.lm_head(hidden[:, :-1][keep]).float()
    return F.cross_entropy(logits, targets[keep]), n


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
    pad_id: int = 0,
) -> nn.Module:
    """Make exactly the method's parameters trainable (LoKI wraps in place; PEFT wraps around)."""
    torch.manual_seed(settings.seed)  # LoKI*'s B and LoRA's A are random: fix them
    if method.kind == "loki":
        if selection is None:
            raise LokiInputError(f"method {method.name} needs a selection file (--selection)")
        return apply_loki(model, selection, rank=method.rank)
    if method.kind == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    return _prepare_peft(model, method, settings, calibration or [], pad_id)


def _prepare_peft(model, method: Method, settings, calibration, pad_id):
    from peft import LoraConfig, get_peft_model

    kwargs: dict[str, Any] = dict(PEFT_METHODS[method.peft_type])
    if method.peft_type == "corda":
        from peft.tuners.lora.config import CordaConfig

        kwargs["corda_config"] = CordaConfig(corda_method=settings.corda_method)
    targets = settings.peft_target_modules
    if targets == "all-linear":
        # expanded here because peft's CorDA preprocessing does not understand "all-linear"
        layers = get_adapter(model).layers
        targets = sorted(
            {n.rsplit(".", 1)[-1] for n, m in layers.named_modules() if isinstance(m, nn.Linear)}
        )
    config = LoraConfig(
        r=method.rank,
        lora_alpha=settings.lora_alpha_ratio * method.rank,
        lora_dropout=settings.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
        **kwargs,
    )
    if method.peft_type == "corda":
        # CorDA orients the adapter by the covariance of each layer's inputs on sample data
        from peft.tuners.lora.corda import preprocess_corda

        if not calibration:
            raise LokiInputError("corda needs calibration examples (the training data's first few)")
        samples = list(calibration[: settings.calibration_samples])

        @torch.no_grad()
        def run_model() -> None:
            # one unpadded sequence per call: peft's covariance hook expects batch size 1
            for example in samples:
                model(input_ids=torch.as_tensor([example["input_ids"]], device=model.device))

        preprocess_corda(model, config, run_model=run_model)
    model = get_peft_model(model, config)
    # corda_config only drives the initialisation: without it the adapter, saved as a plain
    # LoRA (see save_initial_adapter), loads without peft's "corda_config ... ignored" warning
    model.peft_config["default"].corda_config = None
    return model


def save_initial_adapter(model, method: Method, checkpoint_dir) -> Path | None:
    """PiSSA/CorDA: save the adapter as initialised, for converting the trained one to a LoRA.

    Their trained adapter only fits the residual base ``W_res``; with this initial adapter,
    ``save_pretrained(..., path_initial_model_for_weight_conversion=...)`` writes the update
    ``BA - B0 A0`` as a plain rank-2r LoRA on the original base. Call it after
    :func:`prepare_model` and before training, on every start (a resume included): each start
    recomputes ``W_res``, and this is the initial adapter that matches it.
    """
    if method.peft_type not in MUTATES_BASE:
        return None
    path = Path(checkpoint_dir) / INITIAL_ADAPTER
    model.save_pretrained(str(path))
    return path


# --------------------------------------------------------------------------- the loop
def total_steps(num_examples: int, settings: TrainSettings) -> int:
    """Optimizer steps of a run: ``max_steps`` if set, else ``ceil(epochs * batches / accum)``."""
    if settings.max_steps > 0:
        return settings.max_steps
    batches = math.ceil(num_examples / settings.batch_size)
    return max(1, math.ceil(settings.epochs * batches / settings.grad_accum))


def _micro_batch(examples, m: int, settings: TrainSettings) -> tuple[list[int], int]:
    """Example indices of micro-batch ``m`` and its epoch: a pure function of (seed, m)."""
    per_epoch = math.ceil(len(examples) / settings.batch_size)
    epoch, j = divmod(m, per_epoch)
    order = torch.randperm(
        len(examples), generator=torch.Generator().manual_seed(settings.seed + epoch)
    )
    return order[j * settings.batch_size : (j + 1) * settings.batch_size].tolist(), epoch


def _save_checkpoint(path: Path, model, optimizer, scheduler, step: int, rows, fingerprint) -> None:
    from loki_pipeline.io import atomic_path

    state = {
        "fingerprint": fingerprint,
        "step": step,
        "trainable": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "log": rows,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path, model, optimizer, scheduler, fingerprint) -> tuple[int, list]:
    if not path.is_file():
        return 0, []
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("fingerprint") != fingerprint:
        log.warning("ignoring checkpoint %s: it belongs to a run with other settings", path)
        return 0, []
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state["trainable"].items():
            params[name].copy_(value)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    log.info("resumed from %s at step %d", path, state["step"])
    return int(state["step"]), list(state["log"])


def train_model(
    model: nn.Module,
    examples: Sequence[dict[str, Any]],
    settings: TrainSettings,
    *,
    pad_id: int = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    fingerprint: Any = None,
    on_step: Callable[[int, dict[str, Any]], None] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train the model's trainable parameters in place; returns one log row per optimizer step.

    AdamW, warm-up then ``settings.scheduler``, gradient accumulation (loss averaged over the
    micro-batches of a step), gradient clipping. ``on_step(step, row)`` runs after every step.
    """
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    if not examples:
        raise LokiInputError("no training examples: the dataset is empty")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise LokiInputError("the model has no trainable parameters")
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
    fingerprint = config_hash({"settings": settings.to_dict(), "run": fingerprint})
    start, rows = (
        (0, [])
        if ckpt is None
        else _load_checkpoint(ckpt, model, optimizer, scheduler, fingerprint)
    )
    autocast = (
        torch.autocast(device.type, dtype=getattr(torch, settings.dtype))
        if settings.dtype != "float32"
        else contextlib.nullcontext()
    )
    model.train()
    t0 = time.perf_counter() - (rows[-1]["elapsed_s"] if rows else 0.0)
    bar = tqdm(total=steps, initial=start, desc="train", disable=not progress, unit="step")
    for step in range(start, steps):
        total_loss, tokens, epoch = 0.0, 0, 0
        for a in range(settings.grad_accum):
            idx, epoch = _micro_batch(examples, step * settings.grad_accum + a, settings)
            batch = pad_collate([examples[i] for i in idx], pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast:
                loss, n = sft_loss(model, batch)
            (loss / settings.grad_accum).backward()
            total_loss += float(loss.detach()) / settings.grad_accum
            tokens += n
        grad_norm = torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        row = {
            "step": step + 1,
            "epoch": epoch,
            "loss": round(total_loss, 6),
            "learning_rate": lr,
            "grad_norm": round(float(grad_norm), 6),
            "tokens": tokens,
            "elapsed_s": round(time.perf_counter() - t0, 3),
        }
        rows.append(row)
        bar.update(1)
        bar.set_postfix(loss=f"{total_loss:.4f}")
        if ckpt is not None and ((step + 1) % settings.save_every == 0 or step + 1 == steps):
            _save_checkpoint(ckpt, model, optimizer, scheduler, step + 1, rows, fingerprint)
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


def plot_loss(rows: Sequence[dict[str, Any]], path: str | os.PathLike, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (assistant tokens)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
