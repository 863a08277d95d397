"""Attribute one shard of a prompt set (``kva.dataset``: MMLU, the user's own prompts, an
lm-eval multiple-choice task) into a resumable HDF5 file.

Shard ``i`` of ``S`` takes items ``i, i+S, i+2S, ...`` (round-robin), so shards get similar
subject mixes and :func:`~loki_pipeline.kva.storage.gather_shards` can restore the order.
Every check on the arguments, the dataset and an existing partial file happens before the
model is loaded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loki_pipeline.errors import LokiInputError
from loki_pipeline.kva.settings import KVASettings
from loki_pipeline.models.loading import context_length, read_checkpoint_config
from loki_pipeline.settings import schema_default, schema_node

log = logging.getLogger(__name__)

DTYPES: tuple[str, ...] = tuple(schema_node("kva.dtype")["enum"])


def _dataset_spec(dataset: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """Config ``kva.dataset`` or a bare source; keys it lacks take the schema's defaults."""
    if not isinstance(dataset, Mapping):
        dataset = {"source": dataset}
    if "source" not in dataset:
        raise LokiInputError(f"kva dataset {dict(dataset)!r}: missing 'source'")
    spec = {**schema_default("kva.dataset"), **dataset}
    spec["source"] = str(spec["source"])
    return spec


def run_kva_shard(
    model_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    settings: KVASettings | None = None,
    *,
    shard: int = 0,
    **overrides: Any,
) -> Path:
    """KVA of every prompt of shard ``shard`` -> ``out_path`` (HDF5, see ``storage``).

    ``settings`` (default: the schema's) with ``overrides`` (its fields as keywords) say how.
    ``batch_prompts`` prompts share each forward/backward of the ``exact`` backend (weights
    read once for all of them: the GPU speed-up; the file is flushed after every batch).
    The whole run holds the output's lock (a second run on it stops with "in use by another
    run"). It resumes from ``<out>.partial.h5`` when that was made from the same inputs: the
    checkpoint's content (weights, config, tokenizer), the data set's questions and the
    settings; otherwise the partial file is moved to ``<out>.stale.h5`` and the shard starts
    over, saying which input changed. It returns at once if ``out_path`` is an intact finished
    file of the same inputs, and redoes it otherwise.
    """
    from loki_pipeline import __version__
    from loki_pipeline.io import config_hash, content_fingerprint
    from loki_pipeline.kva.attribution import check_method
    from loki_pipeline.kva.quadrature import check_quadrature, check_steps

    settings = KVASettings.resolve(settings, **overrides)
    steps = check_steps(settings.steps)
    method = check_method(settings.method)
    quadrature = check_quadrature(settings.quadrature)
    dtype, num_shards = settings.dtype, settings.num_shards
    device, threads, batch_prompts = settings.device, settings.threads, settings.batch_prompts
    if dtype not in DTYPES:
        raise LokiInputError(f"dtype={dtype!r}: expected one of {', '.join(DTYPES)}")
    if not (isinstance(num_shards, int) and num_shards >= 1):
        raise LokiInputError(f"num_shards={num_shards!r}: expected an integer >= 1")
    if not (isinstance(shard, int) and 0 <= shard < num_shards):
        raise LokiInputError(f"shard={shard!r}: expected an integer in 0..{num_shards - 1}")
    if not (isinstance(threads, int) and threads >= 1):
        raise LokiInputError(f"threads={threads!r}: expected an integer >= 1")
    if not (isinstance(batch_prompts, int) and batch_prompts >= 1):
        raise LokiInputError(f"batch_prompts={batch_prompts!r}: expected an integer >= 1")
    model_dir = Path(model_dir)
    prompt_format = settings.format_for(model_dir.name)
    model_config = read_checkpoint_config(model_dir)  # architecture checked, no weights read
    spec = _dataset_spec(settings.dataset)

    from loki_pipeline.data.kva_sets import MMLU, attributed_set, load_kva_set

    items = load_kva_set(spec)
    if not items:
        raise LokiInputError(f"{spec['source']}: the dataset is empty")
    mine = items[shard::num_shards]
    from loki_pipeline.io import exclusive_lock
    from loki_pipeline.kva.storage import ShardWriter, check_finished, check_string

    for item in mine:  # the file's fixed-length fields: refuse what won't fit, now
        check_string(item.question_id, "question_id")
        check_string(item.subject, "subject")

    # What the attributions depend on; a change to any of them means starting over.
    inputs = {
        "model": content_fingerprint(model_dir),
        "dataset": config_hash([item.fingerprint() for item in items]),
        "steps": steps,
        "method": method,
        "quadrature": quadrature,
        "dtype": dtype,
        "num_shards": num_shards,
    }
    if prompt_format != "chat":  # absent for chat, so files made before the option stay valid
        inputs["prompt_format"] = prompt_format
    if spec["format"] != MMLU:  # likewise absent for mmlu
        inputs["dataset_format"] = spec["format"]
    meta = {
        "model": model_dir.name,
        "steps": steps,
        "method": method,
        "quadrature": quadrature,
        "dtype": dtype,
        "package_version": __version__,
        "config_hash": config_hash(inputs),
        "inputs": json.dumps(inputs, sort_keys=True),
        "num_layers": int(model_config["num_hidden_layers"]),
        "d_model": int(model_config["hidden_size"]),
        "shard": shard,
        "num_shards": num_shards,
        "dataset": spec["source"],
        "dataset_format": spec["format"],
    }
    described = attributed_set(spec["source"], spec["format"], len(items))
    log.info("KVA on %s: shard %d of %d", described, shard, num_shards)

    with contextlib.ExitStack() as stack:
        stack.enter_context(exclusive_lock(out_path))
        if check_finished(out_path, meta):
            log.info("%s is already finished; nothing to do", out_path)
            return Path(out_path)
        prompts = _encode_prompts(
            model_dir, mine, context_length(model_config), spec["source"], prompt_format
        )
        writer = stack.enter_context(
            ShardWriter(out_path, meta, expected_ids=[item.question_id for item in mine])
        )
        done = writer.num_done
        if done < len(mine):
            todo = list(zip(mine[done:], prompts[done:], strict=True))
            _attribute_items(
                writer, todo, len(mine), model_dir, meta, device, threads, batch_prompts
            )
        return writer.finish()


