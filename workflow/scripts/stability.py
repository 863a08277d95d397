"""Snakemake script for rule stability: kva.h5 -> stability.csv and its figure."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from loki_pipeline.figures.stability import stability_report  # noqa: E402

stability_report(
    snakemake.input[0],
    snakemake.params.q,
    snakemake.output.csv,
    [snakemake.output.png, snakemake.output.pdf],
    seeds=snakemake.params.seeds,
    q_list=snakemake.params.q_list,
    chunk_size=snakemake.params.chunk_size,
)
