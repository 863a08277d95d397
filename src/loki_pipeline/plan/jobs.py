"""Every KVA, training and evaluation job of a config, as the workflow makes them, with its memory.

The jobs are enumerated as ``workflow/rules/*.smk`` do (one KVA job per shard of each model,
one training job per ``experiments`` entry, one ``eval_general`` and one ``eval_task`` job per
run of each table, ``eval_general`` for the suppression runs), through the same functions
(:mod:`loki_pipeline.runs`, the method registry, the stages' settings). :func:`job_estimate`
is what the rules' ``mem_mb`` reads (:func:`job_mem_mb`). Light: no torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loki_pipeline import runs
from loki_pipeline.errors import LokiInputError
from loki_pipeline.plan.dims import ModelDims, model_dims, source_dims
from loki_pipeline.plan.memory import (
    Estimate,
    ceil_mb,
    eval_memory,
    kva_memory,
    training_memory,
)
from loki_pipeline.results_dir import DEFAULT as DEFAULT_RESULTS
from loki_pipeline.settings import lookup, schema_default, schema_node
from loki_pipeline.tasks.registry import is_generic, task_names

RULES = ("kva", "kva_compare", "train", "eval_general", "eval_task")
#: How many times a CPU job's resident memory holds the estimate's transient parts (all but
#: the weights): glibc keeps freed blocks of their size for reuse. Measured (benchmarks/
#: RESULTS.md, "Memory plan"): resident peaks 1.1-2.0x the live peak; 2.5 leaves headroom.
CPU_TRANSIENT_FACTOR = 2.5
#: lm-eval's own cap on new tokens when a task's YAML names none (HFLM's max_gen_toks)
LM_EVAL_DEFAULT_GEN = 256


@dataclass
class Job:
    """One planned job: its rule, the output it makes (its label: a path inside the config's
    results folder), the model and its memory estimate; what it trains or evaluates is carried
    here too, so no part of the plan parses the label."""

    rule: str
    target: str
    model: str
    what: str
    estimate: Estimate
    count: int = 1  # identical jobs it stands for (KVA shards)
    task: str | None = None  # training jobs: what they train
    method: str | None = None
    run: str | None = None  # evaluation jobs: the run (of a shared row, its first run)


def plan_block(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config's ``plan`` block with the schema's defaults filled in."""
    from loki_pipeline.schemas import fill_defaults

    return fill_defaults(dict(config.get("plan") or {}), schema_node("plan"))


def prompt_tokens(config: Mapping[str, Any], kind: str) -> int:
    """``plan.prompt_tokens.<kind>``: the longest prompt of a batch of that kind of job."""
    return int(plan_block(config)["prompt_tokens"][kind])


def supervised_fraction(config: Mapping[str, Any], task: str) -> float:
    """``plan.supervised_fraction``: one number, or the task's entry (1 when it has none)."""
    value = plan_block(config)["supervised_fraction"]
    return float(value.get(task, 1.0) if isinstance(value, Mapping) else value)


def on_gpu(config: Mapping[str, Any]) -> bool:
    """The rules claim a GPU only for ``device: cuda`` ('auto' plans as the CPU it may be)."""
    return lookup(config, "device", schema_default("device")) == "cuda"


def dims_of(config: Mapping[str, Any], model: str, *, required: bool = True) -> ModelDims | None:
    """Dimensions of config model ``model`` (its prepared checkpoint, else the shipped table)."""
    source = config["models"][model]["source"]
    return model_dims(model, source, required=required)


def run_dims(config: Mapping[str, Any], model: str, run: str) -> ModelDims:
    """Dimensions of the checkpoint a run evaluates: a run named after a config model is that
    model, an external run its own source where the plan knows it, else the base model's."""
    if run in config["models"]:
        return dims_of(config, run)
    source = runs.external_runs(config, model).get(run)
    return (source and source_dims(source)) or dims_of(config, model)


