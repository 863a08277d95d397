"""``loki suppress``: zero the selected knowledge vectors and save a plain checkpoint (Table 5)."""

from __future__ import annotations

import argparse

HELP = "Suppression ablation: zero the selected down_proj rows and save a plain checkpoint."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from loki_pipeline.cli.options import add_checkpoint_output

    parser.add_argument("--model", required=True, help="base model checkpoint directory")
    parser.add_argument("--selection", required=True, help="selection JSON of the nodes to zero")
    add_checkpoint_output(parser)


def run(args: argparse.Namespace) -> int:
    from loki_pipeline.implant.suppress import suppress_checkpoint

    n = suppress_checkpoint(args.model, args.selection, args.out, dtype=args.dtype)
    print(f"zeroed {n} knowledge vectors; checkpoint written to {args.out}")
    return 0
