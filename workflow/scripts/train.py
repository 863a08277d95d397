"""Snakemake script for rule train: one (model, task, method) run into its run directory."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

import torch  # noqa: E402

from loki_pipeline.tasks import loader_options  # noqa: E402
from loki_pipeline.train.run import run_training  # noqa: E402
from loki_pipeline.train.settings import TrainSettings  # noqa: E402

torch.set_num_threads(snakemake.threads)
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
