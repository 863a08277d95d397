"""Snakemake script for rule prepare_model: model spec -> resources/models/{model}/."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from loki_pipeline.models import prepare_model  # noqa: E402

prepare_model(
    snakemake.params.source,
    snakemake.output[0],
    trust_remote_code=snakemake.params.trust_remote_code,
)
