"""Snakemake script for rule suppress_table: forgetting of the suppression ablations (Table 5)."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from pathlib import Path  # noqa: E402

from loki_pipeline.report.build import build_suppress_table  # noqa: E402

general = {"base": snakemake.input.base}
general.update(zip(snakemake.params.runs, snakemake.input.general, strict=True))
build_suppress_table(general, Path(snakemake.output.csv).parent)
