"""The largest micro-batch a training run's seeded data order really forms (``loki plan --data``).

The memory plan's worst case puts every sequence of a batch at ``cutoff_len`` and supervises
every token. Where the model is prepared (its tokenizer) and the task's data is present, this
tokenizes the data as the run will (``tasks.registry.task_examples``, the same hold-out), walks
the micro-batches of its steps in the trainer's order (``trainer.micro_batch``: a pure
function of the seed), and reports the largest: its padded length, supervised tokens, and the
plan's peak at that batch. Slow (it tokenizes the data), so only on request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loki_pipeline.data.records import is_hub_source
from loki_pipeline.models.sources import parse_source
from loki_pipeline.plan.dims import ModelDims
from loki_pipeline.plan.memory import training_memory


def model_folder(config: Mapping[str, Any], model: str) -> Path | None:
    """The folder holding the model's tokenizer: the prepared copy, or a ``local:`` source."""
    prepared = Path("resources/models") / model
    if (prepared / "config.json").is_file():
        return prepared
    source = str(config["models"][model]["source"])
    if source.startswith("local:"):
        folder = parse_source(source).path
        return folder if folder.is_dir() else None
    return None


_CACHE: dict[tuple, list] = {}


def _examples(config, model: str, task: str, settings: Any, context: int | None) -> list | None:
    from loki_pipeline.tasks.registry import loader_options, train_data

    folder = model_folder(config, model)
    data = train_data(task, (config.get("tasks") or {}).get(task))
    source = data.get("source")
    if folder is None or not source or is_hub_source(str(source)) or not Path(source).exists():
        return None
    key = (str(folder), task, str(source), settings.cutoff_len, settings.packing,
           settings.max_samples, settings.val_size, settings.seed)  # fmt: skip
    if key not in _CACHE:
        from transformers import AutoTokenizer

        from loki_pipeline.tasks.registry import task_examples
        from loki_pipeline.train.trainer import hold_out

        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        examples = task_examples(
            task, source, tokenizer, cutoff_len=int(settings.cutoff_len),
            packing=bool(settings.packing), max_samples=settings.max_samples or None,
            max_context=context, **loader_options(task, data),
        )  # fmt: skip
        _CACHE[key] = hold_out(examples, settings.val_size, settings.seed)[0]
    return _CACHE[key]


def largest_batch(
    config: Mapping[str, Any], dims: ModelDims, model: str, task: str, method: Any,
    settings: Any,
) -> dict[str, Any] | None:  # fmt: skip
    """The run's largest micro-batch (padded tokens), or None without the data or tokenizer."""
    from loki_pipeline.train.trainer import micro_batch, total_steps

    examples = _examples(config, model, task, settings, dims.context)
    if not examples:
        return None
    micro = total_steps(len(examples), settings) * settings.grad_accum * settings.processes
    best = None
    for m in range(micro):
        idx, _ = micro_batch(examples, m, settings)
        rows = [examples[i] for i in idx]
        seq = max(len(r["input_ids"]) for r in rows)
        supervised = sum(sum(1 for t in r["labels"][1:] if t != -100) for r in rows)
        size = (len(rows) * seq, supervised)
        if best is None or size > best[0]:
            best = (size, len(rows), seq, supervised)
    (tokens, _), batch, seq, supervised = best
    at_batch = dataclasses.replace(settings, batch_size=batch, cutoff_len=seq)
    estimate = training_memory(dims, method, at_batch,
                               supervised_fraction=max(supervised / tokens, 1e-9),
                               on_gpu=True)  # fmt: skip
    return {
        "micro_batches": micro,
        "sequences": batch,
        "padded_len": seq,
        "supervised_tokens": supervised,
        "device_gb": round(estimate.device / 1e9, 3),
        "worst_case_tokens": int(settings.batch_size) * int(settings.cutoff_len),
        "share_of_worst_case": round(tokens / max(1, settings.batch_size * settings.cutoff_len), 3),
    }
