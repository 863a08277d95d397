"""Snakemake script for rule heatmap: kva.h5 -> results/figures/{model}/kva_heatmap_q{q}.{png,pdf}."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from loki_pipeline.figures.heatmap import draw_kva_heatmap  # noqa: E402

draw_kva_heatmap(
    snakemake.input[0],
    snakemake.params.q,
    [snakemake.output.png, snakemake.output.pdf],
    bins=snakemake.params.bins,
    chunk_size=snakemake.params.chunk_size,
    model=snakemake.wildcards.model,
)
