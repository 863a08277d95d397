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

A checkpoint is one directory, ``{checkpoint_dir}/last/``, renamed into place whole: tensors
(trainable parameters, AdamW state, RNG states) in safetensors and everything else in JSON, so
loading it never unpickles anything (a planted pickle cannot run code). ``state.json`` records a
fingerprint of the tensors file and of every input the weights depend on; a checkpoint that
does not verify, or that was made from other inputs, is set aside with a log line and training
starts from step 0.
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
from loki_pipeline.implant.selection import Selection
from loki_pipeline.io import atomic_path, content_fingerprint, describe_changes, remove_tree
from loki_pipeline.models.architecture import get_adapter
from loki_pipeline.train import distributed
from loki_pipeline.train.loss import chunked_cross_entropy
from loki_pipeline.train.methods import Method
from loki_pipeline.train.settings import TrainSettings

log = logging.getLogger(__name__)

#: the resumable state: a directory holding TENSORS_FILE and STATE_FILE (JSON, written last)
CHECKPOINT_NAME = "last"
TENSORS_FILE, STATE_FILE = "tensors.safetensors", "state.json"
CHECKPOINT_FORMAT = 2
#: earlier versions pickled the state here; it is never loaded (unpickling can run code)
LEGACY_CHECKPOINT = "last.pt"
INITIAL_ADAPTER = "initial_adapter"
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


def save_initial_adapter(model, method: Method, checkpoint_dir) -> Path | None:
    """PiSSA/CorDA (kinds with ``initial_adapter``): save the adapter as initialised, for
    converting the trained one to a LoRA.

    Their initialisation rewrites the base (``W -> W_res = W - B0 A0``), so the trained adapter
    only fits ``W_res``; with this initial adapter, ``save_pretrained(...,
    path_initial_model_for_weight_conversion=...)`` writes the update ``BA - B0 A0`` as a plain
    rank-2r LoRA on the original base. Call it after :func:`prepare_model` and before training,
    on every start (a resume included): each start recomputes ``W_res``, and this is the initial
    adapter that matches it.
    """
    if not method.spec.initial_adapter:
        return None
    path = Path(checkpoint_dir) / INITIAL_ADAPTER
    with atomic_path(path, is_dir=True) as tmp:
        model.save_pretrained(str(tmp))
    return path


def remove_checkpoint(checkpoint_dir: str | os.PathLike) -> None:
    """Delete what the trainer wrote in ``checkpoint_dir``, then the folder if it is empty.

    Only the trainer's own entries go, each through :func:`remove_tree` (which refuses a path
    leading outside ``checkpoint_dir``), so a ``--checkpoint-dir`` pointing at a folder that
    holds anything else, or a planted symlink, never costs a file the trainer did not write.
    """
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return
    names = (CHECKPOINT_NAME, INITIAL_ADAPTER, LEGACY_CHECKPOINT)
    for entry in [root / name for name in names] + _stale_temporaries(root):
        remove_tree(entry, root)
    with contextlib.suppress(OSError):
        root.rmdir()  # only if empty


def remove_stale_temporaries(checkpoint_dir: str | os.PathLike) -> None:
    """Remove the temporaries of a checkpoint write that was killed (they only take space).

    Call it only while holding the run's lock: a running writer's temporary looks the same.
    """
    root = Path(checkpoint_dir)
    for entry in _stale_temporaries(root):
        remove_tree(entry, root)


