"""A task of the user's own: scored on the held-out rows of its data, and on lm-eval tasks.

Held-out rows (``data.llamafactory.heldout_split``; training leaves them out): the prompt is
the conversation up to its last turn, the answer that turn (an assistant's). Per row:

- ``loss``: the summed cross-entropy (nats) of the answer's tokens (its text and end-of-turn
  token, as training labels them) given the prompt, teacher-forced, over ``tokens`` tokens;
- ``exact_match``: the greedy answer, of at most the reference's token count + ``answer_margin``
  new tokens, equals the reference, both stripped of surrounding whitespace.

Metrics: ``exact_match`` (share of rows), ``loss`` = Σ loss / Σ tokens (the token-weighted mean,
as training logs it), ``perplexity`` = exp(loss). Each task of ``lm_eval`` (a name, or the path
of the user's own task YAML) runs through lm-eval's ``simple_evaluate`` on the loaded model; its
metrics join as ``<task>/<metric,filter>`` and its per-item scores are kept for the report.
The summary says which metrics are fractions (``percent``, shown in %) and which are better
lower (``lower_is_better``), so the tables and the figure need no knowledge of this task.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loki_pipeline.errors import LokiInputError
from loki_pipeline.evaluate import task_eval_default

log = logging.getLogger(__name__)

#: ``kind`` of a summary of this task (the report's tables and figure dispatch on it)
KIND = "sft"

#: the held-out metrics; ``exact_match`` is a share of rows, the other two are better lower
HELDOUT_METRICS = ("exact_match", "loss", "perplexity")
LOWER_IS_BETTER = ("loss", "perplexity")

#: lm-eval metric names whose value is a share of items (shown in percent like the paper's)
FRACTION_METRICS = frozenset(
    {"acc", "acc_norm", "exact_match", "em", "f1", "pass@1", "prompt_level_strict_acc",
     "prompt_level_loose_acc", "inst_level_strict_acc", "inst_level_loose_acc"}
)  # fmt: skip


def _sft(key: str) -> Any:
    return task_eval_default(key, "sft_task")


@dataclasses.dataclass
class SftEvalSettings:
    """``tasks.<task>.eval`` of a task of the user's, defaults from the schema (which documents
    each key), with ``data``: the task's ``tasks.<task>.train``, which the held-out rows are
    drawn from exactly as training draws them."""

    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    heldout: dict[str, Any] = dataclasses.field(default_factory=lambda: _sft("heldout"))
    answer_margin: int = _sft("answer_margin")
    lm_eval: list[str] = dataclasses.field(default_factory=lambda: _sft("lm_eval"))
    lm_eval_limit: int | None = _sft("lm_eval_limit")
    primary_metric: str = _sft("primary_metric")


def lm_eval_task_name(entry: str) -> tuple[str, Path | None]:
    """``(task name, YAML path or None)`` of an ``lm_eval`` entry: a task name, or the path of
    a task YAML (its ``task:`` key names it; lm-eval's ``!function`` tags are not run here)."""
    if not entry.endswith((".yaml", ".yml")):
        return entry, None
    import yaml

    path = Path(entry)
    if not path.is_file():
        raise LokiInputError(f"eval.lm_eval: task file {path} does not exist")

    class _Tolerant(yaml.SafeLoader):
        pass

    _Tolerant.add_multi_constructor("!", lambda loader, suffix, node: None)
    try:
        config = yaml.load(path.read_text(encoding="utf-8"), Loader=_Tolerant)  # noqa: S506
    except yaml.YAMLError as err:
        raise LokiInputError(f"eval.lm_eval: {path} is not YAML ({err})") from None
    name = config.get("task") if isinstance(config, dict) else None
    if not isinstance(name, str) or not name:
        raise LokiInputError(f"eval.lm_eval: {path} has no 'task:' name (an lm-eval task YAML)")
    return name, path


def check_primary(settings: SftEvalSettings, lm_eval_names: Sequence[str]) -> None:
    """The primary metric is one the evaluation will report."""
    primary = settings.primary_metric
    heldout = float(settings.heldout.get("fraction", 0)) > 0
    if primary in HELDOUT_METRICS:
        if not heldout:
            raise LokiInputError(
                f"eval.primary_metric {primary!r} is a held-out metric but eval.heldout.fraction "
                "is 0; hold rows out or name an lm-eval metric '<task>/<metric,filter>'"
            )
        return
    task, _, metric = primary.partition("/")
    if task not in lm_eval_names or "," not in metric:
        raise LokiInputError(
            f"eval.primary_metric {primary!r}: expected one of {', '.join(HELDOUT_METRICS)} or "
            f"'<task>/<metric,filter>' of an eval.lm_eval task ({', '.join(lm_eval_names) or 'none'})"
        )


def prepare(settings: SftEvalSettings, cache_dir: str | os.PathLike) -> tuple[dict, str]:
    """``(data, benchmark)``: the held-out rows read and every lm-eval entry checked, before
    any model loads."""
    from loki_pipeline.data.llamafactory import read_llamafactory, split_part

    data = settings.data or {}
    if not data.get("source") or not data.get("format"):
        raise LokiInputError(
            "a task of your own needs its training data to draw the held-out rows from: "
            "tasks.<task>.train.source and .format (alpaca | sharegpt)"
        )
    lm_eval = [lm_eval_task_name(entry) for entry in settings.lm_eval]
    check_primary(settings, [name for name, _ in lm_eval])
    fraction = float(settings.heldout.get("fraction", 0))
    items = []
    if fraction > 0:
        rows = read_llamafactory(
            data["source"], format=data["format"], columns=data.get("columns"),
            tags=data.get("tags"), split=data.get("split", "train"),
        )  # fmt: skip
        items = [(str(i), c) for i, _, c in split_part(rows, settings.heldout, "heldout")]
    elif not lm_eval:
        raise LokiInputError(
            "nothing to evaluate: eval.heldout.fraction is 0 and eval.lm_eval names no task"
        )
    parts = []
    if items:
        parts.append(
            f"held-out {len(items)} rows ({fraction:g}, seed {settings.heldout.get('seed', 0)}) "
            f"of {data['source']}"
        )
    parts += [f"lm-eval {name}" for name, _ in lm_eval]
    return {"items": items, "lm_eval": lm_eval}, "; ".join(parts)


def answer_losses(
    model: Any, tokenizer: Any, conversations: Sequence[list[dict[str, str]]], *, batch_size: int
) -> list[tuple[float, int]]:
    """``(summed loss in nats, tokens)`` of each conversation's last (assistant) turn given the
    turns before it, teacher-forced; the answer is cut at the model's context."""
    import torch
    import torch.nn.functional as F

    from loki_pipeline.data.chat import IGNORE_INDEX, encode_answer
    from loki_pipeline.data.sft import SFTCollator
    from loki_pipeline.models.loading import context_length

    limit = context_length(model.config.to_dict()) or 1 << 30
    examples, cut = [], 0
    for messages in conversations:
        example, length = encode_answer(tokenizer, messages, cutoff_len=limit)
        cut += length > limit
        examples.append(example)
    if cut:
        log.warning("%d held-out answers run past the context of %d tokens: scored up to it",
                    cut, limit)  # fmt: skip
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    collate = SFTCollator(pad)
    device = next(model.parameters()).device
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(examples)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        tensors = {k: v.to(device) for k, v in collate([examples[i] for i in batch]).items()}
        with torch.no_grad():
            logits = (
                model(input_ids=tensors["input_ids"], attention_mask=tensors["attention_mask"])
                .logits[:, :-1]
                .float()
            )
        targets = tensors["labels"][:, 1:]
        losses = F.cross_entropy(
            logits.transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
        )
        for row, i in enumerate(batch):
            out[i] = (float(losses[row].sum()), int((targets[row] != IGNORE_INDEX).sum()))
    return out


def evaluate_heldout(
    model: Any,
    tokenizer: Any,
    items: Sequence[tuple[str, list[dict[str, str]]]],
    settings: SftEvalSettings,
    *,
    batch_size: int = 8,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """(metrics, per-row records ``{"id", "answer", "output", "exact_match", "loss", "tokens"}``)
    of the held-out rows."""
    from loki_pipeline.evaluate.generation import generate_greedy

    conversations = [c for _, c in items]
    losses = answer_losses(model, tokenizer, conversations, batch_size=batch_size)
    outputs = generate_greedy(
        model,
        tokenizer,
        [c[:-1] for c in conversations],
        max_new_tokens=[tokens + settings.answer_margin for _, tokens in losses],
        batch_size=batch_size,
    )
    records = []
    for (key, messages), (loss, tokens), output in zip(items, losses, outputs, strict=True):
        answer = messages[-1]["content"]
        records.append({
            "id": key, "answer": answer, "output": output,
            "exact_match": output.strip() == answer.strip(), "loss": loss, "tokens": tokens,
        })  # fmt: skip
    loss = sum(r["loss"] for r in records) / max(sum(r["tokens"] for r in records), 1)
    metrics = {
        "exact_match": sum(r["exact_match"] for r in records) / len(records),
        "loss": loss,
        "perplexity": math.exp(loss),
    }
    return metrics, records


def run_lm_eval(
    model: Any,
    tokenizer: Any,
    tasks: Sequence[tuple[str, Path | None]],
    *,
    limit: int | None,
    batch_size: int,
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """lm-eval's ``(results, samples)`` of ``tasks`` on the loaded model; a YAML's folder is
    searched for tasks as lm-eval's ``--include_path`` does (a YAML that ``include:``s one of
    lm-eval's own tasks names its file, which needs no index)."""
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from loki_pipeline.evaluate.general import seeded_evaluate

    include = sorted({str(path.resolve().parent) for _, path in tasks if path is not None})
    # lm-eval's own tasks are indexed (tens of seconds) only when one is asked for by name
    by_name = any(path is None for _, path in tasks)
    manager = TaskManager(include_path=include or None, include_defaults=by_name)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    results = seeded_evaluate(
        model=lm, tasks=[name for name, _ in tasks], limit=limit, task_manager=manager
    )
    return results, results.pop("samples")


def lm_eval_metrics(
    results: Mapping[str, Any], samples: Mapping[str, Sequence[Mapping[str, Any]]], task: str
) -> tuple[dict[str, float], dict[str, list[float]], dict[str, bool]]:
    """``(metrics, per-item values, higher_is_better)`` of one lm-eval task, keyed
    ``<task>/<metric,filter>``; per-item values in document order, one per document."""
    table = results["results"].get(task)
    if table is None:
        raise LokiInputError(
            f"lm-eval results have no task {task!r} (have {sorted(results['results'])})"
        )
    better = (results.get("higher_is_better") or {}).get(task) or {}
    metrics, per_item, higher = {}, {}, {}
    for key, value in table.items():
        metric, sep, filt = key.partition(",")
        if not sep or metric.endswith("_stderr") or not isinstance(value, (int, float)):
            continue
        name = f"{task}/{key}"
        metrics[name] = float(value)
        higher[name] = bool(better.get(metric, True))
        docs = sorted(
            (s for s in samples.get(task, []) if s.get("filter") == filt and metric in s),
            key=lambda s: s["doc_id"],
        )
        values = [s[metric] for s in docs]
        if values and all(isinstance(v, (int, float)) for v in values):
            per_item[name] = [float(v) for v in values]
    return metrics, per_item, higher


def evaluate(
    model: Any, tokenizer: Any, data: Mapping[str, Any], settings: SftEvalSettings, *,
    batch_size: int = 8,
) -> dict[str, Any]:  # fmt: skip
    """The task's summary body: ``metrics``, ``counts``, ``items`` (held-out rows), the
    ``primary_metric`` chosen, ``kind`` ``"sft"``, which metrics are ``percent`` and
    ``lower_is_better``, and ``lm_eval_items`` (lm-eval metric -> per-document values)."""
    metrics: dict[str, float] = {}
    counts: dict[str, int] = {}
    records: list[dict[str, Any]] = []
    percent, lower = [], []
    if data["items"]:
        log.info("held-out: %d rows", len(data["items"]))
        metrics, records = evaluate_heldout(
            model, tokenizer, data["items"], settings, batch_size=batch_size
        )
        counts = {"items": len(records), "tokens": sum(r["tokens"] for r in records)}
        percent, lower = ["exact_match"], list(LOWER_IS_BETTER)
    lm_items: dict[str, list[float]] = {}
    if data["lm_eval"]:
        results, samples = run_lm_eval(
            model, tokenizer, data["lm_eval"], limit=settings.lm_eval_limit, batch_size=batch_size
        )
        for name, _ in data["lm_eval"]:
            task_metrics, per_item, higher = lm_eval_metrics(results, samples, name)
            metrics.update(task_metrics)
            lm_items.update(per_item)
            counts[name] = int((results.get("n-samples") or {}).get(name, {}).get("effective", 0))
            for key in task_metrics:
                if key.split("/", 1)[1].split(",")[0] in FRACTION_METRICS:
                    percent.append(key)
                if not higher[key]:
                    lower.append(key)
    if settings.primary_metric not in metrics:
        raise LokiInputError(
            f"eval.primary_metric {settings.primary_metric!r} is not among the metrics "
            f"measured: {', '.join(metrics)}"
        )
    return {
        "metrics": metrics,
        "counts": counts,
        "items": records,
        "primary_metric": settings.primary_metric,
        "kind": KIND,
        "percent": percent,
        "lower_is_better": lower,
        "lm_eval_items": lm_items,
    }
