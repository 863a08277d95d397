"""File-level training run: model dir + task data + method (+ selection) -> a run directory.

Output (written atomically, so a killed run never leaves a directory that looks finished)::

    {out}/adapter/              LoKI: trained rows + indices (safetensors) + loki_config.json;
                                PEFT: a standard PEFT adapter on the original base (PiSSA /
                                CorDA converted to a rank-2r LoRA); full: a pointer to merged/
    {out}/merged/               plain Hugging Face checkpoint (stock from_pretrained loads it)
    {out}/train_log.csv         one row per optimizer step
    {out}/loss.png              the loss curve
    {out}/trainable_params.json trainable / total parameters (and LoKI's formula)
    {out}/train_config.json     settings, method, inputs and their hashes

Resumable state lives in ``checkpoint_dir`` (default ``{out}/../.checkpoints/{out name}``),
outside the final directory, so a failure (or Snakemake removing a failed output) keeps it. A
write that fails (full disk) raises ``LokiWriteError`` and leaves no run directory; the same
command, once space is freed, resumes from the last checkpoint.

Under ``torchrun --nproc-per-node N`` every process runs :func:`run_training` with the same
arguments and trains its share of each global batch (``trainer.train_model``); rank 0 alone
holds the locks and writes the checkpoints and the run directory, the others wait for it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
from array import array
from pathlib import Path
from typing import Any

from loki_pipeline import __version__
from loki_pipeline.errors import LokiInputError
from loki_pipeline.io import atomic_path, content_fingerprint, exclusive_lock, file_sha256
from loki_pipeline.settings import schema_default
from loki_pipeline.train import distributed
from loki_pipeline.train.methods import Method, parse_method
from loki_pipeline.train.settings import TrainSettings

log = logging.getLogger(__name__)


def default_checkpoint_dir(out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir)
    return out.parent / ".checkpoints" / out.name


def _check_selection(method: Method, selection_path, model_dir) -> Any:
    """Read the selection and check it against config.json before any weights are loaded."""
    from loki_pipeline.select.selection_file import check_fits_checkpoint, read_selection_file

    if not method.needs_selection:
        if selection_path is not None:
            log.warning("method %s ignores the selection file %s", method.name, selection_path)
        return None
    if selection_path is None:
        raise LokiInputError(
            f"method {method.name} trains selected nodes: pass the selection file "
            f"({method.selection_name}.json from the select stage) with --selection"
        )
    selection = read_selection_file(selection_path)
    check_fits_checkpoint(selection, model_dir)
    if selection.q is not None and abs(float(selection.q) - float(method.q)) > 1e-9:
        raise LokiInputError(
            f"selection {selection_path} has q={selection.q} but method {method.name} asks for "
            f"q={method.q:g}"
        )
    if selection.strategy is not None and selection.strategy != method.strategy:
        raise LokiInputError(
            f"selection {selection_path} uses strategy {selection.strategy!r} but method "
            f"{method.name} asks for {method.strategy!r}"
        )
    return selection


def run_training(
    model_dir: str | os.PathLike,
    task: str,
    data: str | os.PathLike | None,
    method_name: str,
    out_dir: str | os.PathLike,
    settings: TrainSettings,
    *,
    selection_path: str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    device: str = schema_default("device"),
    progress: bool = True,
    data_options: dict[str, Any] | None = None,
) -> Path:
    """Train one run and write its directory; every input is checked before training starts.

    ``data_options`` go to the task's loader (``loki_pipeline.tasks.registry.loader_options``). The run
    holds the locks of ``out_dir`` and of its checkpoint directory throughout, so a second run
    on the same output fails at once ("in use by another run") instead of mixing checkpoints.
    """
    method = parse_method(method_name)
    settings.validate()
    if settings.distributed == "fsdp" and method.kind != "full":
        raise LokiInputError(
            f"training setting distributed='fsdp' shards full fine-tuning only; {method.name} "
            "trains a small part of a model that fits one GPU: use distributed: ddp"
        )
    if not (Path(model_dir) / "config.json").is_file():
        raise LokiInputError(f"model directory {model_dir} has no config.json")
    selection = _check_selection(method, selection_path, model_dir)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else default_checkpoint_dir(out_dir)
    with distributed.process_group(device) as world:
        settings = _launched_settings(settings, world.size)
        with distributed.on_main_rank(lambda: _locks(out_dir, ckpt_dir)):
            return _run_locked(
                model_dir,
                task,
                data,
                method,
                out_dir,
                settings,
                selection=selection,
                selection_path=selection_path,
                ckpt_dir=ckpt_dir,
                device=world.device,
                progress=progress,
                data_options=data_options or {},
            )


@contextlib.contextmanager
def _locks(out_dir, ckpt_dir):
    with exclusive_lock(out_dir), exclusive_lock(ckpt_dir):
        yield


def _launched_settings(settings: TrainSettings, size: int) -> TrainSettings:
    """``settings`` with ``processes`` = the processes torchrun started: as in the HF Trainer,
    the global batch is batch_size x (processes launched) x grad_accum, so a launch that
    differs from training.processes trains another global batch, which the log says (a
    warning when the config asked for more than one process)."""
    if settings.processes == size:
        return settings
    launched = dataclasses.replace(settings, processes=size)
    log.log(
        logging.WARNING if settings.processes > 1 else logging.INFO,
        "training.processes=%d, but %d process(es) run: global batch %d examples instead of %d",
        settings.processes, size,
        launched.batch_size * size * launched.grad_accum,
        settings.batch_size * settings.processes * settings.grad_accum,
    )  # fmt: skip
    return launched


def _examples_hash(examples) -> str:
    """SHA-256 of the tokenized examples: covers data, tokenizer, template, cut-off, packing."""
    digest = hashlib.sha256()
    for ex in examples:
        for key in ("input_ids", "labels"):  # calibration prompts have no labels
            values = array("q", ex.get(key, ()))
            digest.update(len(values).to_bytes(8, "little") + values.tobytes())
    return digest.hexdigest()


def _run_locked(
    model_dir,
    task: str,
    data,
    method: Method,
    out_dir,
    settings: TrainSettings,
    *,
    selection,
    selection_path,
    ckpt_dir: Path,
    device: str,
    progress: bool,
    data_options: dict[str, Any],
) -> Path:
    """The body of :func:`run_training`, run while the output and checkpoint locks are held."""
    from loki_pipeline.models.architecture import get_adapter
    from loki_pipeline.models.loading import context_length, load_model, read_checkpoint_config

    # the one import up a layer: the training driver asks the task registry for its data once
    from loki_pipeline.tasks.registry import default_source, task_examples
    from loki_pipeline.train import checkpoint, trainer

    world = distributed.current()
    sharding = world.size > 1 and settings.distributed == "fsdp"
    # FSDP: whole on the CPU first, then each process moves its shards to its GPU
    load_device = "cpu" if sharding else device
    model, tokenizer = load_model(model_dir, dtype=settings.dtype, device=load_device)
    max_context = context_length(read_checkpoint_config(model_dir))
    examples = task_examples(
        task,
        data,
        tokenizer,
        cutoff_len=settings.cutoff_len,
        packing=settings.packing,
        max_samples=settings.max_samples or None,
        max_context=max_context,
        **data_options,
    )
    if not examples:
        raise LokiInputError(f"task data {data} gave no training examples")
    all_examples = examples  # the fingerprint covers the held-out examples too
    examples, val_examples = trainer.hold_out(examples, settings.val_size, settings.seed)
    if val_examples:
        log.info("holding out %d of %d examples for validation", len(val_examples),
                 len(all_examples))  # fmt: skip
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    arch = get_adapter(model)
    total_before = sum(p.numel() for p in model.parameters())
    calibration = examples
    if method.kind == "corda" and settings.corda_calibration is not None:
        from loki_pipeline.data.nq_open import nq_open_examples

        calibration = nq_open_examples(
            settings.corda_calibration,
            tokenizer,
            max_rows=settings.calibration_samples,
            cutoff_len=settings.cutoff_len,
        )
        log.info("CorDA (%s) calibrates on %d NQ-Open rows of %s", settings.corda_method,
                 len(calibration), settings.corda_calibration)  # fmt: skip
    model = trainer.prepare_model(
        model, method, settings, selection=selection, calibration=calibration
    )
    if settings.gradient_checkpointing:
        trainer.enable_gradient_checkpointing(model)
    if settings.dtype != "float32":  # optimizer state and updates in float32; compute autocast
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    trainable, _ = trainer.count_parameters(model)
    counts = {
        "method": method.name,
        "trainable_params": trainable,
        "total_params": total_before,
        "trainable_percent": 100.0 * trainable / total_before,
        **method.spec.counts(method, selection, arch),
    }
    log.info(
        "%s: %d trainable of %d parameters (%.3f%%)",
        method.name,
        trainable,
        total_before,
        counts["trainable_percent"],
    )
    data_file = default_source(task) if data is None else Path(data)
    inputs = {
        "model": str(model_dir),
        "model_fingerprint": content_fingerprint(model_dir),
        "task": task,
        "data": None if data is None else str(data),
        "data_sha256": file_sha256(data_file) if data_file.is_file() else None,
        "method": method.name,
        "selection": None if selection_path is None else str(selection_path),
        "selection_sha256": (file_sha256(selection_path) if selection is not None else None),
    }
    # What the weights depend on, by content (paths may move): a checkpoint made from other
    # inputs is not resumed from. The settings are added by the trainer.
    fingerprint = {
        "model": inputs["model_fingerprint"],
        "task": task,
        "data": inputs["data_sha256"],
        "data_options": data_options,
        "examples": _examples_hash(all_examples),
        "method": method.name,
        "selection": inputs["selection_sha256"],
        # CorDA on NQ-Open: the calibration rows shape the initial adapter
        "calibration": None if calibration is examples else _examples_hash(calibration),
    }
    distributed.check_same(fingerprint, "training inputs")
    initial_adapter = None
    if world.main:
        checkpoint.remove_stale_temporaries(ckpt_dir)
        initial_adapter = checkpoint.save_initial_adapter(model, method, ckpt_dir)
    rows = trainer.train_model(
        model,
        examples,
        settings,
        pad_id=pad_id,
        checkpoint_dir=ckpt_dir,
        fingerprint=fingerprint,
        progress=progress,
        val_examples=val_examples,
    )
    log.info(
        "loss: first %.4f, last %.4f over %d steps", rows[0]["loss"], rows[-1]["loss"], len(rows)
    )
    if sharding:
        model = _gathered(model, model_dir, settings)
    if world.main:
        _write_run(
            model,
            tokenizer,
            method,
            out_dir,
            settings,
            rows=rows,
            counts=counts,
            inputs=inputs,
            meta={
                "cutoff_len_effective": min(settings.cutoff_len, max_context or math.inf),
                "num_examples": len(examples),
                "num_val_examples": len(val_examples),
            },
            model_dir=model_dir,
            selection_path=selection_path,
            initial_adapter=initial_adapter,
        )
        if not settings.keep_checkpoints:
            try:
                checkpoint.remove_checkpoint(ckpt_dir)
            except LokiInputError as err:  # the run is finished: a refused clean-up only warns
                log.warning("checkpoints kept: %s", err)
    distributed.barrier()  # every process ends when the outputs are written
    return Path(out_dir)


def _gathered(model, model_dir, settings: TrainSettings):
    """An FSDP-sharded model's weights as a plain model on rank 0 (every rank takes part in
    the gather; the others get None). Full fine-tuning only, so the base with every weight
    replaced is the trained model."""
    from loki_pipeline.models.loading import load_model

    state = distributed.gather_state_dict(model)
    if not distributed.current().main:
        return None
    plain, _ = load_model(model_dir, dtype=settings.dtype, device="cpu")
    plain.load_state_dict(state)
    return plain


def _write_run(
    model,
    tokenizer,
    method: Method,
    out_dir,
    settings: TrainSettings,
    *,
    rows,
    counts,
    inputs,
    meta,
    model_dir,
    selection_path,
    initial_adapter,
) -> None:
    """The run directory, written atomically (rank 0 only)."""
    from loki_pipeline.train import loss_figure, trainer

    task = inputs["task"]
    with atomic_path(out_dir, is_dir=True) as tmp:
        trainer.write_train_log(rows, tmp / "train_log.csv")
        loss_figure.plot_loss(rows, tmp / "loss.png", f"{task} / {method.name}")
        (tmp / "trainable_params.json").write_text(json.dumps(counts, indent=2) + "\n")
        (tmp / "train_config.json").write_text(
            json.dumps(
                {
                    **inputs,
                    "settings": settings.to_dict(),
                    "learning_rate_effective": settings.effective_lr,
                    **meta,
                    "steps": len(rows),
                    "package_version": __version__,
                },
                indent=2,
            )
            + "\n"
        )
        _save_outputs(
            model,
            tokenizer,
            method,
            tmp,
            model_dir=model_dir,
            selection_path=selection_path,
            dtype=settings.dtype,
            initial_adapter=initial_adapter,
        )


def _save_outputs(
    model,
    tokenizer,
    method: Method,
    tmp: Path,
    *,
    model_dir,
    selection_path,
    dtype: str,
    initial_adapter: Path | None = None,
) -> None:
    """``adapter/`` (what was trained, by the method kind's ``save`` hook) and ``merged/`` (a
    plain checkpoint) of a finished run.

    PiSSA/CorDA adapters are converted against ``initial_adapter`` into a LoRA on the original
    base, so ``merge`` of ``adapter/`` onto ``model_dir`` gives ``merged/``.
    """
    import torch

    from loki_pipeline.models.saving import save_checkpoint

    merged = method.spec.save(
        model,
        method,
        tmp / "adapter",
        model_dir=model_dir,
        selection_path=selection_path,
        initial_adapter=initial_adapter,
    )
    save_checkpoint(merged.to(getattr(torch, dtype)), tokenizer, tmp / "merged")
