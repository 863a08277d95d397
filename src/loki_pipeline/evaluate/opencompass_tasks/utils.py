"""lm-eval ``!function`` targets of the OpenCompass-protocol tasks (loaded by file path)."""

from loki_pipeline.evaluate.opencompass import (  # noqa: F401
    filter_first_option_ab,
    filter_first_option_abcd,
    filter_gsm8k,
    filter_humaneval,
    gsm8k_doc_to_target,
    gsm8k_doc_to_text,
    gsm8k_fewshot_samples,
    gsm8k_score,
    hellaswag_doc_to_text,
    hellaswag_score,
    humaneval_doc_to_text,
    humaneval_score,
    ifeval_agg_inst_level_acc,
    ifeval_score,
    triviaqa_doc_to_text,
    triviaqa_score,
    winogrande_doc_to_text,
    winogrande_score,
)
