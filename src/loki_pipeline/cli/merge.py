"""``loki merge``: fold an adapter (LoKI, LoKI* or PEFT) into a plain Hugging Face checkpoint."""

from __future__ import annotations

import argparse

HELP = "Merge a trained adapter into its base model and save a plain checkpoint."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from loki_pipeline.cli.options import add_checkpoint_output

    parser.add_argument("--model", required=True, help="base model checkpoint directory")
    parser.add_argument("--adapter", required=True, help="adapter directory (LoKI or PEFT)")
    add_checkpoint_output(parser)


def run(args: argparse.Namespace) -> int:
    from loki_pipeline.train.merge import merge_adapter

    merge_adapter(args.model, args.adapter, args.out, dtype=args.dtype)
    print(f"merged checkpoint written to {args.out}")
    return 0