def _encode_prompts(
    model_dir: Path, items, max_length: int | None, source: str, prompt_format: str = "chat"
) -> list:
    """Every prompt's token ids, from the tokenizer alone (before any weight is read)."""
    from transformers import AutoTokenizer

    from loki_pipeline.data.kva_prompt import encode_prompts

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return encode_prompts(
        tokenizer, items, max_length=max_length, source=source, prompt_format=prompt_format
    )


def _attribute_items(writer, todo, total, model_dir, meta, device, threads, batch_prompts):
    """Attribute ``todo`` (``(item, token ids)`` pairs) in batches, appending each batch."""
    import torch
    from tqdm.auto import tqdm

    from loki_pipeline.kva.attribution import attribute_prompts
    from loki_pipeline.kva.storage import result_row
    from loki_pipeline.models import get_adapter
    from loki_pipeline.models.loading import load_model

    torch.set_num_threads(threads)
    model, _ = load_model(model_dir, dtype=meta["dtype"], device=device)
    adapter = get_adapter(model)
    if (adapter.num_layers, adapter.d_model) != (meta["num_layers"], meta["d_model"]):
        raise LokiInputError(f"{model_dir}: loaded model does not match its config.json")
    with tqdm(total=total, initial=total - len(todo), desc=f"KVA shard {meta['shard']}") as bar:
        done = 0
        while done < len(todo):
            batch = todo[done : done + batch_prompts]
            try:
                results = attribute_prompts(
                    model,
                    [ids for _, ids in batch],
                    steps=meta["steps"],
                    method=meta["method"],
                    quadrature=meta["quadrature"],
                )
            except torch.OutOfMemoryError:
                if len(batch) == 1:
                    raise
                # Long prompts can need more memory than the first batches did: halve the
                # batch for the rest of the shard instead of losing the job.
                batch_prompts = len(batch) // 2
                log.warning("out of memory: %d prompts per pass from now on", batch_prompts)
                torch.cuda.empty_cache()  # a no-op where CUDA was never initialised
                continue
            writer.append_rows(
                [
                    result_row(result, subject=item.subject, question_id=item.question_id)
                    for (item, _), result in zip(batch, results, strict=True)
                ]
            )
            done += len(batch)
            bar.update(len(batch))
