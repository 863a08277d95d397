"""Snakemake script for rule train: one (model, task, method) run into its run directory."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

import torch  # noqa: E402

from loki_pipeline.data.sft import loader_options  # noqa: E402
from loki_pipeline.train.run import run_training  # noqa: E402
from loki_pipeline.train.settings import resolve_settings  # noqa: E402

torch.set_num_threads(snakemake.threads)
data = snakemake.params.data
settings = resolve_settings(
    {k: v for k, v in snakemake.params.training.items() if k != "threads"},
    snakemake.wildcards.task,
    snakemake.wildcards.method,
    data=data,
)
run_training(
    model_dir=snakemake.input.model,
    task=snakemake.wildcards.task,
    data=snakemake.input.get("data", data.get("source")),
    method_name=snakemake.wildcards.method,
    out_dir=snakemake.params.run_dir,
    settings=settings,
    selection_path=snakemake.input.get("selection"),
    checkpoint_dir=snakemake.params.checkpoint_dir,
    device=snakemake.params.device,
    data_options=loader_options(snakemake.wildcards.task, data),
)
