"""Snakemake script for rule kva: attribute one shard of the prompts into an HDF5 file.

The shard is built in a sibling ``.partial.h5`` (not a declared output, so Snakemake never
deletes it): a killed job resumes from its last flushed sample, and only a finished shard is
renamed onto the output.
"""

import logging
import sys

from loki_pipeline.interrupt import exit_on_sigint

exit_on_sigint()  # Ctrl-C: one line (rerun to resume) in the log, exit status 130

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from loki_pipeline.kva.runner import run_kva_shard  # noqa: E402
from loki_pipeline.kva.settings import KVASettings  # noqa: E402

config = {"kva": snakemake.params.kva, "device": snakemake.params.device}
run_kva_shard(
    snakemake.input.model,
    snakemake.output[0],
    KVASettings.from_config(config, threads=snakemake.threads),  # as many as Snakemake gave
    shard=int(snakemake.wildcards.shard),
)
