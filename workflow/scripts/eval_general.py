"""Snakemake script for rule eval_general: lm-eval general-ability scores of one run's model."""

import logging
import sys

sys.stderr = open(snakemake.log[0], "w")  # noqa: SIM115
logging.basicConfig(stream=sys.stderr, level=logging.INFO)

from pathlib import Path  # noqa: E402

from loki_pipeline.evaluate.general import TASKS, evaluate_general  # noqa: E402

general = snakemake.params.general
evaluate_general(
    snakemake.input.model,
    snakemake.output.summary,
    model=snakemake.wildcards.model,
    run=snakemake.wildcards.run,
    tasks=general.get("tasks", TASKS),
    source=general.get("source", "local"),
    data_dir=general.get("data_dir", "data/lm_eval"),
    limit=general.get("limit"),
    batch_size=general.get("batch_size", 8),
    device=snakemake.params.device,
    dtype=general.get("dtype", "auto"),
    max_gen_toks=general.get("max_gen_toks"),
    num_fewshot=general.get("num_fewshot"),
    apply_chat_template=general.get("apply_chat_template", False),
    allow_code_execution=general.get("allow_code_execution", False),
    code_timeout=general.get("code_timeout", 10),
    metrics=general.get("metrics") or None,
    lm_eval_dir=Path(snakemake.output.lm_eval).parent,
    threads=snakemake.threads,
)
