"""Snakemake script for rule eval_task: task performance of one run's model -> task.json."""

import logging
import sys

from loki_pipeline.interrupt import exit_on_sigint

exit_on_sigint()  # Ctrl-C: one line (rerun to resume) in the log, exit status 130

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from loki_pipeline.tasks.driver import run_task_eval  # noqa: E402
from loki_pipeline.tasks.registry import task_block  # noqa: E402
from loki_pipeline.tasks.settings import TaskEvalSettings  # noqa: E402

params = snakemake.params
config = {
    "tasks": {task: task_block(task, param) for task, param in params.eval_configs.items()},
    "evaluate": {"task": params.run_config},
    "device": params.device,
}
run_task_eval(
    snakemake.input.model,
    snakemake.output[0],
    TaskEvalSettings.from_config(config, params.tasks, threads=snakemake.threads),
    names={"model": snakemake.wildcards.model, "run": snakemake.wildcards.run},
)
