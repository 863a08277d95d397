"""Snakemake script for rule import_selection: a published selection file (select.imports) ->
results/select/{model}/{strategy}_q{q}.json."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from loki_pipeline.select.naming import parse_selection_stem  # noqa: E402
from loki_pipeline.select.selection_file import import_selection  # noqa: E402

model, stem = snakemake.wildcards.imported.split("/", 1)
strategy, q = parse_selection_stem(stem)
selection = import_selection(
    snakemake.input.selection,
    snakemake.output[0],
    snakemake.input.model,
    model=model,
    strategy=strategy,
    q=q,
)
logging.info(
    "imported %s: %d nodes over %d layers",
    snakemake.input.selection,
    sum(map(len, selection.positions)),
    len(selection.positions),
)
