"""The plan as rows: each job's memory estimate (:mod:`plan.jobs`), with its time
(:mod:`plan.time_jobs`), the largest batch its data forms (:mod:`plan.data_batches`) and what
makes it fit (:mod:`plan.fit`): the one module that puts the plan's parts together, above them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loki_pipeline.plan.data_batches import largest_batch
from loki_pipeline.plan.fit import training_fit, whole_model_note
from loki_pipeline.plan.jobs import (
    Job,
    dims_of,
    host_mb,
    on_gpu,
    plan_block,
    plan_jobs,
    supervised_fraction,
)
from loki_pipeline.plan.time_jobs import job_time
from loki_pipeline.results_dir import DEFAULT as DEFAULT_RESULTS
from loki_pipeline.train.methods import parse_method
from loki_pipeline.train.settings import TrainSettings


def plan_rows(
    config: Mapping[str, Any],
    device: str | None = None,
    data: bool = False,
    results: str = DEFAULT_RESULTS,
) -> list[dict[str, Any]]:
    """The plan as JSON-ready rows: each job's label (``job``: its output inside ``results``,
    the config's results folder), per-device parts in GB, GPUs, fits, host ``mem_mb``; with
    ``device`` (a :data:`timing.DEVICES` name) each job's ``flops`` and ``est_seconds`` too;
    with ``data`` each training job's ``largest_batch`` (:mod:`plan.data_batches`)."""
    limit = float(plan_block(config)["gpu_memory_gb"])
    gpu = on_gpu(config)
    rows = []
    for job in plan_jobs(config, results):
        e = job.estimate
        timed = {}
        if device is not None:
            flops, seconds, source = job_time(config, job, device)
            timed = {"flops": flops, "est_seconds": round(seconds, 1), "work_from": source}
        if data and job.rule == "train":
            timed["largest_batch"] = largest_batch_of(config, job)
        rows.append({
            "rule": job.rule,
            "job": job.target,
            "count": job.count,
            "model": job.model,
            "what": job.what,
            "parts_gb": {k: round(v / 1e9, 3) for k, v in e.parts.items()},
            "device_gb": round(e.device / 1e9, 3),
            "gpus": e.gpus,
            "fits": "yes" if e.device <= limit * 1e9 else "no",
            "gpu_memory_gb": limit,
            "mem_mb": host_mb(e, gpu),
            "notes": e.notes,
            "fit": None if e.device <= limit * 1e9 else fit_hint(config, job, limit),
            **timed,
        })  # fmt: skip
    return rows


def largest_batch_of(config: Mapping[str, Any], job: Job) -> dict[str, Any] | None:
    """The largest micro-batch the seeded data order forms, where the data is here."""
    settings = TrainSettings.from_config(config, job.task, job.method)
    return largest_batch(config, dims_of(config, job.model), job.model, job.task,
                         parse_method(job.method), settings)  # fmt: skip


def fit_hint(config: Mapping[str, Any], job: Job, limit: float) -> str:
    """What makes a job over ``limit`` GB fit (:mod:`loki_pipeline.plan.fit`)."""
    if job.rule != "train":
        e = job.estimate
        return whole_model_note(job.rule, e.parts["weights"], e.device, limit)
    settings = TrainSettings.from_config(config, job.task, job.method)
    return training_fit(dims_of(config, job.model), parse_method(job.method), settings,
                        supervised_fraction=supervised_fraction(config, job.task),
                        limit_gb=limit)  # fmt: skip
