"""Snakemake script for rule kva_gather: merge the shards into results/kva/{model}/kva.h5."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from loki_pipeline.kva.storage import gather_shards  # noqa: E402

gather_shards(list(snakemake.input), snakemake.output[0])
