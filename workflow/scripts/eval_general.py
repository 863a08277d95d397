"""Snakemake script for rule eval_general: lm-eval general-ability scores of one run's model."""

import logging
import sys

from loki_pipeline.interrupt import exit_on_sigint

exit_on_sigint()  # Ctrl-C: one line (rerun to resume) in the log, exit status 130

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from pathlib import Path  # noqa: E402

from loki_pipeline.evaluate.general import evaluate_general  # noqa: E402
from loki_pipeline.evaluate.settings import GeneralEvalSettings  # noqa: E402

config = {"evaluate": {"general": snakemake.params.general}, "device": snakemake.params.device}
evaluate_general(
    snakemake.input.model,
    snakemake.output.summary,
    GeneralEvalSettings.from_config(config, threads=snakemake.threads),  # as Snakemake gave
    model=snakemake.wildcards.model,
    run=snakemake.wildcards.run,
    lm_eval_dir=Path(snakemake.output.lm_eval).parent,
)