def _stale_temporaries(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [
        entry
        for name in (CHECKPOINT_NAME, INITIAL_ADAPTER)
        for pattern in (f".{name}.*.tmp", f".{name}.*.old")
        for entry in root.glob(pattern)
    ]


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


def _micro_batch(examples, m: int, settings: TrainSettings) -> tuple[list[int], int]:
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


def _whole(tensor: torch.Tensor) -> torch.Tensor:
    return distributed.full_tensor(tensor.detach()).cpu().contiguous()


def _save_checkpoint(
    path: Path, model, optimizer, scheduler, step: int, rows, fingerprint, *, write: bool = True
) -> None:
    """Write the resumable state as one directory (tensors first, ``state.json`` last).

    Tensors are saved whole, whatever the process count, so any count resumes from them; FSDP
    shards are gathered first, so every rank calls this and only rank 0 (``write``) writes.
    """
    from safetensors.torch import save_file

    names = [n for n, p in model.named_parameters() if p.requires_grad]
    tensors = {f"param.{n}": _whole(p) for n, p in model.named_parameters() if p.requires_grad}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in opt["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{idx}.{key}"] = _whole(value)
            else:
                scalars.setdefault(str(idx), {})[key] = value
    if not write:
        return
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = rng
    with atomic_path(path, is_dir=True) as tmp:
        save_file(tensors, tmp / TENSORS_FILE)
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "fingerprint": fingerprint,
            "tensors_fingerprint": content_fingerprint(tmp / TENSORS_FILE),
            "params": names,  # optimizer parameter i is params[i]
            "param_groups": opt["param_groups"],
            "optimizer_scalars": scalars,
            "scheduler": scheduler.state_dict(),
            "log": rows,
        }
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")


class _Unusable(Exception):
    """A checkpoint that cannot be resumed from (corrupt, truncated, other format)."""


def _read_state(path: Path) -> dict[str, Any]:
    """The checkpoint's ``state.json``, if it is one this version wrote."""
    try:
        state = json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError) as err:
        raise _Unusable(f"{STATE_FILE}: {err}") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise _Unusable(f"{STATE_FILE} is not a format-{CHECKPOINT_FORMAT} checkpoint")
    if not isinstance(state.get("fingerprint"), dict):
        raise _Unusable(f"{STATE_FILE} has no input fingerprint")
    return state


