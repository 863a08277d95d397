"""``loki select``: make a selection from a kva.h5, or check/convert an existing selection file."""

from __future__ import annotations

import argparse

HELP = "select trainable nodes from a kva.h5, or validate a selection file against a model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kva", help="kva.h5 to select from")
    parser.add_argument("--q", type=float, help="percent of all nodes to select, in (0, 100)")
    parser.add_argument(
        "--strategy",
        default="layer_balanced_low",
        help="layer_balanced_low (LoKI, default), layer_balanced_high, global_low, global_high",
    )
    parser.add_argument("--chunk-size", type=int, default=128, help="prompts read at a time")
    parser.add_argument(
        "--check",
        metavar="SELECTION",
        help="validate this selection file (pipeline JSON or upstream list of lists) instead",
    )
    parser.add_argument(
        "--model",
        help="with --check: model directory (config.json) whose layer count and width to check",
    )
    parser.add_argument(
        "--output", "-o", help="selection JSON to write (with --check: convert to the contract)"
    )


def _model_shape(model_dir: str) -> tuple[int, int]:
    """(layers, d_model) from a checkpoint's config.json; no transformers import needed."""
    import json
    from pathlib import Path

    from loki_pipeline.errors import LokiInputError

    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise LokiInputError(f"{path}: cannot read the model config ({err})") from None
    config = config.get("text_config") or config  # multimodal wrappers nest the LM's config
    try:
        return int(config["num_hidden_layers"]), int(config["hidden_size"])
    except KeyError as err:
        raise LokiInputError(f"{path}: no {err} (not a decoder-only LM config?)") from None


def run(args: argparse.Namespace) -> int:
    from loki_pipeline.errors import LokiInputError
    from loki_pipeline.select.io import load_selection, read_selection, save_selection
    from loki_pipeline.select.naming import check_q, check_strategy
    from loki_pipeline.select.strategies import select_to_file

    if args.check:
        doc = read_selection(args.check)
        layers = width = None
        if args.model:
            layers, width = _model_shape(args.model)
        positions = load_selection(args.check, num_layers=layers, nodes_per_layer=width)
        sizes = [len(p) for p in positions]
        print(
            f"{args.check}: valid; {len(positions)} layers, {sum(sizes)} nodes "
            f"({min(sizes)}-{max(sizes)} per layer)"
            + (f", fits {args.model}" if args.model else "")
        )
        if args.output:
            if width is None and "nodes_per_layer" not in doc:
                raise LokiInputError("--output from an upstream file needs --model (the width)")
            save_selection(
                args.output, positions, model=str(doc.get("model", args.model or "")),
                strategy=str(doc.get("strategy", args.strategy)),
                q=float(doc["q"]) if "q" in doc else float(check_q(args.q or 0)),
                num_layers=len(positions),
                nodes_per_layer=int(width or doc["nodes_per_layer"]),
            )  # fmt: skip
            print(f"wrote {args.output}")
        return 0
    if not (args.kva and args.q is not None and args.output):
        raise LokiInputError("give --kva, --q and --output (or --check SELECTION)")
    check_strategy(args.strategy)
    check_q(args.q)
    positions = select_to_file(
        args.kva, args.q, args.strategy, args.output, chunk_size=args.chunk_size
    )
    print(f"wrote {args.output}: {sum(map(len, positions))} nodes over {len(positions)} layers")
    return 0
