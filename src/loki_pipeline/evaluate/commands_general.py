"""``loki eval-general``: a checkpoint's general-ability scores through lm-eval."""

from __future__ import annotations

import argparse

HELP = (
    "Score a checkpoint on TriviaQA, GSM8K, HellaSwag, WinoGrande, HumanEval and IFEval with "
    "lm-eval; write a summary JSON and lm-eval's own results and samples beside it."
)


def _tasks(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


class _Metric(argparse.Action):
    """``--metric TASK=METRIC,FILTER`` (repeatable) into one ``{task: key}`` mapping."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        value: str,
        option_string: str | None = None,
    ) -> None:
        task, sep, key = value.partition("=")
        if not sep or not task or not key:
            parser.error(f"{option_string}: expected TASK=METRIC,FILTER, got {value!r}")
        setattr(namespace, self.dest, {**(getattr(namespace, self.dest) or {}), task: key})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """A settings flag left out (None) takes the schema's default (``GeneralEvalSettings``)."""
    from loki_pipeline.cli_options import add_device
    from loki_pipeline.settings import help_default as default

    key = "evaluate.general."
    parser.add_argument("--model", required=True, help="Hugging Face checkpoint directory")
    parser.add_argument("--out", required=True, help="summary JSON to write (general.json)")
    parser.add_argument(
        "--lm-eval-dir", help="where lm-eval's files go (default: OUT's dir/lm_eval)"
    )
    parser.add_argument("--name", help="model name recorded in the summary (default: dir name)")
    parser.add_argument("--run", help="run name recorded in the summary (e.g. base)")
    parser.add_argument("--tasks", type=_tasks, help=default("comma-separated", key + "tasks"))
    parser.add_argument(
        "--source",
        choices=["local", "hub"],
        help=default(
            "local: project items under --data-dir; hub: lm-eval's official datasets",
            key + "source",
        ),
    )
    parser.add_argument(
        "--data-dir", help="local items (default: the checkout's data/lm_eval, the schema's)"
    )
    parser.add_argument("--limit", type=int, help="at most this many items per task")
    parser.add_argument("--batch-size", type=int, help=default("batch size", key + "batch_size"))
    add_device(parser)
    parser.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        help=default("model dtype", key + "dtype"),
    )
    parser.add_argument(
        "--max-gen-toks", type=int, help="cap on new tokens per answer (default: each task's own)"
    )
    parser.add_argument(
        "--num-fewshot",
        type=int,
        help="few-shot examples for every task (default: each task's own)",
    )
    parser.add_argument("--apply-chat-template", action="store_true", default=None)
    parser.add_argument(
        "--allow-code-execution",
        action="store_true",
        default=None,
        help="needed for humaneval: runs model-written code in 'python -I' subprocesses",
    )
    parser.add_argument(
        "--code-timeout",
        type=float,
        help=default("seconds per program", key + "code_timeout"),
    )
    parser.add_argument(
        "--metric",
        dest="metrics",
        action=_Metric,
        metavar="TASK=METRIC,FILTER",
        help="score a task by another lm-eval result key (repeatable)",
    )
    parser.add_argument("--threads", type=int, help=default("CPU threads", key + "threads"))


def run(args: argparse.Namespace) -> int:
    import json

    from loki_pipeline.evaluate.general import (
        GeneralEvalSettings,
        default_data_dir,
        evaluate_general,
    )

    settings = GeneralEvalSettings.from_cli(args, data_dir=args.data_dir or default_data_dir())
    summary = evaluate_general(
        args.model,
        args.out,
        settings,
        model=args.name,
        run=args.run,
        lm_eval_dir=args.lm_eval_dir,
    )
    print(json.dumps(summary["scores"], indent=2))
    return 0
