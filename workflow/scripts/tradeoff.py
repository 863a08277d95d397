"""Snakemake script for rule tradeoff: forgetting Avg against task score, one point per run."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from loki_pipeline.report.build import build_tradeoff  # noqa: E402

runs = snakemake.params.runs
build_tradeoff(
    snakemake.wildcards.task,
    dict(zip(runs, snakemake.input.general, strict=True)),
    dict(zip(runs, snakemake.input.task, strict=True)),
    snakemake.output[0],
    suppress_general=dict(
        zip(snakemake.params.suppress_runs, snakemake.input.suppress, strict=True)
    ),
    title=f"{snakemake.wildcards.model}: {snakemake.wildcards.task}",
)