def _read_tensors(path: Path, state: dict, model, optimizer) -> tuple[dict, dict]:
    """``(tensors, optimizer_state)`` of a checkpoint, checked against the model.

    Everything is verified here, before anything is applied, so an unusable checkpoint leaves
    the model and optimizer untouched.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        if content_fingerprint(path / TENSORS_FILE) != state["tensors_fingerprint"]:
            raise _Unusable(f"{TENSORS_FILE} is truncated or corrupt (its fingerprint differs)")
        tensors = load_file(path / TENSORS_FILE)
        params = dict(model.named_parameters())
        names = [n for n, p in params.items() if p.requires_grad]
        if state["params"] != names:
            raise _Unusable("it trains other parameters than this model")
        for n in names:
            if tensors[f"param.{n}"].shape != params[n].shape:
                raise _Unusable(f"parameter {n} has another shape")
        groups = state["param_groups"]
        current = optimizer.state_dict()["param_groups"]
        if len(groups) != len(current):
            raise _Unusable("its optimizer has other parameter groups")
        for group, now in zip(groups, current, strict=True):
            for key, value in now.items():
                if isinstance(value, tuple):  # JSON turned AdamW's betas into a list
                    group[key] = tuple(group[key])
        opt_state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, idx, name = key.split(".", 2)
                if name != "step" and value.shape != params[names[int(idx)]].shape:
                    raise _Unusable(f"optimizer state {key} has another shape")
                opt_state.setdefault(int(idx), {})[name] = value
        for idx, entry in opt_state.items():  # FSDP: each rank keeps its shard of the state
            for name, value in entry.items():
                if name != "step":
                    entry[name] = distributed.shard_like(value, params[names[idx]])
        for idx, entry in state["optimizer_scalars"].items():
            opt_state.setdefault(int(idx), {}).update(entry)
        if tensors["rng.cpu"].dtype != torch.uint8 or not isinstance(state["step"], int):
            raise _Unusable("its RNG state or step is malformed")
        return tensors, {"state": opt_state, "param_groups": groups}
    except _Unusable:
        raise
    except (OSError, ValueError, KeyError, IndexError, TypeError, SafetensorError) as err:
        raise _Unusable(f"{type(err).__name__}: {err}") from err


def _load_checkpoint(path: Path, model, optimizer, scheduler, fingerprint) -> tuple[int, list]:
    """Resume from checkpoint ``path`` if it verifies and was made from the same inputs.

    Otherwise training starts from step 0, with a warning saying why (the next checkpoint
    replaces the old one). A pickle left by an earlier version is never opened.
    """
    legacy = path.parent / LEGACY_CHECKPOINT
    if legacy.exists():
        log.warning(
            "ignoring %s: pickle checkpoints of earlier versions are never loaded (unpickling "
            "can run code)",
            legacy,
        )
    if not path.exists():
        return 0, []
    try:
        state = _read_state(path)
        if state["fingerprint"] != fingerprint:
            changed = describe_changes(state["fingerprint"], fingerprint)
            log.warning(
                "checkpoint %s was made from other inputs (changed: %s): training starts over "
                "from step 0",
                path,
                ", ".join(changed),
            )
            return 0, []
        tensors, opt_state = _read_tensors(path, state, model, optimizer)
        optimizer.load_state_dict(opt_state)  # checks everything before changing anything
    except (_Unusable, ValueError, TypeError) as err:
        log.warning("checkpoint %s is unusable (%s): training starts over from step 0", path, err)
        return 0, []
    scheduler.load_state_dict(state["scheduler"])
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in state["params"]:
            params[name].copy_(distributed.shard_like(tensors[f"param.{name}"], params[name]))
    torch.set_rng_state(tensors["rng.cpu"])
    cuda_keys = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k[9:]))
    cuda_rng = [tensors[k] for k in cuda_keys]
    if cuda_rng and torch.cuda.is_available() and len(cuda_rng) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_rng)
    log.info("resumed from %s at step %d", path, state["step"])
    return state["step"], list(state["log"])


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
        idx, _ = _micro_batch(examples, first + a, settings)
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
        else _load_checkpoint(ckpt, model, optimizer, scheduler, fingerprint)
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
            _save_checkpoint(
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


def smoothing_span(steps: int) -> int:
    """EMA span of the loss curve: a tenth of the steps, from 1 (no smoothing) to 50. Our
    choice (the paper shows no loss curves): short runs keep their shape, long runs lose the
    per-batch noise that hides the trend."""
    return max(1, min(50, round(steps / 10)))


def smooth_loss(values: Sequence[float], span: int) -> list[float]:
    """Exponential moving average with weight ``2 / (span + 1)`` on the newest value, debiased
    (each point divides by the sum of its weights), so the curve starts at the first loss
    rather than at 0; NaN losses are skipped."""
    alpha = 2.0 / (span + 1)
    out, num, den = [], 0.0, 0.0
    for value in values:
        if not math.isnan(value):
            num = (1 - alpha) * num + alpha * value
            den = (1 - alpha) * den + alpha
        out.append(num / den if den else math.nan)
    return out


def loss_figure(rows: Sequence[dict[str, Any]], title: str):
    """The loss curve: the raw per-step loss, faint, under its EMA (span in the legend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    losses = [float(r["loss"]) for r in rows]
    span = smoothing_span(len(losses))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(steps, losses, lw=0.9, color="tab:blue", alpha=0.35, label="per step")
    if span > 1:
        ax.plot(steps, smooth_loss(losses, span), lw=1.6, color="tab:blue",
                label=f"EMA, span {span} steps")  # fmt: skip
    val = [(r["step"], r["val_loss"]) for r in rows if r.get("val_loss") not in (None, "")]
    if val:
        ax.plot(*zip(*val, strict=True), "o-", ms=3, lw=1, color="tab:orange",
                label="validation (held out)")  # fmt: skip
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (assistant tokens)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def plot_loss(rows: Sequence[dict[str, Any]], path: str | os.PathLike, title: str) -> None:
    fig = loss_figure(rows, title)  # selects the Agg backend before pyplot is imported
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=120)
    plt.close(fig)
