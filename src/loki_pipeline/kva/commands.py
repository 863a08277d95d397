"""``loki kva``: Knowledge Vector Attribution of one shard of an MMLU-schema data set."""

from __future__ import annotations

import argparse

HELP = "attribute prompts with KVA (the LoKI paper's Analysing stage) into a resumable HDF5 shard"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """A settings flag left out (None) takes the config schema's default (``KVASettings``)."""
    from loki_pipeline.cli_options import add_device, add_renamed
    from loki_pipeline.settings import help_default as default

    add_renamed(
        parser, "--model", "--model-dir", required=True, help="Hugging Face checkpoint directory"
    )
    parser.add_argument(
        "--dataset",
        dest="source",
        metavar="FILE",
        required=True,
        help="MMLU-schema .jsonl/.json/.parquet file or hf:<repo>",
    )
    parser.add_argument("--split", help=default("hub split", "kva.dataset.split"))
    parser.add_argument(
        "--max-per-subject",
        type=int,
        help=default("at most this many items per subject", "kva.dataset.max_per_subject"),
    )
    parser.add_argument("--out", required=True, help="output HDF5 file (e.g. shards/0.h5)")
    parser.add_argument("--shard", type=int, default=0, help="this shard's index (default: 0)")
    parser.add_argument("--num-shards", type=int, help=default("number of shards", "kva.shards"))
    parser.add_argument("--steps", type=int, help=default("integration steps m", "kva.steps"))
    parser.add_argument(
        "--method", choices=("exact", "reference", "captum"), help=default("backend", "kva.method")
    )
    parser.add_argument(
        "--quadrature",
        choices=("left", "right", "midpoint", "trapezoid", "gauss_legendre"),
        help=default("quadrature rule", "kva.quadrature"),
    )
    parser.add_argument(
        "--dtype", choices=("float32", "bfloat16", "float16"), help=default("dtype", "kva.dtype")
    )
    add_device(parser)
    parser.add_argument("--threads", type=int, help=default("CPU threads", "kva.threads"))
    parser.add_argument(
        "--batch-prompts",
        type=int,
        help=default(
            "prompts per pass of the exact backend (8 or more on a GPU)", "kva.batch_prompts"
        ),
    )


def run(args: argparse.Namespace) -> int:
    from loki_pipeline.kva.runner import KVASettings, run_kva_shard

    settings = KVASettings.from_cli(args)
    print(run_kva_shard(args.model, args.out, settings, shard=args.shard))
    return 0
