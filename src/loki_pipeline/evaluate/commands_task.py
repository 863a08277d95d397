"""``loki eval-task``: task performance of one model (BFCL for ToolACE, reranking for the reranker)."""

from __future__ import annotations

import argparse

HELP = "Evaluate a model on its task (BFCL AST accuracy or BEIR-style reranking) -> task.json."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="Hugging Face checkpoint directory")
    parser.add_argument(
        "--task", required=True, action="append", choices=["toolace", "reranker"],
        help="task to evaluate (repeat for several; the model is loaded once)",
    )  # fmt: skip
    parser.add_argument("--out", required=True, help="task.json to write")
    parser.add_argument(
        "--eval-config",
        help="a pipeline config (its tasks.<task>.eval objects are used) or a YAML/JSON mapping "
        "task -> eval object ({toolace: {bfcl: {...}}, reranker: {beir: {...}}}); "
        "defaults otherwise",
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

    eval_configs = {}
    if args.eval_config:
        path = Path(args.eval_config)
        if not path.is_file():
            raise LokiInputError(f"--eval-config {path}: no such file")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise LokiInputError(f"--eval-config {path}: expected a mapping")
        if "tasks" in loaded:  # a whole pipeline config
            loaded = {t: (c or {}).get("eval", {}) for t, c in (loaded["tasks"] or {}).items()}
        eval_configs = loaded
    if args.batch_size < 1 or args.threads < 1:
        raise LokiInputError("--batch-size and --threads must be at least 1")
    out = run_task_eval(
        args.model,
        list(dict.fromkeys(args.task)),
        args.out,
        eval_configs=eval_configs,
        run={"batch_size": args.batch_size, "threads": args.threads, "dtype": args.dtype},
        device=args.device,
        cache_dir=args.cache_dir,
    )
    for task, summary in out["tasks"].items():
        print(task, {k: round(v, 4) for k, v in summary["metrics"].items()})
    return 0
