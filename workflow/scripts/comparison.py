"""Snakemake script for rule comparison: each LoKI run against each baseline of one task."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from pathlib import Path  # noqa: E402

from loki_pipeline.report.comparison import build_comparison  # noqa: E402

runs = snakemake.params.runs
build_comparison(
    snakemake.wildcards.task,
    dict(zip(runs, snakemake.input.general, strict=True)),
    dict(zip(runs, snakemake.input.task, strict=True)),
    Path(snakemake.output.csv).parent,
    caption_model=snakemake.wildcards.model,
)
