"""``loki plan``: the memory plan of a config, one row per KVA, training and evaluation job."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from loki_pipeline.errors import LokiInputError

HELP = (
    "Estimate the peak memory of every KVA, training and evaluation job of a config (weights, "
    "gradients, optimizer state, activations, logits, KV cache), per GPU, and whether it fits "
    "one GPU of plan.gpu_memory_gb; also the host memory (mem_mb) each job asks Snakemake for."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--configfile", required=True, help="pipeline config (as snakemake --configfile)"
    )
    parser.add_argument("--format", choices=("table", "json"), default="table")


def load_config(path: str | Path) -> dict:
    """Read a pipeline config, resolving ``extends``, and validate it as the Snakefile does
    (the file is read as the base of an empty config, by the one reader of config files)."""
    from loki_pipeline.schemas import resolve_extends, validate_config

    if not Path(path).is_file():
        raise LokiInputError(f"config file {path} does not exist")
    return validate_config(resolve_extends({"extends": str(path)}))


def table(rows: list[dict]) -> str:
    """The plan as a Markdown table: per-GPU parts in GB, GPUs, fits, host mem_mb."""
    head = ("job", "model", "what", "weights", "grads+optim", "activations", "logits+KV",
            "per device", "GPUs", "fits", "mem_mb")  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        p = r["parts_gb"]
        cells = (
            r["job"] + (f" (x{r['count']})" if r["count"] > 1 else ""),
            r["model"],
            r["what"],
            f"{p.get('weights', 0):.1f}",
            f"{p.get('gradients', 0) + p.get('optimizer', 0):.1f}",
            f"{p.get('activations', 0):.1f}",
            f"{p.get('logits', 0) + p.get('kv_cache', 0):.1f}",
            f"{r['device_gb']:.1f}",
            str(r["gpus"]),
            r["fits"],
            str(r["mem_mb"]),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from loki_pipeline.plan.jobs import plan_rows

    config = load_config(args.configfile)
    rows = plan_rows(config)
    if args.format == "json":
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    print(table(rows))
    limit = rows[0]["gpu_memory_gb"] if rows else math.nan
    over = [r for r in rows if r["fits"] == "no"]
    print(f"\n{len(rows)} rows; per device: GB (10^9 bytes) on each GPU (device: cuda) or in "
          f"RAM (cpu); fits: at most {limit:g} GB (plan.gpu_memory_gb); mem_mb: the host RAM "
          f"Snakemake asks for (MiB).")  # fmt: skip
    if over:
        print(f"{len(over)} job(s) do not fit:")
        for r in over:
            print(f"- {r['job']} ({r['device_gb']:.1f} GB): {r['fit']}")
    return 0
