"""``loki kva``: Knowledge Vector Attribution of one shard of a prompt set (``kva.dataset``)."""

from __future__ import annotations

import argparse

HELP = "attribute prompts with KVA (the LoKI paper's Analysing stage) into a resumable HDF5 shard"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """A settings flag left out (None) takes the config schema's default (``KVASettings``)."""
    from loki_pipeline.cli.options import add_device, add_renamed, add_setting

    add_renamed(
        parser, "--model", "--model-dir", required=True, help="Hugging Face checkpoint directory"
    )
    parser.add_argument(
        "--dataset",
        dest="source",
        metavar="FILE",
        required=True,
        help="the prompts: a .jsonl/.json/.parquet file or hf:<repo> (formats mmlu, prompts), or "
        "an lm-eval task name, task .yaml or local:<task> (format lm_eval)",
    )
    add_setting(
        parser, "--dataset-format", "kva.dataset.format", "what --dataset holds", dest="format"
    )
    add_setting(parser, "--split", "kva.dataset.split", "hub split")
    add_setting(
        parser, "--max-per-subject", "kva.dataset.max_per_subject",
        "at most this many items per subject", type=int,
    )  # fmt: skip
    parser.add_argument("--out", required=True, help="output HDF5 file (e.g. shards/0.h5)")
    parser.add_argument("--shard", type=int, default=0, help="this shard's index (default: 0)")
    add_setting(parser, "--num-shards", "kva.shards", "number of shards", type=int)
    add_setting(parser, "--steps", "kva.steps", "integration steps m", type=int)
    add_setting(parser, "--method", "kva.method", "backend")
    add_setting(parser, "--quadrature", "kva.quadrature", "quadrature rule")
    add_setting(parser, "--dtype", "kva.dtype", "model dtype")
    add_device(parser)
    add_setting(parser, "--threads", "kva.threads", "CPU threads", type=int)
    add_setting(
        parser, "--batch-prompts", "kva.batch_prompts",
        "prompts per pass of the exact backend (8 or more on a GPU)", type=int,
    )  # fmt: skip
    parser.add_argument(
        "--prompt-format", choices=["chat", "plain"], default=None,
        help="'chat': a chat user turn (the paper's); 'plain': the text as it is, for a model "
        "without a chat template (default: chat)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from loki_pipeline.kva.runner import run_kva_shard
    from loki_pipeline.kva.settings import KVASettings

    settings = KVASettings.from_cli(args)
    print(run_kva_shard(args.model, args.out, settings, shard=args.shard))
    return 0