# --------------------------------------------------------------------------- per job
def kva_estimate(config: Mapping[str, Any], dims: ModelDims) -> Estimate:
    from loki_pipeline.kva.settings import KVASettings

    settings = KVASettings.from_config(config)
    tokens = prompt_tokens(config, "kva")
    return kva_memory(dims, settings, prompt_tokens=tokens, on_gpu=on_gpu(config))


def train_estimate(config: Mapping[str, Any], dims: ModelDims, task: str, method: str) -> Estimate:
    from loki_pipeline.train.methods import parse_method
    from loki_pipeline.train.settings import TrainSettings

    settings = TrainSettings.from_config(config, task, method)
    fraction = supervised_fraction(config, task)
    return training_memory(
        dims, parse_method(method), settings, supervised_fraction=fraction, on_gpu=on_gpu(config)
    )


def yaml_caps(path: Path) -> tuple[str | None, int | None]:
    """(output_type, max_gen_toks) of an lm-eval task YAML, read as text (they hold tags such
    as ``!function`` that a plain YAML loader refuses)."""
    if not path.is_file():
        return None, None
    text = path.read_text(encoding="utf-8")
    kind = re.search(r"^output_type:\s*(\S+)", text, re.M)
    cap = re.search(r"^\s+max_gen_toks:\s*(\d+)", text, re.M)
    return (kind and kind[1]), (cap and int(cap[1]))


def general_task_files(protocol: str) -> dict[str, Path]:
    """Each general benchmark's task YAML under ``protocol``: the OpenCompass ones in this
    package, else the official lm-eval file its template includes (found without importing
    lm-eval)."""
    import importlib.util

    from loki_pipeline.evaluate import general

    here = Path(general.__file__).parent
    if protocol == "opencompass":
        return {t: here / "opencompass_tasks" / f"{t}.yaml" for t in general.OPENCOMPASS_METRICS}
    spec = importlib.util.find_spec("lm_eval")
    official = Path(spec.submodule_search_locations[0]) / "tasks" if spec else None
    files = {}
    for template in sorted((here / "lm_eval_tasks").glob("*.yaml")):
        include = re.search(r"^include:\s*\$LM_EVAL_TASKS/(\S+)", template.read_text(), re.M)
        if official is not None and include:
            files[template.stem] = official / include[1]
    return files


def general_calls(settings: Any, prompt: int) -> list[dict[str, Any]]:
    """One model call per benchmark: a generation to its cap (``max_gen_toks`` when set), or
    for log-likelihood tasks one forward with every position's logits."""
    files = general_task_files(settings.protocol)
    calls = []
    for task in settings.tasks:
        kind, cap = yaml_caps(files.get(task, Path("/nonexistent")))
        batch = int(settings.batch_size)
        if kind in ("multiple_choice", "loglikelihood"):
            calls.append({"batch": batch, "prompt": prompt, "new_tokens": 0, "full_logits": True})
            continue
        new = settings.max_gen_toks or cap or LM_EVAL_DEFAULT_GEN
        calls.append({"batch": batch, "prompt": prompt, "new_tokens": int(new)})
    return calls


def task_prompt_tokens(config: Mapping[str, Any], task: str) -> int:
    """The longest prompt of a task evaluation's batch: ``plan.prompt_tokens.<task>`` for the
    paper's tasks; for a task of the user's its ``train.cutoff_len`` (its rows are trained at
    that length, and its held-out rows come from the same data)."""
    if not is_generic(task):
        return prompt_tokens(config, task)
    return int(config["tasks"][task]["train"]["cutoff_len"])


