"""``loki eval-task``: task performance of one model (BFCL for ToolACE, reranking for the reranker)."""

from __future__ import annotations

import argparse

HELP = "Evaluate a model on its task (BFCL AST accuracy or BEIR-style reranking) -> task.json."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="Hugging Face checkpoint directory")
    parser.add_argument("--task", required=True, choices=["toolace", "reranker"])
    parser.add_argument("--out", required=True, help="task.json to write")
    parser.add_argument(
        "--eval-config",
        help="YAML/JSON file holding the task's eval object (tasks.<task>.eval: "
        "{bfcl: {...}} or {beir: {...}}); defaults otherwise",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cache-dir", default="resources/cache", help="where wheels are cached")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import yaml

    from loki_pipeline.errors import LokiInputError
    from loki_pipeline.evaluate.task import run_task_eval

    eval_config = None
    if args.eval_config:
        path = Path(args.eval_config)
        if not path.is_file():
            raise LokiInputError(f"--eval-config {path}: no such file")
        eval_config = yaml.safe_load(path.read_text()) or {}
        if not isinstance(eval_config, dict):
            raise LokiInputError(f"--eval-config {path}: expected a mapping")
    if args.batch_size < 1 or args.threads < 1:
        raise LokiInputError("--batch-size and --threads must be at least 1")
    summary = run_task_eval(
        args.model,
        args.task,
        args.out,
        eval_config=eval_config,
        run={"batch_size": args.batch_size, "threads": args.threads, "dtype": args.dtype},
        device=args.device,
        cache_dir=args.cache_dir,
    )
    print({k: round(v, 4) for k, v in summary["metrics"].items()})
    return 0
