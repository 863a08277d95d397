"""``loki eval-task``: task performance of one model (BFCL for ToolACE, reranking for the
reranker, held-out rows and lm-eval tasks for a task of the user's)."""

from __future__ import annotations

import argparse

HELP = (
    "Evaluate a model on its task (BFCL AST accuracy, BEIR-style reranking, or a held-out "
    "split) -> task.json."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """A settings flag left out (None) takes the schema's default (``TaskEvalSettings``)."""
    from loki_pipeline.cli.options import add_device
    from loki_pipeline.settings import help_default as default
    from loki_pipeline.settings import schema_node
    from loki_pipeline.tasks.driver import TASKS
    from loki_pipeline.tasks.settings import TaskEvalSettings

    key = "evaluate.task."
    parser.add_argument("--model", required=True, help="Hugging Face checkpoint directory")
    parser.add_argument(
        "--task", required=True, action="append",
        help=f"task to evaluate (repeat for several; the model is loaded once): "
        f"{', '.join(TASKS)}, or a task of your own, whose data and held-out split --eval-config "
        "gives (a pipeline config, or {task: {train: {...}, eval: {...}}})",
    )  # fmt: skip
    parser.add_argument("--out", required=True, help="task.json to write")
    parser.add_argument(
        "--eval-config",
        help="a pipeline config (its tasks.<task>.eval objects are used) or a YAML/JSON mapping "
        "task -> eval object ({toolace: {bfcl: {...}}, reranker: {beir: {...}}}); "
        "the schema's defaults otherwise",
    )
    parser.add_argument(
        "--batch-size", type=int, help=default("prompts per batch", key + "batch_size")
    )
    parser.add_argument("--threads", type=int, help=default("CPU threads", key + "threads"))
    parser.add_argument(
        "--dtype", choices=schema_node(key + "dtype")["enum"], help=default("dtype", key + "dtype")
    )
    add_device(parser)
    cache = TaskEvalSettings.cache_dir
    parser.add_argument("--cache-dir", help=f"where wheels are cached (default: {cache})")


def run(args: argparse.Namespace) -> int:
    from loki_pipeline.errors import LokiInputError
    from loki_pipeline.tasks.driver import run_task_eval
    from loki_pipeline.tasks.settings import TaskEvalSettings

    settings = TaskEvalSettings.from_cli(args)
    if settings.batch_size < 1 or settings.threads < 1:
        raise LokiInputError("--batch-size and --threads must be at least 1")
    out = run_task_eval(args.model, args.out, settings)
    for task, summary in out["tasks"].items():
        print(task, {k: round(v, 4) for k, v in summary["metrics"].items()})
    return 0