def task_calls(config: Mapping[str, Any], task: str, settings: Any, dims: ModelDims) -> list[dict]:
    """The calls of one task evaluation: BFCL's batched generations (and, with multi-turn
    categories, one conversation at a time up to the model's context); reranking's forward
    passes over every position's logits; a task of the user's held-out answer losses (every
    position's logits), its greedy answers and, with lm-eval tasks, one log-likelihood forward
    of the general benchmarks' prompt length."""
    prompt = task_prompt_tokens(config, task)
    batch = int(settings.batch_size)
    bench = settings.tasks[task]
    if is_generic(task):
        calls = [
            {"batch": batch, "prompt": prompt, "new_tokens": 0, "full_logits": True},
            {"batch": batch, "prompt": prompt, "new_tokens": int(bench.answer_margin)},
        ]
        if bench.lm_eval:
            general = prompt_tokens(config, "general")
            calls.append({"batch": batch, "prompt": general, "new_tokens": 0, "full_logits": True})
        return calls
    if task == "toolace":
        new = int(bench.max_new_tokens)
        calls = [{"batch": batch, "prompt": prompt, "new_tokens": new}]
        if any(c.startswith("multi_turn") for c in bench.categories) and dims.context:
            calls.append({"batch": 1, "prompt": dims.context - new, "new_tokens": new})
        return calls
    return [{"batch": batch, "prompt": prompt, "new_tokens": 0, "full_logits": True}]


def eval_estimate(config: Mapping[str, Any], rule: str, model: str, run: str) -> Estimate:
    dims = run_dims(config, model, run)
    gpu = on_gpu(config)
    if rule == "eval_general":
        from loki_pipeline.evaluate.settings import GeneralEvalSettings

        settings = GeneralEvalSettings.from_config(config)
        prompt = prompt_tokens(config, "general")
        return eval_memory(dims, settings.dtype, general_calls(settings, prompt), on_gpu=gpu)
    from loki_pipeline.tasks.settings import TaskEvalSettings

    tasks = runs.run_tasks(config, model, run, task_names(config))
    settings = TaskEvalSettings.from_config(config, tasks)
    calls = [c for t in tasks for c in task_calls(config, t, settings, dims)]
    return eval_memory(dims, settings.dtype, calls, on_gpu=gpu)


def job_estimate(config: Mapping[str, Any], rule: str, wildcards: Mapping[str, str]) -> Estimate:
    """The estimate of one job of ``rule`` with ``wildcards`` (model, task, method, run)."""
    model = wildcards["model"]
    if rule in ("kva", "kva_compare"):
        return kva_estimate(config, dims_of(config, model))
    if rule == "train":
        return train_estimate(
            config, dims_of(config, model), wildcards["task"], wildcards["method"]
        )
    if rule in ("eval_general", "eval_task"):
        return eval_estimate(config, rule, model, wildcards["run"])
    raise LokiInputError(f"the memory plan covers the rules {', '.join(RULES)}, not {rule!r}")


def host_mb(estimate: Estimate, gpu: bool) -> int:
    """``mem_mb`` of a job: its host estimate; on CPU the transient parts count
    :data:`CPU_TRANSIENT_FACTOR` times (what glibc keeps of freed blocks)."""
    host = estimate.host
    if not gpu:
        transient = sum(v for k, v in estimate.parts.items() if k not in ("weights",))
        host += (CPU_TRANSIENT_FACTOR - 1) * transient
    return ceil_mb(host)


def job_mem_mb(
    config: Mapping[str, Any], rule: str, wildcards: Mapping[str, str], attempt: int = 1
) -> int | None:
    """Snakemake ``mem_mb`` of a job, times ``attempt`` (a retry asks for more); None while the
    model is neither prepared nor in the shipped table (the DAG is being built: Snakemake asks
    again once the job's inputs exist)."""
    models = [wildcards["model"]]
    if rule in ("eval_general", "eval_task") and wildcards["run"] in config["models"]:
        models.append(wildcards["run"])  # a run that evaluates another config model
    if any(dims_of(config, m, required=False) is None for m in models):
        return None
    return host_mb(job_estimate(config, rule, wildcards), on_gpu(config)) * int(attempt)


