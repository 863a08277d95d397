"""Snakemake script for rule global_layer_counts: G-H/G-L selections -> per-layer bar chart."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from loki_pipeline.figures.layer_counts import draw_global_layer_counts  # noqa: E402

draw_global_layer_counts(
    snakemake.input.high,
    snakemake.input.low,
    [snakemake.output.png, snakemake.output.pdf],
    kva_path=snakemake.input.kva,
)
