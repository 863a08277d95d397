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
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "h100", "h200", "a100", "rtx4090"),
        default="auto",
        help="the device the time plan estimates for (auto: plan.device; unset, h100 for "
        "device cuda, cpu otherwise)",
    )
    parser.add_argument(
        "--data",
        action="store_true",
        help="also tokenize each training job's data (where it and the prepared model are "
        "here) and report the largest micro-batch its seeded order forms, beside the worst case",
    )


#: The embedded default config as the workflow, run in the working directory, names it: its
#: results go to ``results/``, any other config file's to ``results/<name>/``.
DEFAULT_CONFIG = Path("config/config.yaml")


def load_config(path: str | Path) -> dict:
    """Read a pipeline config, resolving ``extends``, and validate it as the Snakefile does
    (the file is read as the base of an empty config, by the one reader of config files), its
    prompt files included, so ``loki plan`` refuses what the workflow refuses. Its own
    ``results_dir`` is kept, as in the workflow (a base's is never inherited)."""
    from loki_pipeline.config import check_prompt_files, resolve_extends, validate_config
    from loki_pipeline.safe_yaml import load_yaml

    if not Path(path).is_file():
        raise LokiInputError(f"config file {path} does not exist")
    config = resolve_extends({"extends": str(path)})
    config["results_dir"] = load_yaml(path).get("results_dir")  # a mapping: read just above
    config = validate_config(config)
    check_prompt_files(config)
    return config


def results_folder(config: dict, path: str | Path) -> str:
    """The folder the workflow writes ``config`` (read from ``path``) to, by the function
    ``workflow/rules/common.smk`` calls: the jobs' labels are paths inside it."""
    from loki_pipeline.results_dir import results_dir

    return results_dir(config, [path], DEFAULT_CONFIG)


def table(rows: list[dict]) -> str:
    """The plan as a Markdown table: per-GPU parts in GB, GPUs, fits, host mem_mb."""
    head = ("job", "model", "what", "weights", "grads+optim", "activations", "logits+KV",
            "per device", "GPUs", "fits", "mem_mb", "TFLOP", "est. hours")  # fmt: skip
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
            f"{r.get('flops', 0) / 1e12:,.0f}",
            f"{r.get('est_seconds', 0) / 3600:.2f}" + (" each" if r["count"] > 1 else ""),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gpu_hours(config: dict, rows: list[dict]) -> dict:
    """``total_gpu_hours`` (each job's hours x its count x its GPUs, at least 1) and the same
    per model and what its jobs feed (``gpu_hours_by``: the tables of the model's tasks)."""
    from loki_pipeline import runs

    by: dict[str, float] = {}
    total = 0.0
    for r in rows:
        hours = r.get("est_seconds", 0.0) / 3600 * r["count"] * max(1, r["gpus"])
        total += hours
        tasks = "+".join(runs.table_tasks(config, r["model"])) or "ablations"
        key = f"{r['model']} ({tasks})"
        by[key] = by.get(key, 0.0) + hours
    return {"total_gpu_hours": round(total, 3),
            "gpu_hours_by": {k: round(v, 3) for k, v in by.items()}}  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from loki_pipeline.plan.rows import plan_rows
    from loki_pipeline.plan.time_jobs import plan_device

    config = load_config(args.configfile)
    device = plan_device(config, args.device)
    results = results_folder(config, args.configfile)
    rows = plan_rows(config, device, data=args.data, results=results)
    totals = gpu_hours(config, rows)
    if args.format == "json":
        json.dump({"device": device, "rows": rows, **totals}, sys.stdout, indent=1)
        print()
        return 0
    print(table(rows))
    limit = rows[0]["gpu_memory_gb"] if rows else math.nan
    over = [r for r in rows if r["fits"] == "no"]
    print(f"\n{len(rows)} rows; per device: GB (10^9 bytes) on each GPU (device: cuda) or in "
          f"RAM (cpu); fits: at most {limit:g} GB (plan.gpu_memory_gb); mem_mb: the host RAM "
          f"Snakemake asks for (MiB).")  # fmt: skip
    print(f"Time on {device}: {totals['total_gpu_hours']:.2f} device-hours in all (each job's "
          f"hours x its count x its GPUs), by what the jobs feed: " + ", ".join(
              f"{k} {v:.2f}" for k, v in totals["gpu_hours_by"].items()))  # fmt: skip
    for r in rows:
        b = r.get("largest_batch")
        if b:
            print(f"- {r['job']}: the data's largest micro-batch (of {b['micro_batches']}) is "
                  f"{b['sequences']} x {b['padded_len']} tokens, {b['supervised_tokens']} "
                  f"supervised: {b['device_gb']:.1f} GB per device, beside the worst case's "
                  f"{r['device_gb']:.1f} GB ({b['share_of_worst_case']:.0%} of its tokens)")  # fmt: skip
    if over:
        print(f"{len(over)} job(s) do not fit:")
        for r in over:
            print(f"- {r['job']} ({r['device_gb']:.1f} GB): {r['fit']}")
    return 0
