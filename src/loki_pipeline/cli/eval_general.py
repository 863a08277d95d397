"""``loki eval-general``: a checkpoint's general-ability scores through lm-eval."""

from __future__ import annotations

import argparse
from typing import Any

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
    from loki_pipeline.cli.options import add_device, add_setting

    def setting(flag: str, text: str, **kwargs: Any) -> None:
        add_setting(parser, flag, f"evaluate.general.{flag[2:].replace('-', '_')}", text, **kwargs)

    parser.add_argument("--model", required=True, help="Hugging Face checkpoint directory")
    parser.add_argument("--out", required=True, help="summary JSON to write (general.json)")
    parser.add_argument(
        "--lm-eval-dir", help="where lm-eval's files go (default: OUT's dir/lm_eval)"
    )
    parser.add_argument("--name", help="model name recorded in the summary (default: dir name)")
    parser.add_argument("--run", help="run name recorded in the summary, e.g. base (default: none)")
    setting("--tasks", "comma-separated", type=_tasks)
    setting(
        "--protocol",
        "lm-eval: lm-eval's official scoring; opencompass: OpenCompass's generative chat "
        "configs, the paper's (lettered options, answer extraction, chat template)",
    )
    setting("--source", "local: project items under --data-dir; hub: lm-eval's official datasets")
    parser.add_argument(
        "--data-dir", help="local items (default: the checkout's data/lm_eval, the schema's)"
    )
    setting("--limit", "at most this many items per task; none: all", type=int)
    setting("--batch-size", "batch size", type=int)
    add_device(parser)
    setting("--dtype", "model dtype; auto is the checkpoint's")
    parser.add_argument(
        "--max-gen-toks", type=int, help="cap on new tokens per answer (default: each task's own)"
    )
    parser.add_argument(
        "--num-fewshot",
        type=int,
        help="few-shot examples for every task (default: each task's own)",
    )
    setting(
        "--apply-chat-template",
        "format each prompt with the model's chat template",
        action="store_const",
        const=True,
    )
    setting(
        "--allow-code-execution",
        "needed for humaneval: runs model-written code in 'python -I' subprocesses",
        action="store_const",
        const=True,
    )
    setting("--code-timeout", "seconds per program", type=float)
    parser.add_argument(
        "--metric",
        dest="metrics",
        action=_Metric,
        metavar="TASK=METRIC,FILTER",
        help="score a task by another lm-eval result key (repeatable; default: the protocol's "
        "key of each task)",
    )
    setting("--threads", "CPU threads", type=int)


def run(args: argparse.Namespace) -> int:
    import json

    from loki_pipeline.data.lm_eval_items import default_data_dir
    from loki_pipeline.evaluate.general import evaluate_general
    from loki_pipeline.evaluate.settings import GeneralEvalSettings

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
