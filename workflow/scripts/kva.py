"""Snakemake script for rule kva: attribute one shard of the prompts into an HDF5 file.

The shard is built in a sibling ``.partial.h5`` (not a declared output, so Snakemake never
deletes it): a killed job resumes from its last flushed sample, and only a finished shard is
renamed onto the output.
"""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from loki_pipeline.kva.runner import run_kva_shard  # noqa: E402

kva = snakemake.params.kva
run_kva_shard(
    model_dir=snakemake.input.model,
    dataset=kva["dataset"],
    out_path=snakemake.output[0],
    shard=int(snakemake.wildcards.shard),
    num_shards=snakemake.params.num_shards,
    steps=kva["steps"],
    method=kva["method"],
    quadrature=kva["quadrature"],
    dtype=kva["dtype"],
    device=snakemake.params.device,
    threads=snakemake.threads,
    batch_prompts=kva["batch_prompts"],
)
