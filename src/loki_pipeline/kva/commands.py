"""``loki kva``: Knowledge Vector Attribution of one shard of an MMLU-schema data set."""

from __future__ import annotations

import argparse

HELP = "attribute prompts with KVA (the LoKI paper's Analysing stage) into a resumable HDF5 shard"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", required=True, help="Hugging Face checkpoint directory")
    parser.add_argument(
        "--dataset", required=True, help="MMLU-schema .jsonl/.json/.parquet file or hf:<repo>"
    )
    parser.add_argument("--split", default="test", help="hub split (default: test)")
    parser.add_argument(
        "--max-per-subject", type=int, default=None, help="at most this many items per subject"
    )
    parser.add_argument("--out", required=True, help="output HDF5 file (e.g. shards/0.h5)")
    parser.add_argument("--shard", type=int, default=0, help="this shard's index (default 0)")
    parser.add_argument("--num-shards", type=int, default=1, help="number of shards (default 1)")
    parser.add_argument("--steps", type=int, default=7, help="integration steps m (paper: 7)")
    parser.add_argument(
        "--method",
        default="exact",
        choices=("exact", "reference", "captum"),
        help="backend (default exact)",
    )
    parser.add_argument(
        "--quadrature",
        default="left",
        choices=("left", "right", "midpoint", "trapezoid", "gauss_legendre"),
        help="quadrature rule (default left, the paper's)",
    )
    parser.add_argument(
        "--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="model dtype"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument(
        "--batch-prompts",
        type=int,
        default=1,
        help="prompts per forward/backward of the exact backend (default 1; 8 or more on a GPU)",
    )


def run(args: argparse.Namespace) -> int:
    from loki_pipeline.kva.runner import run_kva_shard

    out = run_kva_shard(
        model_dir=args.model_dir,
        dataset={
            "source": args.dataset,
            "split": args.split,
            "max_per_subject": args.max_per_subject,
        },
        out_path=args.out,
        shard=args.shard,
        num_shards=args.num_shards,
        steps=args.steps,
        method=args.method,
        quadrature=args.quadrature,
        dtype=args.dtype,
        device=args.device,
        threads=args.threads,
        batch_prompts=args.batch_prompts,
    )
    print(out)
    return 0
