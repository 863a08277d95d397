"""``loki select``: make a selection from a kva.h5, or check/convert an existing selection file."""

from __future__ import annotations

import argparse

HELP = "select trainable nodes from a kva.h5, or validate a selection file against a model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from loki_pipeline.cli.options import add_renamed
    from loki_pipeline.settings import help_default

    parser.add_argument("--kva", help="kva.h5 to select from (required unless --check)")
    parser.add_argument(
        "--q",
        type=float,
        help="percent of all nodes to select, in (0, 100) (required unless --check)",
    )
    parser.add_argument(
        "--strategy",
        default="layer_balanced_low",
        help="layer_balanced_low (LoKI, default), layer_balanced_high, global_low, global_high",
    )
    parser.add_argument(
        "--chunk-size", type=int, help=help_default("prompts read at a time", "select.chunk_size")
    )
    parser.add_argument(
        "--tie-break",
        choices=["lower_index", "upstream"],
        help=help_default(
            "global strategies' ties: this pipeline's rule, or upstream LoKI's", "select.tie_break"
        ),
    )
    parser.add_argument(
        "--check",
        metavar="SELECTION",
        help="validate this selection file (pipeline JSON or upstream list of lists) instead "
        "(default: none, select from --kva)",
    )
    parser.add_argument(
        "--model",
        help="with --check: model directory (config.json) whose layer count and width to check "
        "(default: none, the shape is not checked)",
    )
    add_renamed(
        parser, "--out", "--output", "-o",
        help="selection JSON to write (with --check: convert to the contract; default: none, "
        "only check; required otherwise)",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from loki_pipeline.errors import LokiInputError
    from loki_pipeline.select.naming import check_q, check_strategy
    from loki_pipeline.select.selection_file import (
        check_fits_checkpoint,
        checkpoint_shape,
        read_selection_file,
        save_selection,
    )
    from loki_pipeline.select.settings import SelectSettings
    from loki_pipeline.select.strategies import select_to_file

    if args.check:
        # The same reader and fit check as train and suppress: what passes here passes there.
        selection = read_selection_file(args.check)
        width = selection.nodes_per_layer
        if args.model:
            check_fits_checkpoint(selection, args.model)
            width = checkpoint_shape(args.model)[1]
        positions = selection.positions
        sizes = [len(p) for p in positions] or [0]
        print(
            f"{args.check}: valid; {len(positions)} layers, {sum(sizes)} nodes "
            f"({min(sizes)}-{max(sizes)} per layer)"
            + (f", fits {args.model}" if args.model else "")
        )
        if args.out:
            if width is None:
                raise LokiInputError("--out from an upstream file needs --model (the width)")
            save_selection(
                args.out, positions, model=selection.model or args.model or "",
                strategy=selection.strategy or args.strategy,
                q=float(selection.q) if selection.q is not None else check_q(args.q or 0),
                num_layers=len(positions), nodes_per_layer=width,
            )  # fmt: skip
            print(f"wrote {args.out}")
        return 0
    if not (args.kva and args.q is not None and args.out):
        raise LokiInputError("give --kva, --q and --out (or --check SELECTION)")
    check_strategy(args.strategy)
    check_q(args.q)
    settings = SelectSettings.from_cli(args)
    positions = select_to_file(
        args.kva, args.q, args.strategy, args.out, chunk_size=settings.chunk_size,
        tie_break=settings.tie_break,
    )  # fmt: skip
    print(f"wrote {args.out}: {sum(map(len, positions))} nodes over {len(positions)} layers")
    return 0
