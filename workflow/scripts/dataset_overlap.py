"""Snakemake script for rule dataset_overlap: the LoKI selection of kva.dataset against that of
kva.compare_dataset -> results/select/{model}/dataset_overlap.csv."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from loki_pipeline.select.stability import dataset_overlap, write_stability_csv  # noqa: E402

row = dataset_overlap(
    snakemake.input.reference,
    snakemake.input.compare,
    snakemake.params.q,
    label=snakemake.params.label,
    chunk_size=snakemake.params.chunk_size,
)
write_stability_csv(snakemake.output[0], [row])
logging.info("overlap %.4f (%d of %d nodes in common)", row["overlap"], row["common"],
             row["reference_selected"])  # fmt: skip
