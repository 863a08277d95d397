"""Snakemake script for rule eval_task: task performance of one run's model -> task.json."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from loki_pipeline.evaluate.task import run_task_eval  # noqa: E402

run_config = snakemake.params.run_config
run_task_eval(
    snakemake.input.model,
    snakemake.params.tasks,
    snakemake.output[0],
    eval_configs=snakemake.params.eval_configs,
    run={
        "batch_size": run_config.get("batch_size", 8),
        "threads": snakemake.threads,
        "dtype": run_config.get("dtype", "float32"),
    },
    device=snakemake.params.device,
    names={"model": snakemake.wildcards.model, "run": snakemake.wildcards.run},
)
