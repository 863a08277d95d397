"""Snakemake script for rule prepare_model: model spec -> resources/models/{model}/."""

import logging
import sys

from loki_pipeline.interrupt import exit_on_sigint

exit_on_sigint()  # Ctrl-C: one line (rerun to resume) in the log, exit status 130

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from loki_pipeline.models import prepare_model  # noqa: E402

prepare_model(
    snakemake.params.source,
    snakemake.output[0],
    trust_remote_code=snakemake.params.trust_remote_code,
)
