"""Snakemake script for rule suppress: zero the selected knowledge vectors (paper's Table 5)."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from loki_pipeline.implant.suppress import suppress_checkpoint  # noqa: E402

suppress_checkpoint(snakemake.input.model, snakemake.input.selection, snakemake.output[0])
