"""Snakemake script for rule train: one (model, task, method) run into its run directory.

With training.processes N > 1 it runs again under torchrun as N data-parallel processes:
Snakemake's copy of this script (sys.argv[0]) carries the job's `snakemake` object, so each
process reads the same job; their stderr all goes to the job's log.
"""

import logging
import sys

from loki_pipeline.interrupt import exit_on_sigint
from loki_pipeline.train.launch import exec_torchrun, launched_by_torchrun

exit_on_sigint()  # Ctrl-C: one line (rerun to resume) in the log, exit status 130

processes = snakemake.params.processes
if processes > 1 and not launched_by_torchrun():
    exec_torchrun(processes, sys.argv[0], snakemake.log[0])  # does not return
if not launched_by_torchrun():
    sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

import torch  # noqa: E402

from loki_pipeline.tasks.registry import loader_options  # noqa: E402
from loki_pipeline.train.run import run_training  # noqa: E402
from loki_pipeline.train.settings import TrainSettings  # noqa: E402

torch.set_num_threads(max(1, snakemake.threads // processes))  # the job's threads, shared
task, method = snakemake.wildcards.task, snakemake.wildcards.method
data = snakemake.params.data  # tasks.<task>.train ({} for a paper task the config does not declare)
config = {"training": snakemake.params.training, "tasks": {task: {"train": data}}}
run_training(
    model_dir=snakemake.input.model,
    task=task,
    data=snakemake.input.get("data", data.get("source")),
    method_name=method,
    out_dir=snakemake.params.run_dir,
    settings=TrainSettings.from_config(config, task, method),
    selection_path=snakemake.input.get("selection"),
    checkpoint_dir=snakemake.params.checkpoint_dir,
    device=snakemake.params.device,
    data_options=loader_options(task, data),
)
