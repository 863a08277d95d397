"""``loki kva-gather``: merge finished KVA shards into one file, samples in dataset order."""

from __future__ import annotations

import argparse

HELP = "merge KVA shards (all of 0..S-1, same settings) into one HDF5 file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shards", nargs="+", help="shard files written by `loki kva`")
    parser.add_argument("--out", required=True, help="merged output, e.g. results/kva/M/kva.h5")


def run(args: argparse.Namespace) -> int:
    from loki_pipeline.kva.storage import gather_shards

    print(gather_shards(args.shards, args.out))
    return 0
