"""Snakemake script for rule select: kva.h5 -> results/select/{model}/{strategy}_q{q}.json."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from loki_pipeline.select.strategies import select_to_file  # noqa: E402

select_to_file(
    snakemake.input[0],
    snakemake.params.q,
    snakemake.wildcards.strategy,
    snakemake.output[0],
    chunk_size=snakemake.params.chunk_size,
    tie_break=snakemake.params.tie_break or "lower_index",  # None: a layer-balanced strategy
)
