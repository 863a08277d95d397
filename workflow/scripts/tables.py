"""Snakemake script for rule tables: forgetting and task tables of one (model, task)."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from pathlib import Path  # noqa: E402

from loki_pipeline.report.build import build_task_tables  # noqa: E402

runs = snakemake.params.runs
build_task_tables(
    snakemake.wildcards.task,
    dict(zip(runs, snakemake.input.general, strict=True)),
    dict(zip(runs, snakemake.input.task, strict=True)),
    dict(zip(snakemake.params.trained, snakemake.input.params, strict=True)),
    Path(snakemake.output.forgetting).parent,
    caption_model=snakemake.wildcards.model,
    reference=snakemake.params.reference,
    external=snakemake.params.external,
)
