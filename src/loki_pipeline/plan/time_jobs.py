"""FLOPs and estimated seconds of each planned job (:mod:`loki_pipeline.plan.timing`'s model
applied to the jobs of :func:`loki_pipeline.plan.jobs.plan_jobs`). Light: no torch but the
CPU's one-off calibration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loki_pipeline import runs
from loki_pipeline.data.records import is_hub_source
from loki_pipeline.plan import timing
from loki_pipeline.plan.jobs import (
    Job,
    dims_of,
    general_task_files,
    plan_block,
    prompt_tokens,
    run_dims,
    supervised_fraction,
    yaml_caps,
)
from loki_pipeline.plan.memory import dtype_bytes
from loki_pipeline.settings import lookup
from loki_pipeline.tasks.registry import is_generic, task_names

#: Items of the paper's general benchmarks where their data is not here (the official
#: evaluation splits: TriviaQA rc.nocontext validation, GSM8K test, HellaSwag validation,
#: WinoGrande validation (xl dev), HumanEval test, IFEval train).
GENERAL_ITEMS = {"triviaqa": 17944, "gsm8k": 1319, "hellaswag": 10042, "winogrande": 1267,
                 "humaneval": 164, "ifeval": 541}  # fmt: skip
#: ASSUMPTION: tokens a generation really produces before its stop sequence or EOS (a batch
#: runs to its longest), capped by the benchmark's max_gen_toks: short answers for TriviaQA and
#: the lettered HellaSwag/WinoGrande, a worked solution for GSM8K, code for HumanEval, a
#: response for IFEval.
EXPECTED_OUTPUT = {"triviaqa": 24, "gsm8k": 256, "hellaswag": 16, "winogrande": 16,
                   "humaneval": 384, "ifeval": 512}  # fmt: skip
#: ASSUMPTION: BFCL v3 items per category where the config caps none (its data files' sizes
#: as we read them), the tokens of a single-turn prompt (question and function documents),
#: and the turns of a multi-turn conversation. Its context, the API documents, is ~5.5k tokens
#: (benchmarks/multi_turn_cache.py) and is prefilled once: ``PrefixCachedChat`` keeps it
#: cached across the conversation's steps, which then only decode.
BFCL_ITEMS = {"simple_python": 400, "multiple": 200, "parallel": 200, "parallel_multiple": 200,
              "irrelevance": 240, "live_simple": 258, "live_multiple": 1053, "live_parallel": 16,
              "live_parallel_multiple": 24, "live_irrelevance": 882, "live_relevance": 18}  # fmt: skip
BFCL_MULTI_TURN_ITEMS, BFCL_TURNS = 200, 4
BFCL_PROMPT_TOKENS, BFCL_MULTI_TURN_CONTEXT = 800, 5500
#: ASSUMPTION: tokens of one BFCL answer (a function call or two).
BFCL_OUTPUT = 48


def threads(config: Mapping[str, Any], key: str) -> int:
    return int(lookup(config, key, 1) or 1)


def _general_items(config: Mapping[str, Any], task: str) -> tuple[int, float]:
    """(items, mean prompt tokens) of a general benchmark: from ``data_dir`` when here."""
    general = config["evaluate"]["general"]
    folder = Path(str(general.get("data_dir") or "")) / task
    limit = general.get("limit")
    files = sorted(folder.glob("*.jsonl")) if general.get("source") == "local" else []
    split = next((f for f in files if f.stem in ("test", "validation")), None) or (
        files[0] if files else None
    )
    if split is not None:
        rows = timing.jsonl_rows(split)
        if limit:
            rows = rows[: int(limit)]
        tokens = sum(timing.text_tokens(" ".join(map(str, r.values()))) for r in rows)
        return len(rows), tokens / max(1, len(rows))
    items = GENERAL_ITEMS.get(task, 1000)
    if limit:
        items = min(items, int(limit))
    return items, float(prompt_tokens(config, "general")) / 2  # the plan's longest, halved


def _generation(dims, device, *, items, batch, prompt, new, weight_bytes) -> tuple[float, float]:
    """(FLOPs, seconds) of greedy generation: prefill by compute, decoding by bandwidth."""
    flops = timing.forward_flops(dims, items * prompt, prompt, items)
    flops += timing.forward_flops(dims, items * new, prompt + new / 2, items * new)
    batches = math.ceil(items / batch)
    seconds = timing.forward_flops(dims, items * prompt, prompt, items) / device.flop_rate
    seconds += timing.decode_seconds(dims, device, batches=batches, batch=batch,
                                     context=prompt + new / 2, new_tokens=new,
                                     weight_bytes=weight_bytes)  # fmt: skip
    return flops, seconds


def _scoring(dims, device, *, passes, batch, prompt) -> tuple[float, float]:
    """(FLOPs, seconds) of forward passes that score every position (log-likelihoods)."""
    flops = timing.forward_flops(dims, passes * prompt, prompt, passes * prompt)
    steps = math.ceil(passes / batch)
    return flops, flops / device.flop_rate + steps * device.step_overhead_s


def kva_time(config, job: Job, device_name: str) -> tuple[float, float, str]:
    from loki_pipeline.plan.memory import kva_rows

    kva = config["kva"]
    dims = dims_of(config, job.model)
    dataset = kva["dataset"]
    rows = None if is_hub_source(str(dataset["source"])) else timing.data_rows(dataset["source"])
    if rows:
        cap = int(dataset.get("max_per_subject") or 0)
        seen: dict[str, int] = {}
        kept = []
        for r in rows:
            subject = str(r.get("subject", ""))
            if not cap or seen.get(subject, 0) < cap:
                seen[subject] = seen.get(subject, 0) + 1
                kept.append(r)
        prompts, tokens = len(kept), timing.mean_prompt_tokens(kept, ("question", "choices"))
        source = "data"
    else:  # MMLU: 57 subjects, up to max_per_subject each (test split: 14,042 questions)
        cap = int(dataset.get("max_per_subject") or 0)
        prompts = min(14042, 57 * cap) if cap else 14042
        tokens, source = prompt_tokens(config, "kva") / 2, "MMLU's size"
    per_shard = prompts / int(kva["shards"])
    rows_per_layer = kva_rows(int(kva["steps"]), kva["quadrature"])
    flops = timing.kva_flops(dims, prompts=per_shard, tokens=tokens, rows=rows_per_layer)
    device = timing.device_profile(device_name, threads(config, "kva.threads"))
    batches = math.ceil(per_shard / int(kva["batch_prompts"]))
    seconds = flops / device.flop_rate + batches * dims.num_layers * device.step_overhead_s
    return flops, seconds, source


def train_time(config, job: Job, device_name: str) -> tuple[float, float, str]:
    from loki_pipeline.plan.memory import activation_kind
    from loki_pipeline.train.methods import parse_method
    from loki_pipeline.train.settings import TrainSettings

    s = TrainSettings.from_config(config, job.task, job.method)
    dims = dims_of(config, job.model)
    train = (config.get("tasks") or {}).get(job.task, {}).get("train") or {}
    examples, mean_len, source = timing.dataset_size(
        train.get("source"), job.task, int(s.cutoff_len), int(s.max_samples or 0)
    )
    per_step = int(s.batch_size) * int(s.grad_accum) * int(s.processes)
    if s.packing:  # rows packed into sequences of cutoff_len
        seq = float(s.cutoff_len)
        sequences = math.ceil(s.epochs * examples * mean_len / seq)
    else:  # a padded batch runs at its longest row: ASSUMPTION 1.3 x the mean for batch > 1
        seq = min(float(s.cutoff_len), mean_len * (1.3 if s.batch_size > 1 else 1.0))
        sequences = math.ceil(s.epochs * examples)
    steps = s.max_steps or math.ceil(sequences / per_step)
    tokens = steps * per_step * seq
    fraction = supervised_fraction(config, job.task)
    flops = timing.training_flops(
        dims, activation_kind(parse_method(job.method)), tokens=tokens, seq=seq,
        supervised=tokens * fraction, checkpointing=bool(s.gradient_checkpointing),
    )  # fmt: skip
    device = timing.device_profile(device_name, threads(config, "training.threads"))
    per_gpu = flops / max(1, int(s.processes))
    seconds = per_gpu / device.flop_rate + steps * int(s.grad_accum) * device.step_overhead_s
    return flops, seconds, source


def general_time(config, job: Job, device_name: str) -> tuple[float, float, str]:
    from loki_pipeline.evaluate.settings import GeneralEvalSettings

    settings = GeneralEvalSettings.from_config(config)
    dims = run_dims(config, job.model, job.run or "base")
    device = timing.device_profile(device_name, threads(config, "evaluate.general.threads"))
    b = dtype_bytes(settings.dtype, dims)
    files = general_task_files(settings.protocol)
    flops = seconds = 0.0
    source = "data"
    for task in settings.tasks:
        items, prompt = _general_items(config, task)
        if task in GENERAL_ITEMS and items == GENERAL_ITEMS[task]:
            source = "benchmarks' sizes"
        kind, cap = yaml_caps(files.get(task, Path("/nonexistent")))
        batch = int(settings.batch_size)
        if kind in ("multiple_choice", "loglikelihood"):
            choices = {"hellaswag": 4, "winogrande": 2}.get(task, 4)
            f, t = _scoring(dims, device, passes=items * choices, batch=batch, prompt=prompt)
        else:
            limit = settings.max_gen_toks or cap or 256
            new = min(int(limit), EXPECTED_OUTPUT.get(task, int(limit)))
            f, t = _generation(dims, device, items=items, batch=batch, prompt=prompt, new=new,
                               weight_bytes=b)  # fmt: skip
        flops, seconds = flops + f, seconds + t
    return flops, seconds, source


def task_time(config, job: Job, device_name: str) -> tuple[float, float, str]:
    from loki_pipeline.tasks.settings import TaskEvalSettings

    run = job.run or "base"
    tasks = runs.run_tasks(config, job.model, run, task_names(config))
    settings = TaskEvalSettings.from_config(config, tasks)
    dims = run_dims(config, job.model, run)
    device = timing.device_profile(device_name, threads(config, "evaluate.task.threads"))
    b = dtype_bytes(settings.dtype, dims)
    batch = int(settings.batch_size)
    flops = seconds = 0.0
    for task in tasks:
        bench = settings.tasks[task]
        if is_generic(task):
            continue  # a task of the user's: not modelled (its rows are few)
        if task == "toolace":
            cap = bench.max_per_category
            single = [c for c in bench.categories if not c.startswith("multi_turn")]
            multi = [c for c in bench.categories if c.startswith("multi_turn")]
            items = sum(min(cap or BFCL_ITEMS.get(c, 200), BFCL_ITEMS.get(c, 200)) for c in single)
            new = min(int(bench.max_new_tokens), BFCL_OUTPUT)
            f, t = _generation(dims, device, items=items, batch=batch, prompt=BFCL_PROMPT_TOKENS,
                               new=new, weight_bytes=b)  # fmt: skip
            conversations = (
                len(bench.multi_turn_ids)
                if bench.multi_turn_ids
                else (len(multi) * (cap or BFCL_MULTI_TURN_ITEMS))
            )
            # ASSUMPTION: two steps per turn (a call, then the answer) at most
            steps = BFCL_TURNS * min(int(bench.max_steps_per_turn), 2)
            f2, t2 = _generation(dims, device, items=conversations, batch=1,
                                 prompt=BFCL_MULTI_TURN_CONTEXT, new=steps * new,
                                 weight_bytes=b)  # fmt: skip
            flops, seconds = flops + f + f2, seconds + t + t2
        else:  # reranking: one scoring pass per query and candidate
            queries = int(getattr(bench, "max_queries", 0) or 300)
            passes = queries * (1 + int(getattr(bench, "negatives_per_query", 0) or 99))
            f, t = _scoring(dims, device, passes=passes, batch=batch, prompt=300)
            flops, seconds = flops + f, seconds + t
    return flops, seconds, "assumed BFCL/BEIR sizes"


def job_time(config: Mapping[str, Any], job: Job, device_name: str) -> tuple[float, float, str]:
    """(FLOPs, estimated seconds, where the work's size came from) of one job."""
    if job.rule in ("kva", "kva_compare"):
        return kva_time(config, job, device_name)
    if job.rule == "train":
        return train_time(config, job, device_name)
    if job.rule == "eval_general":
        return general_time(config, job, device_name)
    return task_time(config, job, device_name)


def plan_device(config: Mapping[str, Any], override: str | None = None) -> str:
    """``--device`` over ``plan.device`` (default: h100 for ``device: cuda``, else cpu)."""
    if override and override != "auto":
        return override
    chosen = plan_block(config).get("device")
    if chosen:
        return str(chosen)
    return "h100" if lookup(config, "device", "cpu") == "cuda" else "cpu"