# --------------------------------------------------------------------------- the whole config
def evaluated_runs(config: Mapping[str, Any], model: str) -> tuple[list[str], list[str]]:
    """(runs with a general evaluation, runs with a task evaluation) of ``model``: every row of
    its tables (base, training runs, external runs), and for general also its suppression runs."""
    tabled = [r for t in runs.table_tasks(config, model) for r in runs.table_runs(config, model, t)]
    tabled = list(dict.fromkeys(tabled))
    return list(dict.fromkeys(tabled + runs.suppress_runs(config, model))), tabled


def plan_jobs(config: Mapping[str, Any], results: str = DEFAULT_RESULTS) -> list[Job]:
    """Every KVA, training and evaluation job of a validated config, in the workflow's order,
    labelled with its output inside ``results`` (the config's results folder,
    :func:`loki_pipeline.results_dir.results_dir`); evaluation jobs of one model whose
    estimates are equal share a row (``count``)."""
    kva = config["kva"]
    jobs = []
    for model in config["models"]:
        dims = dims_of(config, model)
        what = (f"KVA {kva['method']}, {kva['batch_prompts']} prompts x "
                f"{prompt_tokens(config, 'kva')} tokens, {kva['steps']} steps, {kva['dtype']}")  # fmt: skip
        estimate = kva_estimate(config, dims)
        jobs.append(Job("kva", f"{results}/kva/{model}/shards/{{i}}.h5", model, what, estimate,
                        count=int(kva["shards"])))  # fmt: skip
        if kva.get("compare_dataset") is not None:
            jobs.append(Job("kva_compare", f"{results}/kva/{model}/compare/shards/{{i}}.h5", model,
                            what, estimate, count=int(kva["shards"])))  # fmt: skip
    for model, tasks in (config.get("experiments") or {}).items():
        dims = dims_of(config, model)
        for task, methods in (tasks or {}).items():
            for method in methods:
                estimate = train_estimate(config, dims, task, method)
                jobs.append(Job("train", f"{results}/train/{model}/{task}/{method}", model,
                                train_what(config, task, method), estimate, task=task,
                                method=method))  # fmt: skip
    for model in config["models"]:
        general, tasked = evaluated_runs(config, model)
        for rule, names in (("eval_general", general), ("eval_task", tasked)):
            out = "general.json" if rule == "eval_general" else "task.json"
            for run in names:
                estimate = eval_estimate(config, rule, model, run)
                what = eval_what(config, rule, model, run)
                same = [j for j in jobs if (j.rule, j.model, j.what) == (rule, model, what)
                        and j.estimate.parts == estimate.parts]  # fmt: skip
                if same:
                    same[0].count += 1
                    same[0].target = f"{results}/eval/{model}/{{run}}/{out}"
                else:
                    target = f"{results}/eval/{model}/{run}/{out}"
                    jobs.append(Job(rule, target, model, what, estimate, run=run))
    return jobs


def train_what(config: Mapping[str, Any], task: str, method: str) -> str:
    from loki_pipeline.train.settings import TrainSettings

    s = TrainSettings.from_config(config, task, method)
    parts = [f"{method} on {task}", f"batch {s.batch_size} x {s.cutoff_len}", s.dtype]
    if getattr(s, "gradient_checkpointing", False):
        parts.append("checkpointing")
    if int(getattr(s, "processes", 1) or 1) > 1:
        parts.append(f"{getattr(s, 'distributed', 'ddp')} x {s.processes}")
    return ", ".join(parts)


def eval_what(config: Mapping[str, Any], rule: str, model: str, run: str) -> str:
    if rule == "eval_general":
        general = config["evaluate"]["general"]
        return (f"general ({general['protocol']}), batch {general['batch_size']} x "
                f"{prompt_tokens(config, 'general')} tokens")  # fmt: skip
    tasks = runs.run_tasks(config, model, run, task_names(config))
    batch = config["evaluate"]["task"]["batch_size"]
    return (
        f"{'+'.join(tasks)}, batch {batch} x "
        + "/".join(str(task_prompt_tokens(config, t)) for t in tasks)
        + " tokens"
    )
