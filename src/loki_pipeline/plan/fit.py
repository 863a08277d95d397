"""For a job over one GPU's memory: the smallest change of settings that makes it fit.

Training: the changes that keep the trained weights (gradient checkpointing, a smaller loss
chunk, fewer sequences per micro-batch with more accumulation: the same global batch) are
tried first, one at a time and then together, before the ones that change the run's shape
(more processes under FSDP, full fine-tuning only). KVA and evaluation hold the whole model on
one GPU: when the weights alone exceed it, no setting helps and the plan says so. Light: no
torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

from loki_pipeline.plan.dims import ModelDims
from loki_pipeline.plan.memory import DTYPE_BYTES, training_memory

#: loss chunks tried, largest first (each holds chunk x vocabulary float32 logits)
CHUNKS = (1024, 256)
PROCESSES = (2, 4, 8)
#: settings that change together
GROUPS = (("gradient_checkpointing",), ("loss_chunk_tokens",), ("batch_size", "grad_accum"),
          ("processes", "distributed"))  # fmt: skip


def _candidates(settings: Any, method: Any) -> Iterator[dict[str, Any]]:
    """Changes of the training settings, smallest first (each a dict of new values)."""
    single: list[dict[str, Any]] = []
    if not settings.gradient_checkpointing:
        single.append({"gradient_checkpointing": True})
    chunk = int(settings.loss_chunk_tokens)
    single += [{"loss_chunk_tokens": c} for c in CHUNKS if chunk == 0 or c < chunk]
    batch, accum = int(settings.batch_size), int(settings.grad_accum)
    while batch > 1:
        batch, accum = batch // 2, accum * 2
        single.append({"batch_size": batch, "grad_accum": accum})
    yield from single
    combined: dict[str, Any] = {}
    for change in single:  # together, in the same order
        combined = {**combined, **change}
        yield dict(combined)
    if method.kind == "full":
        for n in PROCESSES:
            yield {**combined, "processes": n, "distributed": "fsdp"}


def describe(change: dict[str, Any], settings: Any) -> str:
    return ", ".join(f"{k}: {getattr(settings, k)} -> {v}" for k, v in change.items())


def training_fit(
    dims: ModelDims, method: Any, settings: Any, *, supervised_fraction: float, limit_gb: float
) -> str:
    """The smallest change that makes a training job fit ``limit_gb`` per GPU, in words."""

    def device(s: Any) -> float:
        return training_memory(
            dims, method, s, supervised_fraction=supervised_fraction, on_gpu=True
        ).device

    return _first_fit(_candidates(settings, method), settings, device, limit_gb) or (
        _frozen_weights_note(dims, method, settings, limit_gb)
    )


def _first_fit(
    changes: Iterator[dict[str, Any]], settings: Any, device: Callable[[Any], float], limit: float
) -> str | None:
    def fits(change: dict[str, Any]) -> bool:
        return device(dataclasses.replace(settings, **change)) <= limit * 1e9

    for change in changes:
        if fits(change):
            for group in GROUPS:  # drop what a combined change did not need
                rest = {k: v for k, v in change.items() if k not in group}
                if rest != change and rest and fits(rest):
                    change = rest
            gb = device(dataclasses.replace(settings, **change)) / 1e9
            return f"fits with {describe(change, settings)} ({gb:.1f} GB)"
    return None


def _frozen_weights_note(dims: ModelDims, method: Any, settings: Any, limit: float) -> str:
    weights = dims.num_params() * DTYPE_BYTES[settings.dtype] / 1e9
    if method.kind != "full" and weights > limit:
        return (
            f"cannot run on one GPU of {limit:g} GB today: the frozen weights alone are "
            f"{weights:.0f} GB, and LoKI and the PEFT methods keep the whole model on every GPU "
            "(distributed: fsdp shards full fine-tuning only)"
        )
    return f"no setting tried fits {limit:g} GB: a larger GPU (plan.gpu_memory_gb)"


def whole_model_note(rule: str, weights_bytes: float, device_bytes: float, limit: float) -> str:
    """KVA and evaluation jobs: one GPU holds the whole model."""
    if weights_bytes > limit * 1e9:
        stage = "KVA" if rule.startswith("kva") else "evaluation"
        return (
            f"cannot run on one GPU of {limit:g} GB today: {stage} holds the whole model "
            f"({weights_bytes / 1e9:.0f} GB of weights) on one GPU (no model sharding); needs a "
            f"GPU of at least {device_bytes / 1e9:.0f} GB"
        )
    return f"lower batch_prompts / batch_size or prompt_tokens; or a GPU of {device_bytes / 1e9:.0f} GB"
